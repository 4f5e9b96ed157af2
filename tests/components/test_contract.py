"""Each expectation of the data contract catches the batch that breaks it, and the
quarantine keeps that batch whole."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from components.data.contract import quarantine_batch, validate_batch
from tests.conftest import tiny_params

FEATURES = ["f0", "f1", "f2", "f3"]


def _imbalanced(f: pd.DataFrame) -> pd.DataFrame:
    extra = f[f.label == 0].assign(f0=lambda d: d.f0 / 2 + 0.01)
    more = pd.concat([f] + [extra.assign(f1=extra.f1 / (k + 2)) for k in range(4)])
    return more.reset_index(drop=True)


BREAKERS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str | None]] = {
    "missing column": (
        lambda f: f.drop(columns="f3"),
        "expect_table_columns_to_match_set",
        None,
    ),
    "extra column": (
        lambda f: f.assign(extra=1.0),
        "expect_table_columns_to_match_set",
        None,
    ),
    "text in a numeric column": (
        lambda f: f.assign(f1=f.f1.astype(str)),
        "expect_column_values_to_be_in_type_list",
        "f1",
    ),
    "null value": (
        lambda f: f.assign(f2=f.f2.where(f.index != 5, np.nan)),
        "expect_column_values_to_not_be_null",
        "f2",
    ),
    "value out of range": (
        lambda f: f.assign(f0=f.f0.where(f.index != 3, 99.0)),
        "expect_column_values_to_be_between",
        "f0",
    ),
    "unknown label": (
        lambda f: f.assign(label=f.label.where(f.index != 0, 9)),
        "expect_column_values_to_be_in_set",
        "label",
    ),
    "missing class": (
        lambda f: f[f.label != 2].reset_index(drop=True),
        "expect_column_distinct_values_to_contain_set",
        "label",
    ),
    "class imbalance": (
        _imbalanced,
        "expect_column_kl_divergence_to_be_less_than",
        "label",
    ),
    "duplicate rows": (
        lambda f: pd.concat([f, f.head(3)], ignore_index=True),
        "expect_compound_columns_to_be_unique",
        None,
    ),
    "too few rows": (
        lambda f: f.groupby("label").head(5).reset_index(drop=True),
        "expect_table_row_count_to_be_between",
        None,
    ),
}


def test_a_good_batch_meets_the_contract(tiny):
    outcome = validate_batch(tiny, tiny_params().validation, FEATURES, "label")
    assert outcome.success, outcome.summary()
    assert outcome.evaluated > 10


@pytest.mark.parametrize("case", list(BREAKERS))
def test_each_broken_batch_is_caught_and_quarantined_whole(case, tiny, tmp_path):
    breaker, expectation, column = BREAKERS[case]
    batch = breaker(tiny)
    outcome = validate_batch(batch, tiny_params().validation, FEATURES, "label")
    assert not outcome.success
    caught = {(f.expectation, f.column) for f in outcome.failures}
    assert any(
        e == expectation and (column is None or c == column) for e, c in caught
    ), caught
    assert expectation in outcome.summary()

    kept = quarantine_batch(batch, "tiny", [outcome], tmp_path / "quarantine")
    back = pd.read_parquet(kept / "batch.parquet")
    assert len(back) == len(batch)
    pd.testing.assert_frame_equal(back, batch.reset_index(drop=True), check_dtype=False)
    reason = json.loads((kept / "reason.json").read_text())
    assert reason["rows"] == len(batch)
    assert expectation in {f["expectation"] for f in reason["failed"]}
    assert (kept / "validation.json").exists() and (kept / "summary.md").exists()


def test_a_refusal_names_the_column_the_share_and_the_bound(tiny):
    """Gaps in a column: the refusal says how many, what share of the column, and
    the share the contract allows."""
    gaps = tiny.assign(f2=tiny.f2.where(tiny.index % 10 != 0, np.nan))
    outcome = validate_batch(gaps, tiny_params().validation, FEATURES, "label")
    missing = sum(gaps.f2.isna())
    share = 100 * missing / len(gaps)
    assert (
        f"expect_column_values_to_not_be_null(f2): {missing} of {len(gaps)} "
        f"({share:.1f}%, allowed 0.0%)" in outcome.summary()
    ), outcome.summary()
    # A bound below 100% (duplicates: validation.max_duplicate_fraction) is named.
    params = tiny_params(validation={"max_duplicate_fraction": 0.01})
    dup = pd.concat([tiny, tiny.head(8)], ignore_index=True)
    outcome = validate_batch(dup, params.validation, FEATURES, "label")
    assert "allowed 1.0%" in outcome.summary(), outcome.summary()
