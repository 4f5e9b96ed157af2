"""The agent's settings: a small TOML file (`--config`, e.g.
/etc/edgeloop-agent/agent.toml), each key overridable by an environment variable
`EDGELOOP_AGENT_<KEY>` (a systemd unit's `Environment=`). See agent.example.toml.

The enrollment code is read from the environment only (`EDGELOOP_AGENT_ENROLL_CODE`,
or `edgeloop-agent enroll --code`): it is used once and must not sit in a file.
The polling defaults are the fleet's (`fleet:` in the stack's params.yaml); a test
holds them equal."""

from __future__ import annotations

import os
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from edge_fleet.device.micro import Board

ENV_PREFIX = "EDGELOOP_AGENT_"
FRONT_ENDS = ("", "mfcc")  # rows as they are, or a keyword spotter's clips


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the key and the file."""


@dataclass(frozen=True)
class AgentConfig:
    server: str  # the fleet server's URL
    device_id: str
    profile: str  # the device profile the fleet ships files for (mcu, gateway...)
    cohort: str
    home: Path  # state.json, TUF metadata, the two model slots
    root: Path  # the fleet's root.json, given with the device (trust starts here)
    samples: Path  # rows the smoke test answers: .npy, or .csv of numbers
    inference_host: str = "127.0.0.1"
    inference_port: int = 8790  # local inference for the device's application
    replay_samples: bool = False  # no application: report telemetry on the samples
    memory_mb: int = 0  # address-space limit for the agent (0: none)
    arena_kb: int = 0  # a board's TFLM tensor arena (0: not a board; room to measure)
    flash_kb: int = 0  # a board's flash for the model file (0: not checked)
    # "mfcc": a keyword spotter's device (its application posts clips to /listen);
    # reports summarise each clip's MFCCs in 12 numbers. "": rows as they are.
    front_end: str = ""

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ConfigError(
                f"front_end: expected one of {list(FRONT_ENDS)}, got {self.front_end!r}"
            )

    @property
    def board(self) -> Board | None:
        if not self.arena_kb:
            return None
        return Board(self.arena_kb * 1024, self.flash_kb * 1024 or None)

    poll_s: float = 2.0
    poll_jitter: float = 0.5
    max_backoff_s: float = 60.0
    max_metadata_age_s: float = 300.0
    telemetry_batch: int = 64
    sample_cohorts: tuple[str, ...] = ()  # cohorts that send a few raw rows too

    @classmethod
    def load(
        cls, path: Path | None = None, env: dict[str, str] | None = None
    ) -> AgentConfig:
        """The file's keys, then the environment's; every required key must be in
        one of them."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        where: dict[str, str] = {}
        if path is not None:
            try:
                raw = tomllib.loads(path.read_text())
            except FileNotFoundError:
                raise ConfigError(f"--config {path}: no such file") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not TOML ({exc})") from None
            where = dict.fromkeys(raw, str(path))
        known = {f.name: f for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise ConfigError(
                    f"{path}: unknown key {key!r} (expected one of: {', '.join(known)})"
                )
        for name in known:
            variable = ENV_PREFIX + name.upper()
            if variable in env:
                raw[name], where[name] = env[variable], variable
        values = {}
        for name, spec in known.items():
            if name not in raw:
                if spec.default is MISSING:  # no default: required
                    raise ConfigError(
                        f"{name}: required (in {path or 'the --config file'} or "
                        f"{ENV_PREFIX + name.upper()})"
                    )
                continue
            values[name] = _coerce(name, spec.type, raw[name], where[name])
        return cls(**values)


def _coerce(name: str, kind: str, value: Any, where: str) -> Any:
    """A file's TOML value or an environment variable's text as the field's type;
    a value that is not one names the key, where it came from and what was
    expected."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name} ({where}): expected {expected}, got {value!r}")

    text = value.strip() if isinstance(value, str) else value
    if kind == "bool":
        if isinstance(text, bool):
            return text
        if isinstance(text, str) and text.lower() in (
            "1",
            "true",
            "yes",
            "0",
            "false",
            "no",
        ):
            return text.lower() in ("1", "true", "yes")
        raise bad("true or false")
    if kind in ("int", "float"):
        if isinstance(text, bool):
            raise bad(f"a number ({kind})")
        try:
            number = int(text) if kind == "int" else float(text)
        except (TypeError, ValueError):
            raise bad(f"a number ({kind})") from None
        if number < 0:
            raise bad("a number of at least 0")
        return number
    if kind == "tuple[str, ...]":
        items = text.split(",") if isinstance(text, str) else text
        if not isinstance(items, list | tuple) or not all(
            isinstance(i, str) for i in items
        ):
            raise bad("a list of names")
        return tuple(i.strip() for i in items if i.strip())
    if not isinstance(text, str) or not text:
        raise bad("a non-empty text")
    return Path(text).expanduser() if kind == "Path" else text
