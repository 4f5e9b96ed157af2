"""Splits are stratified, deterministic, and leak no row between train and held-out."""

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
    assert split.sizes() == {"train": 54, "val": 18, "test": 18}


def test_split_is_stratified():
    frame = tiny_frame(rows_per_class=40)
    split = split_dataset(frame, SplitConfig(val=0.25, test=0.25), "label")
    for part in (split.train, split.val, split.test):
        counts = part["label"].value_counts()
        assert counts.max() - counts.min() <= 1


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
    detail = outcome.failures[0].detail  # two leaked rows of val + test's 30
    assert detail.startswith("2 of 30 (6.7%, allowed 0.0%)"), detail


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
