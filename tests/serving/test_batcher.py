"""The in-process micro-batcher and the request contract, without a server: requests
that arrive while the model is busy run as one batch, each gets its own rows back,
a request for another version never joins the batch, a failing batch fails only its
own requests, and a bad request is refused before it joins any batch."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from bentoml.exceptions import InvalidArgument

from components.data.features import ColumnEncoding
from serving.batcher import MicroBatcher
from serving.contract import FeatureRanges, RowContract


class Scale:
    """A model: rows times a factor, taking `seconds` per batch; it records the
    batch sizes it ran and the thread it ran on."""

    def __init__(self, factor: float, seconds: float = 0.0) -> None:
        self.factor, self.seconds = factor, seconds
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.isnan(x).any():
            raise ValueError("the model cannot take NaN")
        time.sleep(self.seconds)
        self.batches.append(len(x))
        self.threads.add(threading.current_thread().name)
        return x * self.factor


def run(model: Scale, x: np.ndarray) -> np.ndarray:
    return model(x)


async def _submit_all(
    batcher: MicroBatcher, requests: list[tuple[Scale, np.ndarray]]
) -> list[np.ndarray | BaseException]:
    """The first request, then (while the model runs it) all the others at once."""
    (model, rows), rest = requests[0], requests[1:]
    first = asyncio.ensure_future(batcher.submit(model, rows))
    await asyncio.sleep(0.005)  # the first batch is running now
    others = await asyncio.gather(
        *(batcher.submit(model, rows) for model, rows in rest),
        return_exceptions=True,
    )
    return [await first, *others]


def test_requests_that_wait_run_as_one_batch_and_get_their_own_rows():
    model = Scale(2.0, seconds=0.05)
    batcher = MicroBatcher(run, max_rows=256)
    requests = [(model, np.full((1 + i % 3, 4), float(i))) for i in range(40)]
    answers = asyncio.run(_submit_all(batcher, requests))
    for (_, rows), answer in zip(requests, answers, strict=True):
        assert isinstance(answer, np.ndarray)
        np.testing.assert_array_equal(answer, rows * 2.0)
    # The first request runs alone at once; the others waited and ran together.
    assert model.batches[0] == 1
    assert len(model.batches) < 5 and sum(model.batches) == sum(
        len(r) for _, r in requests
    )
    assert batcher.batches == len(model.batches)


def test_a_batch_holds_one_version_and_at_most_max_rows():
    old, new = Scale(1.0, seconds=0.02), Scale(10.0, seconds=0.02)
    batcher = MicroBatcher(run, max_rows=5)
    requests = [(old if i < 6 else new, np.ones((2, 3)) * i) for i in range(12)]
    answers = asyncio.run(_submit_all(batcher, requests))
    for (model, rows), answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, rows * model.factor)
    assert all(size <= 5 for size in old.batches + new.batches)
    assert sum(old.batches) == 12 and sum(new.batches) == 12


def test_a_failing_batch_fails_its_requests_only_and_the_batcher_goes_on():
    model = Scale(3.0, seconds=0.02)
    batcher = MicroBatcher(run, max_rows=2)
    bad = np.array([[np.nan, 1.0]])
    requests = [(model, np.ones((1, 2)))] + [(model, bad), (model, np.ones((1, 2)))]
    requests += [(model, np.ones((1, 2)) * 5)]
    answers = asyncio.run(_submit_all(batcher, requests))
    assert isinstance(answers[0], np.ndarray)  # ran alone, before the bad one came
    # The bad request and the one batched with it fail; not the one after them.
    assert isinstance(answers[1], ValueError) and isinstance(answers[2], ValueError)
    np.testing.assert_array_equal(answers[3], np.ones((1, 2)) * 15)
    again = asyncio.run(_submit_all(batcher, [(model, np.ones((1, 2)))]))
    np.testing.assert_array_equal(again[0], np.ones((1, 2)) * 3)


def test_a_fast_model_runs_on_the_event_loop_a_slow_one_in_a_thread():
    fast, slow = Scale(1.0), Scale(1.0, seconds=0.01)
    # The batch time is a moving average (0.9 old, 0.1 new) that starts with the
    # first batch, timed in the thread: on a loaded CI machine that one took over
    # 1 ms, and five batches were too few for the average to fall under it. Sixty
    # bring even a 100 ms first batch under 1 ms.
    for model, batches in ((fast, 60), (slow, 5)):
        batcher = MicroBatcher(run, max_rows=8)
        for _ in range(batches):
            asyncio.run(batcher.submit(model, np.ones((1, 2))))
    # The first batch is timed in the thread; a model faster than 1 ms then runs
    # inline (the main thread), a slower one stays in the batch thread.
    assert "MainThread" in fast.threads
    assert "MainThread" not in slow.threads


RANGES = FeatureRanges(
    low=[0.0, 0.0, -1.0],
    high=[16.0, 16.0, 1.0],
    setting=["validation.feature_range"] * 2 + ["validation.column_ranges.c"],
    names=["a", "b", "c"],
)


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ([[1, 2, 0], [1, 2]], "instances[1]: expected 3 features, got 2"),
        ([[1, 2, 0, 4]], "instances[0]: expected 3 features, got 4"),
        ([[1, 2, 0], [1, 1e39, 0]], "instances[1][1] (b): 1e+39 is not a finite"),
        ([[1, 2, 0], [1, 2, float("nan")]], "instances[1][2] (c): nan is not a finite"),
        (
            [[1, 2, 0], [1, 2, 1.5]],
            "instances[1][2] (c): 1.5 is outside [-1, 1] (validation.column_ranges.c)",
        ),
        ([[-0.5, 2, 0]], "instances[0][0] (a): -0.5 is outside [0, 16]"),
        # Text or null sent to a model without a features: section (it was a 500:
        # numpy's ValueError read as ragged rows, then no ragged row was found).
        ([[1, "x", 0]], "instances[0][1] (b): 'x' is not a number"),
        ([[1, 2, None]], "instances[0][2] (c): a gap (null); this model takes a"),
    ],
)
def test_the_contract_names_the_first_bad_row_and_column(instances, expected):
    with pytest.raises(InvalidArgument) as refused:
        RowContract("1", 3, RANGES).check(instances)
    assert expected in str(refused.value)


def test_the_contract_gives_the_rows_as_float32():
    rows = RowContract("1", 3, RANGES).check([[1, 2, 0.5], [16, 0, -1]])
    assert rows.dtype == np.float32 and rows.shape == (2, 3)


RAW = (  # island (categorical, no gap), mass (numeric, median), sex (most frequent)
    ColumnEncoding("island", "categorical", ["Biscoe", "Dream"], float("nan"), False),
    ColumnEncoding("mass", "numeric", None, 4050.0, True),
    ColumnEncoding("sex", "categorical", ["female", "male"], 1.0, True),
)
RAW_RANGES = FeatureRanges(
    [0.0] * 3, [9000.0] * 3, ["validation.feature_range"] * 3, None
)


def test_raw_rows_take_text_and_gaps_where_the_model_fills_them():
    rows = RowContract("1", 3, RAW_RANGES, RAW).check(
        [["Dream", 3800, "female"], ["Biscoe", None, None]]
    )
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0], [1.0, 3800.0, 0.0])
    assert rows[1, 0] == 0.0 and np.isnan(rows[1, 1:]).all()  # filled in the model


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ([["Mars", 3800, "male"]], "instances[0][0] (island): 'Mars' is not one of"),
        ([[None, 3800, "male"]], "(island): a gap (null) where features.columns."),
        ([["Dream", "heavy", "male"]], "instances[0][1] (mass): 'heavy' is not a"),
        ([["Dream", 9500, "male"]], "(mass): 9500 is outside [0, 9000]"),
        ([["Dream", 3800]], "expected 3 features (island, mass, sex), got 2"),
    ],
)
def test_raw_rows_are_refused_naming_the_value(instances, expected):
    with pytest.raises(InvalidArgument) as refused:
        RowContract("1", 3, RAW_RANGES, RAW).check(instances)
    assert expected in str(refused.value), str(refused.value)


DATED = (
    ColumnEncoding(
        "at", "datetime", None, float("nan"), False, parts=["hour"], origin=19723
    ),  # 2024-01-01
    ColumnEncoding("mass", "numeric", None, float("nan"), False),
)


def test_a_date_is_taken_as_text_and_is_not_held_to_a_range():
    """Minutes since the origin grow past any feature_range: dates are not ranged
    (a later date is no error), text that is not a date is refused."""
    ranges = FeatureRanges(
        [0.0] * 2, [9000.0] * 2, ["validation.feature_range"] * 2, None
    )
    rows = RowContract("1", 2, ranges, DATED).check(
        [["2024-01-02T00:30:00", 3800], ["2031-06-01 08:00", 3800]]
    )
    assert rows[0, 0] == 1440 + 30 and rows[1, 0] > 9000
    with pytest.raises(InvalidArgument) as refused:
        RowContract("1", 2, ranges, DATED).check([["tomorrow", 3800]])
    assert "instances[0][0] (at): 'tomorrow' is not a date (ISO 8601" in str(
        refused.value
    )
