"""Before an uploaded file is stored as a version (or a profile's file): it must
load in the device runtime of each profile it is for, under that profile's budgets
(optimize.profiles: max_model_kb, runtime_memory_mb, threads; a micro profile:
max_flash_kb, and TFLM with exactly max_arena_kb), and answer a row and a
telemetry batch. Each load runs in its own process (`edge_fleet.device.loadcheck`:
an address-space limit holds for a whole process, and a runtime that crashes on a
hostile file takes only that process down)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from components.config import DeviceProfile
from edge_fleet.device.micro import MICRO_SUFFIX
from edge_fleet.device.micro import measure as measure_arena

CHECK_TIMEOUT_S = 120


def unknown_profiles(
    named: list[str], profiles: dict[str, DeviceProfile]
) -> str | None:
    """What to say when an upload names a profile this fleet has no budgets for."""
    unknown = [p for p in named if p not in profiles]
    if not unknown:
        return None
    return (
        f"profile {unknown[0]!r} is not one of this fleet's profiles "
        f"(optimize.profiles: {', '.join(sorted(profiles))})"
    )


def refusal(
    data: bytes,
    filename: str,
    *,
    named: list[str],
    profiles: dict[str, DeviceProfile],
    features: int,
    batch: int,
    classes: int | None,
) -> str | None:
    """None when the file fits and loads for every profile in `named`; else one
    line naming the profile, its budget and what failed."""
    boards = [name for name in named if profiles[name].runtime == "micro"]
    for name in boards:
        if problem := _board_refusal(data, filename, name, profiles[name]):
            return problem
    named = [name for name in named if name not in boards]
    for name in named:
        limit = profiles[name].max_model_kb
        if limit is not None and len(data) > limit * 1024:
            return (
                f"profile {name}: the file is {len(data) / 1024:.1f} KB, over its "
                f"optimize.profiles.{name}.max_model_kb ({limit:g})"
            )
    # Profiles with the same budgets load the file once.
    groups: dict[tuple[int, int], list[str]] = {}
    for name in named:
        p = profiles[name]
        groups.setdefault((p.runtime_memory_mb or 0, p.threads), []).append(name)
    with tempfile.TemporaryDirectory(prefix="edgeloop-upload-") as folder:
        path = Path(folder) / filename  # the suffix picks the runtime, as on devices
        path.write_bytes(data)
        for (memory_mb, threads), names in groups.items():
            problem = _load(
                path,
                features,
                batch=batch,
                memory_mb=memory_mb,
                threads=threads,
                classes=classes,
            )
            if problem is not None:
                budget = f"runtime_memory_mb {memory_mb}" if memory_mb else "no limit"
                return (
                    f"profile {', '.join(names)} ({budget}): the file does not load "
                    f"or answer in its device runtime: {problem}"
                )
    return None


def _board_refusal(
    data: bytes, filename: str, name: str, profile: DeviceProfile
) -> str | None:
    """A micro profile's file: a TFLM file within the board's flash that loads
    and answers in TFLM with exactly the board's arena (its own process)."""
    assert profile.max_flash_kb is not None and profile.max_arena_kb is not None
    if not filename.endswith(MICRO_SUFFIX):
        return (
            f"profile {name} (runtime micro): expected a full-integer TFLM file "
            f"(*{MICRO_SUFFIX}), not {filename}"
        )
    flash = int(profile.max_flash_kb * 1024)
    if len(data) > flash:
        return (
            f"profile {name}: the file is {len(data)} bytes, {len(data) - flash} over "
            f"its optimize.profiles.{name}.max_flash_kb ({profile.max_flash_kb:g})"
        )
    arena = int(profile.max_arena_kb * 1024)
    with tempfile.TemporaryDirectory(prefix="edgeloop-upload-") as folder:
        path = Path(folder) / filename
        path.write_bytes(data)
        report = measure_arena(path, arena, timeout=CHECK_TIMEOUT_S)
    if not report.ok:
        return (
            f"profile {name} (max_arena_kb {profile.max_arena_kb:g}): the file does "
            f"not load or answer in TFLM: {report.error}"
        )
    return None


def _load(
    path: Path,
    features: int,
    *,
    batch: int,
    memory_mb: int,
    threads: int,
    classes: int | None,
) -> str | None:
    command = [
        sys.executable,
        "-m",
        "edge_fleet.device.loadcheck",
        str(path),
        "--features",
        str(features),
        "--rows",
        f"1,{batch}",
        "--memory-mb",
        str(memory_mb),
        "--threads",
        str(threads),
    ] + (["--classes", str(classes)] if classes is not None else [])
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {CHECK_TIMEOUT_S} s"
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the runtime's process ended (exit {done.returncode}): {tail[:300]}"
    return None if answer.get("ok") else str(answer.get("error"))
