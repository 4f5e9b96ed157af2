"""Stage `prepare`: export the configured source to the raw data folder as Parquet."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from components.config import DataConfig, Params
from components.data import load_source
from components.stage import exit_with, run_stage, stage_parser

log = logging.getLogger("edgeloop.prepare")
SOURCE_INFO = "source.json"


def raw_batch_path(raw_dir: Path, cfg: DataConfig) -> Path:
    return raw_dir / f"{cfg.name}.parquet"


def export_source(cfg: DataConfig, raw_dir: Path, root: Path = Path(".")) -> Path:
    """Write the source as `<name>.parquet` and what is known of where it came from."""
    data = load_source(cfg, root)
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_batch_path(raw_dir, cfg)
    data.frame.to_parquet(path, index=False)
    info = {
        "name": cfg.name,
        "source": cfg.source,
        "description": data.description,
        "license": cfg.license,
        "known_limitations": cfg.known_limitations,
    }
    (raw_dir / SOURCE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "exported %s (%d rows, %d columns) to %s", cfg.source, *data.frame.shape, path
    )
    return path


def _body(args: argparse.Namespace, params: Params) -> None:
    export_source(params.data, args.out or params.paths.raw)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("prepare", __doc__ or "")
    parser.add_argument("--out", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
