"""`edgeloop-agent` (also `python -m edge_fleet.device`): one device agent as its own
process, logging one line per event for a journal (systemd keeps them).

    edgeloop-agent --config /etc/edgeloop-agent/agent.toml enroll --code CODE
    edgeloop-agent --config /etc/edgeloop-agent/agent.toml run
    edgeloop-agent --config /etc/edgeloop-agent/agent.toml status

Every setting is a key of the file or an `EDGELOOP_AGENT_<KEY>` variable
(config.py); a bad one stops the agent with one line naming it (`--debug`: the
traceback too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from edge_fleet.device.agent import Agent, EnrollmentError, Identity, RuntimeCache
from edge_fleet.device.config import AgentConfig, ConfigError
from edge_fleet.device.local import LocalInputs, LocalServer
from edge_fleet.device.polling import next_delay
from edge_fleet.device.seams import Polling
from edge_fleet.device.slots import active_version, load_state

log = logging.getLogger("edgeloop.device")
ENROLL_CODE = "EDGELOOP_AGENT_ENROLL_CODE"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edgeloop-agent", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, help="the agent's TOML file")
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    enroll = sub.add_parser("enroll", help="enroll once with a one-time code")
    enroll.add_argument("--code", help=f"the code (default: ${ENROLL_CODE})")
    run = sub.add_parser("run", help="check in, update, serve local inference")
    run.add_argument("--steps", type=int, default=0, help="stop after N (0: never)")
    sub.add_parser("status", help="installed version, slots, last check-in")
    return parser.parse_args(code_as_one_word(sys.argv[1:] if argv is None else argv))


def code_as_one_word(argv: list[str]) -> list[str]:
    """`--code -Ab...` as `--code=-Ab...`: a code an older server made may begin
    with "-", which argparse would read as an option."""
    words = list(argv)
    for i, word in enumerate(words[:-1]):
        if word == "--code":
            words[i : i + 2] = [f"--code={words[i + 1]}"]
            break
    return words


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("tuf").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cfg = AgentConfig.load(args.config)
        if args.command == "status":
            _write(status(cfg))
            return
        agent = make_agent(cfg, code=getattr(args, "code", None))
        if args.command == "enroll":
            agent.enroll()
            _write({"device_id": cfg.device_id, "enrolled": True})
            return
        if cfg.memory_mb:  # the device's memory budget, for this process
            limit = cfg.memory_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        LocalServer(agent, cfg.inference_host, cfg.inference_port).start()
        run_forever(agent, cfg, args.steps)
    except (ConfigError, EnrollmentError, OSError) as exc:
        if args.debug:
            raise
        raise SystemExit(f"edgeloop-agent: {exc}") from None


def make_agent(cfg: AgentConfig, code: str | None = None) -> Agent:
    try:
        factory_root = cfg.root.read_bytes()
    except OSError as exc:
        problem = f"root ({cfg.root}): cannot read it ({exc.strerror})"
        raise ConfigError(problem) from None
    stream = LocalInputs(
        load_samples(cfg.samples),
        capacity=cfg.telemetry_batch * 4,
        replay=cfg.replay_samples,
    )
    return Agent(
        cfg.server,
        Identity(cfg.device_id, cfg.profile, cfg.cohort),
        cfg.home,
        factory_root=factory_root,
        enroll_code=code or os.environ.get(ENROLL_CODE) or None,
        cfg=cfg,
        stream=stream,
        http=httpx.Client(timeout=30),
        runtimes=RuntimeCache(cfg.board),
        front_end=cfg.front_end or None,
    )


def load_samples(path: Path) -> np.ndarray:
    """The rows the smoke test answers: a .npy array, or a .csv of numbers (no
    header, no label; an empty field or `nan` is a gap)."""
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            x = np.genfromtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        else:
            raise ConfigError(f"samples ({path}): expected a .npy or .csv file")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"samples ({path}): cannot read it ({exc})") from None
    if x.ndim != 2 or not len(x):
        raise ConfigError(f"samples ({path}): expected rows of numbers, got {x.shape}")
    return x.astype(np.float32)


def status(cfg: AgentConfig) -> dict:
    """The running agent's own account (its local port), else what its home holds."""
    url = f"http://{cfg.inference_host}:{cfg.inference_port}/status"
    try:
        reply = httpx.get(url, timeout=2)
        if reply.status_code == 200:
            return {"running": True} | reply.json()
    except httpx.HTTPError:
        pass
    state = load_state(cfg.home)
    timestamp = cfg.home / "tuf" / "timestamp.json"
    verified = (
        datetime.fromtimestamp(timestamp.stat().st_mtime, UTC).isoformat()
        if timestamp.exists()
        else None
    )
    return {
        "running": False,
        "device_id": cfg.device_id,
        "enrolled": bool(state["token"]),
        "version": active_version(state),
        "active_slot": state["active"],
        "slots": state["slots"],
        "metadata_written_at": verified,
    }


def _write(body: dict) -> None:
    sys.stdout.write(json.dumps(body, indent=2, default=str) + "\n")


def run_forever(agent: Agent, cfg: Polling, steps: int = 0) -> None:
    """Poll (jitter, backoff after failures) for `steps` cycles, or forever."""
    failures, done = 0, 0
    while not steps or done < steps:
        try:
            agent.step()
            failures = 0
        except EnrollmentError:
            raise
        except httpx.HTTPError as exc:
            failures += 1
            log.warning("check-in failed (%s); backing off", exc)
        except Exception as exc:
            failures += 1
            name = type(exc).__name__
            log.warning("poll cycle failed (%s: %s); backing off", name, exc)
            log.debug("traceback", exc_info=True)
        done += 1
        time.sleep(next_delay(agent, cfg, failures))
