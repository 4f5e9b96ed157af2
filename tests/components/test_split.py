"""Splits are deterministic, keep each row in its split as rows are added, give
every class rows in each split, and leak no row between train and held-out."""

from __future__ import annotations

import pandas as pd
import pytest

from components.config import SplitConfig
from components.data.contract import validate_split
from components.data.split import SplitResult, row_keys, split_dataset
from components.errors import DataContractError
from tests.conftest import tiny_frame

FEATURES = ["f0", "f1", "f2", "f3"]


def test_same_seed_same_split_other_seed_other_split(tiny):
    a = split_dataset(tiny, SplitConfig(seed=1), "label")
    b = split_dataset(tiny, SplitConfig(seed=1), "label")
    c = split_dataset(tiny, SplitConfig(seed=2), "label")
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.test.index.equals(c.test.index)


def test_every_row_in_exactly_one_split(tiny):
    split = split_dataset(tiny, SplitConfig(val=0.2, test=0.2), "label")
    indices = [set(getattr(split, n).index) for n in ("train", "val", "test")]
    assert set.union(*indices) == set(tiny.index)
    assert sum(len(i) for i in indices) == len(tiny)
    sizes = split_dataset(tiny_frame(rows_per_class=2000), SplitConfig(), "label")
    assert sizes.sizes()["test"] == pytest.approx(900, rel=0.1)  # 15% of 6,000


def test_every_class_has_rows_in_every_split():
    frame = tiny_frame(rows_per_class=3)
    for seed in range(20):
        split = split_dataset(frame, SplitConfig(seed=seed), "label")
        for part in (split.train, split.val, split.test):
            assert set(part["label"]) == {0, 1, 2}, seed


def test_added_rows_move_no_row_between_splits():
    """The next data version: a champion scored on the new test split never saw
    its rows in training. With a fresh stratified shuffle, about 70% of the new
    test rows had been training rows (gapminder's MLP then beat its own
    retrained successor by 7.8 points on them, and the gate refused it)."""
    before = tiny_frame(rows_per_class=100)
    after = pd.concat(
        [before, tiny_frame(rows_per_class=20, seed=1)], ignore_index=True
    )
    old, new = (split_dataset(f, SplitConfig(), "label") for f in (before, after))
    for name in ("train", "val", "test"):
        kept = getattr(new, name).loc[: len(before) - 1]
        pd.testing.assert_frame_equal(kept, getattr(old, name))


def test_rows_with_equal_features_share_a_split():
    frame = tiny_frame(rows_per_class=30)
    frame = pd.concat([frame, frame.head(20)], ignore_index=True)
    split = split_dataset(frame, SplitConfig(), "label")
    assert validate_split(split, FEATURES).success


def test_clean_split_passes_the_leakage_suite(tiny):
    split = split_dataset(tiny, SplitConfig(), "label")
    outcome = validate_split(split, FEATURES)
    assert outcome.success, outcome.summary()
    keys = [
        set(row_keys(getattr(split, n), FEATURES)) for n in ("train", "val", "test")
    ]
    assert (
        not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    )


def test_a_training_row_in_test_is_caught(tiny):
    split = split_dataset(tiny, SplitConfig(), "label")
    leaked = SplitResult(
        train=split.train,
        val=split.val,
        test=pd.concat([split.test, split.train.head(2)]),
    )
    outcome = validate_split(leaked, FEATURES)
    assert not outcome.success
    assert outcome.failures[0].expectation == "expect_column_values_to_not_be_in_set"
    held_out = len(split.val) + len(split.test) + 2
    detail = outcome.failures[0].detail  # two leaked rows of val + test
    assert detail.startswith(f"2 of {held_out} ("), detail


def test_a_validation_row_in_test_is_caught(tiny):
    split = split_dataset(tiny, SplitConfig(), "label")
    leaked = SplitResult(
        train=split.train,
        val=split.val,
        test=pd.concat([split.test, split.val.head(1)]),
    )
    assert not validate_split(leaked, FEATURES).success


def test_too_few_rows_per_class_to_stratify(tiny):
    frame = pd.concat([tiny, tiny.head(2).assign(label=7)], ignore_index=True)
    with pytest.raises(DataContractError, match="label 7 has 2 row"):
        split_dataset(frame, SplitConfig(), "label")
    copies = pd.concat([tiny, tiny.head(1).assign(label=7)] * 1, ignore_index=True)
    copies = pd.concat([copies] + [tiny.head(1).assign(label=7)] * 3, ignore_index=True)
    with pytest.raises(DataContractError, match="label 7: too few distinct rows"):
        split_dataset(copies, SplitConfig(), "label")
