"""`python -m edge_fleet.device.loadcheck FILE --features N [--rows 1,64]
[--memory-mb M] [--threads T] [--classes C]`: what a device does to a new file in
its smoke test, on rows of zeros: load it in its runtime (by suffix, as the agent
does) under an address-space limit of M MB for this whole process, answer each
batch size in `--rows`, and check each answer is one finite row of C logits per
input row. Prints one JSON line, {"ok": true} or {"ok": false, "error": "..."};
exit 0 or 1. The fleet server runs it for each profile an upload names, before the
version is stored (edge_fleet/server/load_check.py)."""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

from edge_fleet.device.runtime import answer_problem, load_runtime


def check(
    path: Path, features: int, rows: list[int], threads: int, classes: int | None
) -> str | None:
    """None when the file loads and answers every batch size; else what failed."""
    model = load_runtime(path, threads)
    for n in rows:
        problem = answer_problem(
            model.logits(np.zeros((n, features), np.float32)), n, classes
        )
        if problem is not None:
            return f"a batch of {n} rows of zeros: {problem}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--features", type=int, required=True)
    parser.add_argument("--rows", default="1", help="batch sizes, comma separated")
    parser.add_argument("--memory-mb", type=int, default=0, help="0: no limit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classes", type=int, default=None)
    args = parser.parse_args(argv)
    if args.memory_mb:
        limit = args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rows = sorted({int(n) for n in args.rows.split(",") if n})
    try:
        problem = check(args.file, args.features, rows, args.threads, args.classes)
    except Exception as exc:  # noqa: BLE001 - any failure to load or run is the answer
        problem = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    answer = {"ok": problem is None} | ({"error": problem} if problem else {})
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0 if problem is None else 1


if __name__ == "__main__":
    sys.exit(main())
