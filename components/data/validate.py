"""Stage `validate`: the data contract on the raw batch, a hash-stable split, the
leakage check, and the data card. A failing batch is quarantined whole and the
previous good prepared data stays untouched."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dvc_data.hashfile.hash import file_md5

from components.config import Params
from components.data.contract import (
    ValidationOutcome,
    contract_columns,
    quarantine_batch,
    validate_batch,
    validate_split,
    write_report,
)
from components.data.datacard import build_card, write_card
from components.data.prepare import SOURCE_INFO, raw_batch_path
from components.data.sources import (
    feature_columns,
    load_source,
    read_table,
)
from components.data.split import SplitResult, split_dataset
from components.errors import DataContractError
from components.stage import exit_with, run_stage, stage_parser

log = logging.getLogger("edgeloop.validate")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ValidationRun:
    outcomes: list[ValidationOutcome]
    split: SplitResult | None

    @property
    def success(self) -> bool:
        return self.split is not None and all(o.success for o in self.outcomes)

    def summary(self) -> str:
        return " | ".join(o.summary() for o in self.outcomes if not o.success)


def expected_features(params: Params) -> list[str]:
    """The contract's feature columns: from params, else those of the source, less
    `features.drop`."""
    if params.validation.feature_columns is not None:
        return list(params.validation.feature_columns)
    if params.data.spoken is not None:  # what the front end computes
        from components.data import speech

        return speech.feature_names()
    source = load_source(params.data).frame
    columns = feature_columns(source, params.data.label_column)
    meta = contract_columns(params.validation, params.split.group_column)
    return [c for c in columns if c not in params.features.drop and c not in meta]


def validate_and_split(
    frame: pd.DataFrame, params: Params, features: list[str]
) -> ValidationRun:
    label, group = params.data.label_column, params.split.group_column
    meta = contract_columns(params.validation, group)
    frame = frame.drop(
        columns=[c for c in params.features.drop if c not in meta], errors="ignore"
    )
    contract = validate_batch(
        frame, params.validation, features, label, params.features, group=group
    )
    if not contract.success:
        return ValidationRun(outcomes=[contract], split=None)
    split = split_dataset(frame, params.split, label, features)
    leakage = validate_split(split, features, group)
    # The audio and group columns were checked; the model takes the features.
    split = SplitResult(
        *(part.drop(columns=meta) for part in (split.train, split.val, split.test))
    )
    return ValidationRun(
        outcomes=[contract, leakage], split=split if leakage.success else None
    )


def write_prepared(split: SplitResult, card: dict, out_dir: Path) -> None:
    """Write the splits and card beside the old folder, then swap it in whole."""
    staging = out_dir.with_name(out_dir.name + ".incoming")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in SPLITS:
        getattr(split, name).to_parquet(staging / f"{name}.parquet", index=False)
    write_card(card, staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)


def check_file(
    path: Path, params: Params, quarantine_dir: Path | None
) -> ValidationRun:
    """Validate one data file against the suite; quarantine a copy if it fails."""
    frame = read_table(path)
    run = validate_and_split(frame, params, expected_features(params))
    if not run.success and quarantine_dir is not None:
        quarantine_batch(frame, path.stem, run.outcomes, quarantine_dir, source=path)
    return run


def _body(args: argparse.Namespace, params: Params) -> None:
    paths = params.paths
    raw_dir, out_dir = args.raw or paths.raw, args.out or paths.prepared
    reports = (args.reports or paths.reports) / "validation"
    raw = raw_batch_path(raw_dir, params.data)
    frame = read_table(raw)
    run = validate_and_split(frame, params, expected_features(params))
    write_report(run.outcomes, reports)
    if not run.success:
        kept = quarantine_batch(
            frame, params.data.name, run.outcomes, paths.quarantine, source=raw
        )
        raise DataContractError(
            run.summary(),
            hint=f"all {len(frame)} rows kept in {kept}; {out_dir} is unchanged; "
            f"report: {reports / 'summary.md'}",
        )
    assert run.split is not None
    info = json.loads((raw_dir / SOURCE_INFO).read_text())
    card = build_card(
        info,
        frame,
        run.split,
        params.data.label_column,
        file_md5(raw),
        kinds=params.features,
        group=params.split.group_column,
        checked=tuple(
            c for c in contract_columns(params.validation, None) if c in frame.columns
        ),
    )
    write_prepared(run.split, card, out_dir)
    log.info(
        "validated %d rows; splits %s -> %s", len(frame), run.split.sizes(), out_dir
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("validate", __doc__ or "")
    for name in ("raw", "out", "reports"):
        parser.add_argument(f"--{name}", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
