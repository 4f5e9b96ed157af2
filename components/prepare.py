"""Stage `prepare`: export the configured source, plus newly labelled rows from
`paths.incoming`, to the raw data folder as Parquet."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from components.config import DataConfig, Params
from components.data import load_source, read_table
from components.errors import DataContractError
from components.stage import exit_with, run_stage, stage_parser

log = logging.getLogger("edgeloop.prepare")
SOURCE_INFO = "source.json"


def raw_batch_path(raw_dir: Path, cfg: DataConfig) -> Path:
    return raw_dir / f"{cfg.name}.parquet"


def incoming_rows(
    folder: Path | None, columns: list[str]
) -> tuple[pd.DataFrame | None, list[str]]:
    """Every labelled file in the incoming folder, in name order, with exactly the
    source's columns; a file with other columns stops the stage, naming it."""
    if folder is None or not folder.is_dir():
        return None, []
    files = sorted(
        f for f in folder.iterdir() if f.suffix.lower() in (".csv", ".parquet")
    )
    frames = []
    for file in files:
        frame = read_table(file)
        if sorted(frame.columns) != sorted(columns):
            missing = sorted(set(columns) - set(frame.columns))
            extra = sorted(set(frame.columns) - set(columns))
            raise DataContractError(
                f"{file}: expected the source's columns; missing {missing[:5]}, "
                f"unexpected {extra[:5]}",
                hint="incoming files hold labelled rows in the source's columns",
            )
        frames.append(frame[columns])
    if not frames:
        return None, []
    return pd.concat(frames, ignore_index=True), [f.name for f in files]


def export_source(
    cfg: DataConfig,
    raw_dir: Path,
    root: Path = Path("."),
    incoming: Path | None = None,
) -> Path:
    """Write the source (plus any incoming labelled rows) as `<name>.parquet` and what
    is known of where it came from."""
    data = load_source(cfg, root)
    frame = data.frame
    extra, files = incoming_rows(incoming, list(frame.columns))
    if extra is not None:
        extra = extra.astype(frame.dtypes.to_dict())
        frame = pd.concat([frame, extra], ignore_index=True)
        log.info("added %d incoming rows from %s", len(extra), ", ".join(files))
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_batch_path(raw_dir, cfg)
    frame.to_parquet(path, index=False)
    info = {
        "name": cfg.name,
        "source": cfg.source,
        "description": data.description,
        "license": cfg.license,
        "known_limitations": cfg.known_limitations,
        "incoming_files": files,
        "incoming_rows": 0 if extra is None else len(extra),
    }
    (raw_dir / SOURCE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    log.info("exported %s (%d rows, %d columns) to %s", cfg.source, *frame.shape, path)
    return path


def _body(args: argparse.Namespace, params: Params) -> None:
    export_source(
        params.data, args.out or params.paths.raw, incoming=params.paths.incoming
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("prepare", __doc__ or "")
    parser.add_argument("--out", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
