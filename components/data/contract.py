"""The data contract as a Great Expectations suite, the split-leakage check, and the
quarantine that keeps every rejected batch whole."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations import expectations as gxe

from components.config import (
    AudioContract,
    FeaturesConfig,
    FeatureSpec,
    ValidationConfig,
)
from components.data.dates import instants
from components.data.features import FALSE, TRUE
from components.data.split import ROW_KEY, SplitResult, row_keys

NO_FEATURES = FeaturesConfig()
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    detail: str


@dataclass(frozen=True)
class ValidationOutcome:
    suite: str
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    gx_result: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: all {self.evaluated} expectations met"
        shown = "; ".join(
            f"{f.expectation}({f.column or 'table'}): {f.detail}"
            for f in self.failures[:5]
        )
        more = len(self.failures) - 5
        return (
            f"{self.suite}: {len(self.failures)} of {self.evaluated} expectations "
            f"failed: {shown}" + (f"; and {more} more" if more > 0 else "")
        )


AUDIO_COLUMNS = ("sample_rate", "seconds", "clipped_share", "level_db")
GROUP = "_group"


def audio_expectations(cfg: AudioContract) -> list[gxe.Expectation]:
    """Every clip at the rate and length the model takes; at most `max_bad_share`
    of them clipped or silent."""
    mostly = 1.0 - cfg.max_bad_share
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="sample_rate", value_set=[cfg.sample_rate]
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="seconds", min_value=cfg.seconds, max_value=cfg.seconds
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="clipped_share", max_value=cfg.max_clipped_share, mostly=mostly
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="level_db", min_value=cfg.silent_db, mostly=mostly
        ),
    ]


def contract_columns(cfg: ValidationConfig, group: str | None) -> list[str]:
    """The columns a batch carries besides features and label: the clips' audio
    columns and the split's group column."""
    extra = list(AUDIO_COLUMNS) if cfg.audio is not None else []
    return extra + ([group] if group else [])


def contract_expectations(
    cfg: ValidationConfig,
    features: list[str],
    label: str,
    kinds: FeaturesConfig = NO_FEATURES,
    *,
    group: str | None = None,
) -> list[gxe.Expectation]:
    """Schema, ranges, nulls, label set, class balance, duplicates, size; for
    audio, the clips' rate, length, clipping and silence."""
    labels = list(cfg.labels)
    uniform = [1 / len(labels)] * len(labels)
    label_types = NUMERIC_TYPES if all(isinstance(v, int) for v in labels) else None
    exps: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*features, label, *contract_columns(cfg, group)],
            exact_match=True,
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows),
        gxe.ExpectColumnValuesToBeInSet(column=label, value_set=labels),
        gxe.ExpectColumnDistinctValuesToContainSet(column=label, value_set=labels),
        gxe.ExpectColumnKLDivergenceToBeLessThan(
            column=label,
            partition_object={"values": labels, "weights": uniform},
            threshold=cfg.max_class_kl_divergence,
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=features, mostly=1.0 - cfg.max_duplicate_fraction
        ),
        gxe.ExpectColumnValuesToNotBeNull(column=label),
    ]
    if label_types:
        exps.append(
            gxe.ExpectColumnValuesToBeInTypeList(column=label, type_list=label_types)
        )
    if cfg.audio is not None:
        exps += audio_expectations(cfg.audio)
    if group:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=group))
    for col in features:
        exps += column_expectations(col, kinds.spec(col), cfg)
    # A column `features:` describes must be there: a renamed one was otherwise
    # read as a new plain column, and the described one silently gone.
    exps += [gxe.ExpectColumnToExist(column=col) for col in kinds.columns]
    return exps


def column_expectations(
    col: str, spec: FeatureSpec, cfg: ValidationConfig
) -> list[gxe.Expectation]:
    """A feature column checked by its declared kind (`features:`): its type, its
    gaps (none, or at most `max_missing` of the rows where a policy fills them),
    its categories (at most `max_unseen` outside the declared values) and range."""
    gaps = {} if spec.missing == "refuse" else {"mostly": 1.0 - spec.max_missing}
    exps: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column=col, **gaps)
    ]
    unseen = {"mostly": 1.0 - spec.max_unseen} if spec.max_unseen else {}
    if spec.kind == "categorical":
        if spec.values != "learned":
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=col, value_set=list(spec.values), **unseen
                )
            )
        return exps
    if spec.kind == "datetime":  # what is not a date counts as unseen
        exps.append(gxe.ExpectColumnValuesToBeDateutilParseable(column=col, **unseen))
        return exps
    if spec.kind == "boolean":
        words = sorted(TRUE | FALSE)  # as encode() reads them: any letter case
        cases = {f(w) for w in words for f in (str.lower, str.upper, str.capitalize)}
        allowed = [True, False, 0, 1, *sorted(cases)]
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=allowed))
        return exps
    exps.append(
        gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=NUMERIC_TYPES)
    )
    bounds = cfg.column_ranges.get(col, cfg.feature_range)
    if bounds is not None:
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=col, min_value=bounds[0], max_value=bounds[1]
            )
        )
    return exps


def leakage_expectations(
    train_keys: list[int], val_keys: list[int], train_groups: list[str] | None = None
) -> list[gxe.Expectation]:
    """No val or test row may repeat a training row; no test row a validation row;
    with a group column, no val or test group (speaker) may be in training."""
    groups = (
        [gxe.ExpectColumnValuesToNotBeInSet(column=GROUP, value_set=train_groups)]
        if train_groups is not None
        else []
    )
    return [
        *groups,
        gxe.ExpectColumnValuesToNotBeInSet(column=ROW_KEY, value_set=train_keys),
        gxe.ExpectColumnValuesToNotBeInSet(
            column=ROW_KEY,
            value_set=val_keys,
            row_condition='split=="test"',
            condition_parser="pandas",
        ),
    ]


def run_suite(
    frame: pd.DataFrame, name: str, expectations: list[gxe.Expectation]
) -> ValidationOutcome:
    """Validate one in-memory batch with an ephemeral GX context."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas(name="edgeloop")
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(
        "whole"
    )
    suite = context.suites.add(
        gx.ExpectationSuite(name=name, expectations=expectations)
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame}, result_format="SUMMARY"
    )
    columns = list(frame.columns)
    failures = sorted(
        (_failure(r, columns) for r in result.results if not r.success),
        key=lambda f: f.expectation not in SCHEMA,  # what is missing first
    )
    return ValidationOutcome(
        suite=name,
        success=bool(result.success),
        evaluated=len(result.results),
        failures=failures,
        gx_result=result.to_json_dict(),
    )


# The table's shape: reported before the checks of the columns' values.
SCHEMA = ("expect_column_to_exist", "expect_table_columns_to_match_set")


def _failure(res: Any, columns: list[str]) -> Failure:
    """One failed expectation in words: the values that broke it, or what is
    missing, or why it could not be evaluated."""
    config = res.expectation_config
    kwargs = config.kwargs
    info = res.result or {}
    named = [kwargs["column"]] if kwargs.get("column") else kwargs.get("column_list")
    absent = [c for c in named or [] if c not in columns]
    if config.type == "expect_column_to_exist":
        detail = (
            f"{kwargs['column']!r} is missing from the table (features.columns "
            f"describes it); its columns are {columns[:12]}"
        )
    elif config.type == "expect_table_columns_to_match_set":
        expected = list(kwargs.get("column_set") or [])
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        detail = f"missing {missing[:8]}, not expected {extra[:8]}"
    elif config.type == "expect_column_kl_divergence_to_be_less_than" and (
        info.get("observed_value") is None
    ):
        detail = (
            "not measured: the column holds values outside validation.labels, or "
            "none (see expect_column_values_to_be_in_set)"
        )
    elif absent:
        detail = (
            f"could not be evaluated: column(s) {absent[:8]} missing from the table"
        )
    elif res.exception_info and res.exception_info.get("raised_exception"):
        detail = f"could not be evaluated: {res.exception_info['exception_message']}"
    elif "unexpected_count" in info:
        detail = _unexpected(info, kwargs.get("mostly") or 1.0)
    else:
        detail = f"observed {info.get('observed_value')!r}"
    return Failure(expectation=config.type, column=kwargs.get("column"), detail=detail)


def _unexpected(info: dict[str, Any], mostly: float) -> str:
    """How many values broke it, their share of the column and the share allowed
    (`mostly`), and a few of them: `3 of 344 (0.9%, allowed 0.0%), e.g. [...]`."""
    count, total = info["unexpected_count"], info.get("element_count")
    examples = info.get("partial_unexpected_list", [])[:3]
    if not total:
        return f"{count} unexpected value(s), e.g. {examples}"
    return (
        f"{count} of {total} ({100 * count / total:.1f}%, allowed "
        f"{100 * (1 - mostly):.1f}%), e.g. {examples}"
    )


def validate_batch(
    frame: pd.DataFrame,
    cfg: ValidationConfig,
    features: list[str],
    label: str,
    kinds: FeaturesConfig = NO_FEATURES,
    *,
    group: str | None = None,
) -> ValidationOutcome:
    return run_suite(
        dates_as_text(frame, kinds),
        "data_contract",
        contract_expectations(cfg, features, label, kinds, group=group),
    )


def dates_as_text(frame: pd.DataFrame, kinds: FeaturesConfig) -> pd.DataFrame:
    """A `datetime` column as GX's dateutil_parseable should judge it: each value
    as the model reads it (`dates.instants`), a date as ISO text, anything else as
    text no parser takes. GX's check takes text only (a Parquet table's timestamps
    failed it with 'observed None'), and dateutil alone reads more than the model
    does ("17" is the 17th of this month to it)."""
    dated = [
        name
        for name, spec in kinds.columns.items()
        if spec.kind == "datetime" and name in frame.columns
    ]
    if not dated:
        return frame
    return frame.assign(**{name: _iso_text(frame[name]) for name in dated})


def _iso_text(values: pd.Series) -> pd.Series:
    at = instants(values)
    text = at.map(lambda v: None if pd.isna(v) else v.isoformat())
    unread = at.isna() & values.notna()
    return text.where(~unread, "not a date: " + values.astype(str))


def validate_split(
    split: SplitResult, features: list[str], group: str | None = None
) -> ValidationOutcome:
    train_keys = row_keys(split.train, features).tolist()
    val_keys = row_keys(split.val, features).tolist()
    parts = [
        pd.DataFrame({ROW_KEY: val_keys, "split": "val"}),
        pd.DataFrame({ROW_KEY: row_keys(split.test, features), "split": "test"}),
    ]
    train_groups = None
    if group:
        train_groups = sorted(split.train[group].astype(str).unique())
        parts[0][GROUP] = split.val[group].astype(str).to_numpy()
        parts[1][GROUP] = split.test[group].astype(str).to_numpy()
    held_out = pd.concat(parts, ignore_index=True)
    return run_suite(
        held_out,
        "split_leakage",
        leakage_expectations(train_keys, val_keys, train_groups),
    )


def quarantine_batch(
    frame: pd.DataFrame,
    name: str,
    outcomes: list[ValidationOutcome],
    quarantine_dir: Path,
    source: Path | None = None,
) -> Path:
    """Keep the whole rejected batch with the reason; returns its quarantine folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = quarantine_dir / f"{stamp}-{name}"
    target.mkdir(parents=True, exist_ok=False)
    if source is not None and source.is_file():
        shutil.copy2(source, target / source.name)
    frame.to_parquet(target / "batch.parquet", index=False)
    reason = {
        "batch": name,
        "rows": len(frame),
        "quarantined_at": stamp,
        "source": str(source) if source else None,
        "failed": [
            f.__dict__ | {"suite": o.suite} for o in outcomes for f in o.failures
        ],
    }
    (target / "reason.json").write_text(json.dumps(reason, indent=2, default=str))
    write_report(outcomes, target)
    return target


def write_report(outcomes: list[ValidationOutcome], folder: Path) -> None:
    """GX's own results as JSON plus a short Markdown summary."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "validation.json").write_text(
        json.dumps({o.suite: o.gx_result for o in outcomes}, indent=1, default=str)
    )
    lines = ["# Data validation", ""]
    for o in outcomes:
        lines.append(
            f"- **{o.suite}**: {'passed' if o.success else 'FAILED'} "
            f"({o.evaluated} expectations)"
        )
        lines += [
            f"  - `{f.expectation}` on `{f.column or 'table'}`: {f.detail}"
            for f in o.failures
        ]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
