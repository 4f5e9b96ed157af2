"""Stage `prepare`: export the configured source, plus newly labelled rows from
`paths.incoming`, to the raw data folder as Parquet."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from components.config import DataConfig, Params
from components.data.sources import load_source, read_table
from components.errors import DataContractError
from components.stage import exit_with, run_stage, stage_parser

log = logging.getLogger("edgeloop.prepare")
SOURCE_INFO = "source.json"


def raw_batch_path(raw_dir: Path, cfg: DataConfig) -> Path:
    return raw_dir / f"{cfg.name}.parquet"


def labelled_files(folder: Path) -> list[str]:
    """The .csv/.parquet files under `folder` (subfolders too), as sorted paths
    relative to it; other files (a README) and hidden ones are not data."""
    if not folder.is_dir():
        return []
    return sorted(
        f.relative_to(folder).as_posix()
        for f in folder.rglob("*")
        if f.is_file()
        and f.suffix.lower() in (".csv", ".parquet")
        and not f.name.startswith(".")
    )


def incoming_rows(
    folder: Path | None, columns: list[str]
) -> tuple[pd.DataFrame | None, list[str]]:
    """Every labelled file in the incoming folder and its target subfolders
    (`serving/`, `cohort-<name>/`: where the labelled rows came from), in path order,
    with exactly the source's columns; a file with other columns stops the stage,
    naming it. Returns the rows and the files' paths relative to the folder."""
    if folder is None:
        return None, []
    names = labelled_files(folder)
    frames = []
    for file in (folder / name for name in names):
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
    return pd.concat(frames, ignore_index=True), names


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
