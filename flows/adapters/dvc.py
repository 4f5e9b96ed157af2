"""DVC as the stage runner: reproduce one stage (skipped when nothing changed), read
the versions DVC recorded, push data to the remote."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dvc.exceptions import ReproductionError
from dvc.repo import Repo

STAGES = ("prepare", "validate", "train", "evaluate", "optimize")


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool


@contextlib.contextmanager
def _inside(project: Path) -> Iterator[Repo]:
    """The repo as the `dvc` command sees it: run from its root, and with `python`
    in stage commands meaning this environment's interpreter."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{before}"
    # DVC's own console handlers print each line a second time beside the
    # flow's (its records also reach the root logger's): the flow's stay.
    dvc_log = logging.getLogger("dvc")
    own = list(dvc_log.handlers) if logging.getLogger().handlers else []
    for handler in own:
        dvc_log.removeHandler(handler)
    try:
        with contextlib.chdir(project), Repo(str(project)) as repo:
            # DVC's advice to `git add dvc.lock` after every stage (twice, through
            # Prefect's logger too): the run's summary says what changed.
            repo.scm_context.quiet = True
            yield repo
    finally:
        os.environ["PATH"] = before
        for handler in own:
            dvc_log.addHandler(handler)


def reproduce(project: Path, stage: str) -> StageRun:
    """`dvc repro --single-item STAGE`; ReproductionError when its command fails."""
    with _inside(project) as repo:
        ran = repo.reproduce(stage, single_item=True)
    return StageRun(stage=stage, ran=bool(ran))


def message(error: BaseException) -> str:
    """An error and its causes in one line, as the `dvc` command prints them."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__
    return ": ".join(part for part in parts if part)


def output_hashes(project: Path) -> dict[str, str]:
    """Each stage output's path (relative to the project) -> the hash DVC recorded."""
    with _inside(project) as repo:
        return {
            str(out.def_path): str(out.hash_info.value)
            for stage in repo.index.stages
            for out in stage.outs
        }


def push(project: Path) -> int:
    """Push cached outputs to the default remote; returns how many files were sent."""
    with _inside(project) as repo:
        return int(repo.push())


__all__ = [
    "STAGES",
    "ReproductionError",
    "StageRun",
    "message",
    "output_hashes",
    "push",
    "reproduce",
]
