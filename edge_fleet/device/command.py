"""`python -m edge_fleet.device`: one device agent as its own process, polling until
stopped (or for `--steps` cycles), logging one line per event for a journal.

    EDGELOOP_FLEET_ENROLL_CODE=<code, first start only> python -m edge_fleet.device \
        --server URL --device-id ID --profile mcu --cohort north --home DIR \
        --root root.json --samples test.parquet
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

import httpx
import pandas as pd

from components.config import FleetConfig, load_params
from edge_fleet.device.agent import Agent, EnrollmentError, Identity, poll_delay
from edge_fleet.device.inputs import RecordedInputs
from stack.settings import get_settings

log = logging.getLogger("edgeloop.device")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="factory root.json")
    parser.add_argument("--samples", type=Path, required=True, help="parquet, label")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=0, help="stop after N (0: never)")
    args = parser.parse_args()
    # One line per event on standard output, for a journal (systemd) to keep.
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("tuf").setLevel(logging.WARNING)
    settings = get_settings()
    params = load_params(args.params)
    profile = params.optimize.profiles.get(args.profile)
    if profile is None:
        parser.error(f"--profile {args.profile!r}: not in optimize.profiles")
    if profile.runtime_memory_mb:  # the device's memory budget, for this process
        limit = profile.runtime_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    frame = pd.read_parquet(args.samples)
    agent = Agent(
        args.server,
        Identity(args.device_id, args.profile, args.cohort),
        args.home,
        factory_root=args.root.read_bytes(),
        enroll_code=settings.fleet_enroll_code.get_secret_value()
        if settings.fleet_enroll_code
        else None,
        cfg=params.fleet,
        stream=RecordedInputs(
            frame.drop(columns=params.data.label_column).to_numpy(), seed=0
        ),
        http=httpx.Client(timeout=30),
    )
    run_forever(agent, params.fleet, args.steps)


def run_forever(agent: Agent, cfg: FleetConfig, steps: int = 0) -> None:
    """Poll (jitter, backoff after failures) for `steps` cycles, or forever."""
    failures, done = 0, 0
    while not steps or done < steps:
        try:
            agent.step()
            failures = 0
        except EnrollmentError as exc:
            raise SystemExit(str(exc)) from None
        except httpx.HTTPError as exc:
            failures += 1
            log.warning("check-in failed (%s); backing off", exc)
        except Exception as exc:
            failures += 1
            log.exception("poll cycle failed (%s); backing off", exc)
        done += 1
        time.sleep(poll_delay(cfg, failures, agent.rng))
