"""Stage `prepare`: export the configured source, plus newly labelled rows of this
data set (`paths.incoming/<data name>/`), to the raw data folder as Parquet."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.config import DataConfig, Params
from components.data.sources import load_source, read_table
from components.errors import EdgeloopError
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


@dataclass
class Incoming:
    """The labelled rows read from an incoming folder, the files they came from
    (relative to it), and the files set aside: a file that is not this data set's
    (other columns, or not readable) is moved to quarantine, named in a warning, and
    never stops the run."""

    frame: pd.DataFrame | None = None
    files: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


def incoming_rows(
    folder: Path | None, columns: list[str], quarantine: Path
) -> Incoming:
    """Every labelled file in the incoming folder and its target subfolders
    (`serving/`, `cohort-<name>/`: where the labelled rows came from), in path order,
    with exactly the source's columns."""
    found = Incoming()
    frames = []
    for name in labelled_files(folder) if folder is not None else []:
        file = folder / name
        try:
            frame = read_table(file)
            why = _column_mismatch(list(frame.columns), columns)
        except EdgeloopError as exc:  # read_table names what it could not read
            why = f"not readable ({exc})"
        if why:
            dest = quarantine / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(file, dest)
            log.warning("%s: %s; moved to %s", file, why, dest)
            found.quarantined.append(name)
            continue
        frames.append(frame[columns])
        found.files.append(name)
    if frames:
        found.frame = pd.concat(frames, ignore_index=True)
    return found


def _column_mismatch(got: list[str], columns: list[str]) -> str:
    if sorted(got) == sorted(columns):
        return ""
    missing = sorted(set(columns) - set(got))
    extra = sorted(set(got) - set(columns))
    return (
        f"expected the source's columns; missing {missing[:5]}, unexpected {extra[:5]}"
    )


def warn_outside_data_sets(incoming: Path) -> None:
    """Target folders straight under `paths.incoming` (the layout before incoming
    rows were kept per data set) are no data set's: say so, read nothing."""
    if not incoming.is_dir():
        return
    for folder in sorted(incoming.iterdir()):
        if folder.is_dir() and (
            folder.name == "serving" or folder.name.startswith("cohort-")
        ):
            log.warning(
                "%s: labelled rows outside a data set's folder are not read; move "
                "them to %s/<data name>/%s/",
                folder,
                incoming,
                folder.name,
            )


def in_source_types(extra: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    """Incoming rows in the source's column types where that loses nothing (a
    CSV's integers read as text, floats that are whole numbers). A value the
    source's type cannot hold is kept, and the column widened when concatenated:
    2007.6 in an integer column was cast to 2007 before, silently."""
    extra = extra.copy()
    for name, dtype in source.dtypes.items():
        values = extra[name]
        if pd.api.types.is_integer_dtype(dtype) and pd.api.types.is_float_dtype(values):
            whole = values.notna().all() and bool((values % 1 == 0).all())
            if not whole:
                continue
        extra[name] = values.astype(dtype)
    return extra


def export_source(
    cfg: DataConfig,
    raw_dir: Path,
    root: Path = Path("."),
    incoming: Path | None = None,
    quarantine: Path = Path("data/quarantine/incoming"),
) -> Path:
    """Write the source (plus any incoming labelled rows) as `<name>.parquet` and what
    is known of where it came from."""
    data = load_source(cfg, root)
    frame = data.frame
    found = incoming_rows(incoming, list(frame.columns), quarantine)
    extra, files = found.frame, found.files
    if extra is not None:
        frame = pd.concat([frame, in_source_types(extra, frame)], ignore_index=True)
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
        "quarantined_incoming_files": found.quarantined,
    }
    (raw_dir / SOURCE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    log.info("exported %s (%d rows, %d columns) to %s", cfg.source, *frame.shape, path)
    return path


def _body(args: argparse.Namespace, params: Params) -> None:
    warn_outside_data_sets(params.paths.incoming)
    export_source(
        params.data,
        args.out or params.paths.raw,
        incoming=params.incoming_dir(),
        quarantine=params.paths.quarantine / "incoming" / params.data.name,
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("prepare", __doc__ or "")
    parser.add_argument("--out", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
