"""Drift of one window against the training reference, with Evidently's metrics.

Two kinds of window, one check:

- **serving**: the last logged predictions, row by row (the features and the
  predicted class), against the training split (its features and labels);
- **a device cohort**: raw inputs stay on the devices, so each telemetry report is
  one row of per-feature batch means and standard deviations and predicted-class
  shares; the reference is the same summary of random training batches of the
  devices' batch size. A summary of a batch of n varies sqrt(n) times less than one
  input, so the per-column threshold is scaled by sqrt(n): the same effect size, in
  units of one input's spread, as the serving check (see `threshold_scale`).

Columns are compared with `monitoring.num_method` (default Wasserstein distance,
normed by the reference's spread: an effect size, so the verdict does not flip with
window size as p-value tests do), the predicted class with Jensen-Shannon distance,
and the window drifts when the drifted share reaches `monitoring.drift_share`
(Evidently's `DriftedColumnsCount`).

The verdicts are computed here, vectorised over the window's columns with the same
statistics Evidently computes (`window_drift`: equal to its `ValueDrift` and
`DriftedColumnsCount` results, a test checks), in milliseconds; the Evidently
report, whose per-column widgets cost seconds, is built only when the dashboard
gets a snapshot (`check(..., snapshot=True)`; the monitor asks for one when a
target's status changes or `monitoring.snapshot_interval_s` has passed).

The report holds what `DataDriftPreset` generates (`DriftedColumnsCount` and one
`ValueDrift` per column, with their tests and widgets) but not the preset itself:
its summary table recomputes every column's drift a second time with Evidently's
legacy engine (a device window of 138 columns: 27 s with the preset, 12.5 s without,
the same verdicts).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from evidently import (
    BinaryClassification,
    DataDefinition,
    Dataset,
    MulticlassClassification,
    Report,
)
from evidently.core.report import Snapshot
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.core import ColumnType
from evidently.metrics import (
    DatasetMissingValueCount,
    DriftedColumnsCount,
    MeanValue,
    RowCount,
    UniqueValueCount,
    ValueDrift,
)
from evidently.presets import ClassificationPreset
from sklearn.exceptions import UndefinedMetricWarning

from components.config import MonitoringConfig
from components.data import speech
from components.data.features import ColumnEncoding, encode

log = logging.getLogger("edgeloop.monitoring")

PREDICTION = "prediction"
# A window's rows are indexed by arrival: a device window's by its device, the
# report's id and its arrival time; a serving window's by the row's logged time.
DEVICE = "device_id"
REPORT = "report"
ARRIVED = "arrived"


@dataclass(frozen=True)
class DriftResult:
    target: str
    rows: int
    drift_share: float
    drifted_columns: list[str]
    columns: int
    drifted: bool  # the window as a whole (share >= monitoring.drift_share)
    # None when the window was too small to judge, or no snapshot was asked for
    snapshot: Snapshot | None
    # Device windows: the devices in it, and those whose own reports drift.
    devices: int | None = None
    devices_drifted: int | None = None
    judged: bool = True  # False: too small a window (or too few devices)

    def summary(self) -> dict:
        votes = {}
        if self.devices is not None:
            votes = {"devices": self.devices, "devices_drifted": self.devices_drifted}
        return {
            "target": self.target,
            "rows": self.rows,
            "drift_share": round(self.drift_share, 4),
            "drifted": self.drifted,
            "drifted_columns": self.drifted_columns[:20],
        } | votes


def serving_frames(
    train: pd.DataFrame,
    log: pd.DataFrame,
    window: int,
    *,
    label_column: str,
    encoding: Sequence[ColumnEncoding] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames for the serving log (features by position; the
    training rows' label column against the log's predicted `label`). Dates are
    left out (`undated`)."""
    features = [c for c in train.columns if c != label_column]
    reference = train[features].copy()
    reference.columns = [f"f{i}" for i in range(len(features))]
    reference[PREDICTION] = train[label_column].astype(str).to_numpy()
    recent = log.sort_values("ts").tail(window) if "ts" in log else log.tail(window)
    current = recent[[f"f{i}" for i in range(len(features))]].reset_index(drop=True)
    current[PREDICTION] = recent["label"].astype(str).to_numpy()
    order = (
        recent["ts"].to_numpy(np.float64)
        if "ts" in recent
        else np.arange(len(recent), dtype=np.float64)
    )
    current.index = pd.Index(order, name=ARRIVED)
    return undated(reference, encoding), undated(current, encoding)


@dataclass(frozen=True)
class DeviceReference:
    """The training rows as a cohort's devices would report them: batch summaries
    (`device_frames`), computed once and shared by every cohort that has them as
    its reference."""

    frame: pd.DataFrame  # mean_*, std_*, share_* of random training batches
    kinds: pd.DataFrame | None  # a table's category shares and gaps per batch
    names: list[str]  # the summarised features (f0..; a keyword spotter's 12)
    classes: list[str]


def device_reference(
    train: pd.DataFrame,
    *,
    batch: int,
    reference_batches: int,
    label_column: str,
    encoding: Sequence[ColumnEncoding] = (),
    seed: int = 0,
) -> DeviceReference:
    """`reference_batches` random training batches of `batch` rows, summarised as
    a device reports them (see `device_frames`)."""
    features = [c for c in train.columns if c != label_column]
    classes = sorted(train[label_column].astype(str).unique())
    rng = np.random.default_rng(seed)
    x = (
        encode(train, list(encoding))
        if encoding
        else train[features].to_numpy(np.float64)
    ).astype(np.float64)
    y = train[label_column].astype(str).to_numpy()
    names = [f"f{i}" for i in range(len(features))]
    if features == speech.feature_names():  # a keyword spotter's MFCC rows
        # as its devices report them: each row in 12 numbers (audio.py)
        x, names = speech.row_summaries(x), list(speech.SUMMARY_NAMES)
    codes = {k: i for i, k in enumerate(classes)}
    y_codes = np.array([codes[v] for v in y])
    rows, kinds = [], []
    for _ in range(reference_batches):
        pick = rng.integers(0, len(x), batch)
        shares = np.bincount(y_codes[pick], minlength=len(classes)) / batch
        mean, std = _present_stats(x[pick])
        rows.append(np.concatenate([mean, std, shares]))
        if encoding:
            kinds.append(table_columns(x[pick], encoding))
    columns = (
        [f"mean_{name}" for name in names]
        + [f"std_{name}" for name in names]
        + [f"share_{k}" for k in classes]
    )
    return DeviceReference(
        pd.DataFrame(rows, columns=columns),
        pd.DataFrame(kinds) if encoding else None,
        names,
        classes,
    )


def device_frames(
    train: pd.DataFrame,
    reports: list[dict],
    *,
    batch: int,
    reference_batches: int,
    label_column: str,
    encoding: Sequence[ColumnEncoding] = (),
    seed: int = 0,
    prepared: DeviceReference | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of batch summaries (see the module doc); with
    the model's `encoding`, of the rows as the model (and so the device) takes
    them: a category by its index; dates left out (`undated`). A keyword
    spotter's rows (the MFCC front end's columns) by their 12-number summaries, as
    its devices report them (edge_fleet/device/audio.py `row_summaries`).
    `prepared`: the training rows' summaries already made (`device_reference`)."""
    prepared = prepared or device_reference(
        train,
        batch=batch,
        reference_batches=reference_batches,
        label_column=label_column,
        encoding=encoding,
        seed=seed,
    )
    reference, classes = prepared.frame, prepared.classes
    columns = list(reference.columns)
    kept = summarising(reports, len(prepared.names))
    current = pd.DataFrame(
        [
            list(r["feature_stats"]["mean"])
            + list(r["feature_stats"]["std"])
            + [r["class_counts"].get(k, 0) / max(r["inferences"], 1) for k in classes]
            for r in kept
        ],
        columns=columns,
        # the device that sent each report (each is one vote: `check`), the
        # report's id and arrival (the sequential test takes them in order)
        index=pd.MultiIndex.from_arrays(
            [
                [str(r.get("device_id", "")) for r in kept],
                [int(r.get("id", len(kept) - i)) for i, r in enumerate(kept)],
                [_arrival(r) for r in kept],
            ],
            names=[DEVICE, REPORT, ARRIVED],
        ),
    )
    reported = [reported_table_columns(r["feature_stats"], encoding) for r in kept]
    if encoding and kept and all(r is not None for r in reported):
        # A category by its shares and a column by its gaps, not the mean of an
        # index (agents before these were reported: the index mean stays).
        categorical = [
            f"{p}f{j}"
            for j, c in enumerate(encoding)
            if c.kind == "categorical"
            for p in ("mean_", "std_")
        ]
        reference = reference.drop(columns=categorical).join(prepared.kinds)
        extra = pd.DataFrame(reported, index=current.index)
        current = current.drop(columns=categorical).join(extra)
    return undated(reference, encoding), undated(current, encoding)


def _arrival(report: dict) -> float:
    """When the fleet server received the report (epoch seconds); NaN unknown."""
    received = report.get("received_at")
    if received is None:
        return float("nan")
    return pd.Timestamp(received).timestamp()


def table_columns(
    x: np.ndarray, encoding: Sequence[ColumnEncoding]
) -> dict[str, float]:
    """One batch of a table's encoded rows as a device reports it (edge_fleet/
    device/inference.py `feature_stats` with the model's inputs): each category's
    share of a categorical column's present values (`cat_f0_1`), and the share of
    gaps of each column whose policy fills them (`gaps_f2`)."""
    out = {}
    for j, column in enumerate(encoding):
        values = x[:, j]
        if column.kind == "categorical":
            assert column.categories is not None
            present = values[~np.isnan(values)].astype(np.int64)
            counts = np.bincount(
                present[(present >= 0) & (present < len(column.categories))],
                minlength=len(column.categories),
            )
            total = max(int(counts.sum()), 1)
            out |= {f"cat_f{j}_{k}": c / total for k, c in enumerate(counts)}
        if not np.isnan(column.fill):
            out[f"gaps_f{j}"] = float(np.isnan(values).mean())
    return out


def reported_table_columns(
    stats: dict, encoding: Sequence[ColumnEncoding]
) -> dict[str, float] | None:
    """`table_columns` from a report's feature_stats; None: a report without
    them (an agent before them, or a model without `edgeloop.inputs`)."""
    missing, shares = stats.get("missing"), stats.get("shares")
    if missing is None or shares is None or len(missing) != len(encoding):
        return None
    out = {}
    for j, column in enumerate(encoding):
        if column.kind == "categorical":
            assert column.categories is not None
            values = shares.get(str(j))
            if values is None or len(values) != len(column.categories):
                return None
            out |= {f"cat_f{j}_{k}": float(v) for k, v in enumerate(values)}
        if not np.isnan(column.fill):
            out[f"gaps_f{j}"] = float(missing[j])
    return out


def undated(frame: pd.DataFrame, encoding: Sequence[ColumnEncoding]) -> pd.DataFrame:
    """The frame without the columns of `datetime` features (`f3`, `mean_f3`,
    `std_f3`): a timestamp moves on by itself, so against the training rows it
    always drifts; the model sees only its calendar parts, which are computed
    inside the file and not reported."""
    dated = [i for i, c in enumerate(encoding) if c.kind == "datetime"]
    names = {f"{p}f{i}" for i in dated for p in ("", "mean_", "std_")}
    return frame.drop(columns=[c for c in frame.columns if c in names])


def _present_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per column over the present values, as a device reports them
    (edge_fleet/device/inference.py `feature_stats`): a column with no value in
    the batch is 0."""
    filled = np.where(np.isnan(x).all(axis=0), 0.0, x)
    return np.nanmean(filled, axis=0), np.nanstd(filled, axis=0)


def summarising(reports: list[dict], features: int) -> list[dict]:
    """The reports that summarise `features` features with finite numbers. The
    fleet server refuses any other since it checks reports; one stored before
    would otherwise fail the whole window (a frame of unequal rows)."""
    kept = []
    for report in reports:
        stats = report.get("feature_stats") or {}
        values = [*stats.get("mean", []), *stats.get("std", [])]
        if len(values) == 2 * features and np.isfinite(values).all():
            kept.append(report)
    if len(kept) < len(reports):
        log.warning(
            "left out %d of %d device reports: expected %d finite feature means "
            "and standard deviations",
            len(reports) - len(kept),
            len(reports),
            features,
        )
    return kept


def check(
    target: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitoringConfig,
    *,
    metadata: dict[str, str] | None = None,
    threshold_scale: float = 1.0,
    min_rows: int | None = None,
    by_device: bool = False,
    snapshot: bool = True,
) -> DriftResult:
    """Drift of each column and of the window (module doc); too small a window is
    no verdict.
    `threshold_scale`: sqrt(batch size) for device windows (module doc); `min_rows`:
    the smallest window judged (default `monitoring.serving_min_rows`);
    `by_device`: the rows are reports indexed by device (`device_frames`), and
    the window drifts only when at least `monitoring.min_devices` devices' own
    reports drift too: a device is one vote, however many reports it sends;
    `snapshot`: also run the Evidently report for the dashboard (seconds; the
    verdicts are the same without it)."""
    devices = int(current.index.get_level_values(0).nunique()) if by_device else None
    if len(current) < (cfg.serving_min_rows if min_rows is None else min_rows) or (
        devices is not None and devices < cfg.min_devices
    ):
        return DriftResult(
            target, len(current), 0.0, [], 0, False, None, devices, 0, judged=False
        )
    categorical = categorical_columns(reference, current)
    share, drifted, window_drifted = window_drift(
        reference, current, categorical, cfg, threshold_scale
    )
    voted = None
    if devices is not None:
        voted = drifting_devices(reference, current, cfg, threshold_scale)
        if window_drifted and voted < cfg.min_devices:
            log.info(
                "%s: the window drifts but %d of %d devices do (at least %d must)",
                target,
                voted,
                devices,
                cfg.min_devices,
            )
            window_drifted = False
    report = None
    if snapshot:
        report = evidently_snapshot(
            target,
            reference,
            current,
            categorical,
            cfg,
            threshold_scale=threshold_scale,
            metadata=metadata,
        )
    return DriftResult(
        target,
        len(current),
        share,
        drifted,
        len(current.columns),
        window_drifted,
        report,
        devices,
        voted,
    )


def categorical_columns(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """The predicted class, and a user's text or yes/no columns (`features:`):
    compared as categories (Jensen-Shannon distance of their shares)."""
    return [
        c
        for c in current.columns
        if c == PREDICTION
        or (c in reference and not pd.api.types.is_numeric_dtype(reference[c]))
    ]


def evidently_snapshot(
    target: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: list[str],
    cfg: MonitoringConfig,
    *,
    threshold_scale: float,
    metadata: dict[str, str] | None,
) -> Snapshot:
    """The window's Evidently report for the dashboard: each column's drift (the
    same statistics as `window_drift`), data quality and the prediction shares."""
    numerical = [c for c in current.columns if c not in categorical]
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=categorical
    )
    report = Report(
        [
            *_drift_metrics(numerical, categorical, cfg, threshold_scale),
            *_quality_and_predictions(current),
        ],
        metadata={"target": target} | (metadata or {}),
        tags=[target],
        include_tests=True,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return report.run(
            Dataset.from_pandas(
                current.reset_index(drop=True), data_definition=definition
            ),
            Dataset.from_pandas(reference, data_definition=definition),
        )


def column_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: Sequence[str],
    cfg: MonitoringConfig,
    threshold_scale: float = 1.0,
) -> pd.DataFrame:
    """Each column's drift score and verdict as Evidently's `ValueDrift` computes
    them: numerical columns by `monitoring.num_method` at its threshold times
    `threshold_scale` (the normed Wasserstein distance vectorised over all
    columns at once when it is the method and no value is missing; any other
    method or column through Evidently's own stat test), categorical ones by
    Jensen-Shannon distance at `monitoring.num_threshold`."""
    numerical = [c for c in current.columns if c not in categorical]
    threshold = cfg.num_threshold * threshold_scale
    out = pd.DataFrame(
        {"score": np.nan, "drifted": False}, index=pd.Index(list(current.columns))
    )
    ref = reference[numerical].to_numpy(np.float64)
    cur = current[numerical].to_numpy(np.float64)
    fast = np.isfinite(ref).all(axis=0) & np.isfinite(cur).all(axis=0)
    fast &= cfg.num_method == "wasserstein" and len(ref) > 0 and len(cur) > 0
    if fast.any():
        norm = np.maximum(ref[:, fast].std(axis=0), 0.001)
        columns = [c for c, ok in zip(numerical, fast, strict=True) if ok]
        scores = wasserstein_columns(ref[:, fast], cur[:, fast]) / norm
        out.loc[columns, "score"] = scores
        out.loc[columns, "drifted"] = scores >= threshold
    rest = [
        (c, "num", cfg.num_method, threshold)
        for c, ok in zip(numerical, fast, strict=True)
        if not ok
    ]
    rest += [(c, "cat", "jensenshannon", cfg.num_threshold) for c in categorical]
    for column, kind, method, limit in rest:
        r, c = (
            frame[column].replace([-np.inf, np.inf], np.nan).dropna()
            for frame in (reference, current)
        )
        if len(r) and len(c):
            column_type = (
                ColumnType.Categorical if kind == "cat" else ColumnType.Numerical
            )
            result = get_stattest(r, c, kind, method)(r, c, column_type, limit)
            out.loc[column, ["score", "drifted"]] = [result.drift_score, result.drifted]
    return out


def wasserstein_columns(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The first Wasserstein distance of each column's two samples (rows x
    columns arrays), all columns at once: the area between the two empirical
    distribution functions, as `scipy.stats.wasserstein_distance` computes it for
    one column."""
    n, m = len(reference), len(current)
    both = np.concatenate([reference, current])
    order = np.argsort(both, axis=0, kind="stable")
    values = np.take_along_axis(both, order, axis=0)
    gap = np.cumsum(np.where(order < n, 1.0 / n, -1.0 / m), axis=0)[:-1]
    return (np.abs(gap) * np.diff(values, axis=0)).sum(axis=0)


def window_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: Sequence[str],
    cfg: MonitoringConfig,
    threshold_scale: float,
) -> tuple[float, list[str], bool]:
    """Evidently's verdicts without its report: the drifted share, the drifted
    columns (`column_drift`) and whether the share reaches `monitoring.drift_share`
    (its `DriftedColumnsCount` test)."""
    columns = column_drift(reference, current, categorical, cfg, threshold_scale)
    drifted = list(columns.index[columns["drifted"].astype(bool)])
    share = len(drifted) / max(len(columns), 1)
    return share, drifted, share >= cfg.drift_share


def drifting_devices(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitoringConfig,
    threshold_scale: float,
) -> int:
    """The devices whose own reports drift as the window's test judges it: the
    same statistics (`window_drift`) on each device's reports."""
    categorical = categorical_columns(reference, current)
    return sum(
        window_drift(reference, rows, categorical, cfg, threshold_scale)[2]
        for _, rows in current.groupby(level=0)
    )


def _drift_metrics(
    numerical: list[str],
    categorical: list[str],
    cfg: MonitoringConfig,
    threshold_scale: float,
) -> list:
    """What DataDriftPreset generates: the drifted share, then each column's drift
    (numerical columns by `num_method`, the predicted class by Jensen-Shannon)."""
    num = {"method": cfg.num_method, "threshold": cfg.num_threshold * threshold_scale}
    cat = {"method": "jensenshannon", "threshold": cfg.num_threshold}
    return [
        DriftedColumnsCount(
            num_method=num["method"],
            num_threshold=num["threshold"],
            cat_method=cat["method"],
            cat_threshold=cat["threshold"],
            drift_share=cfg.drift_share,
        ),
        *(ValueDrift(column=c, **num) for c in numerical),
        *(ValueDrift(column=c, **cat) for c in categorical),
    ]


def _quality_and_predictions(current: pd.DataFrame) -> list:
    """Next to drift, for the dashboards: data quality (rows, missing values) and the
    prediction distribution (serving: the predicted class's shares; devices: each
    class's mean share in the window's reports). A handful of cheap metrics, not
    DataSummaryPreset, which costs ~12 s per device window here."""
    metrics: list = [RowCount(), DatasetMissingValueCount()]
    if PREDICTION in current.columns:
        metrics.append(UniqueValueCount(column=PREDICTION))
    metrics += [MeanValue(column=c) for c in current.columns if c.startswith("share_")]
    return metrics


def snapshot_verdicts(snapshot: Snapshot) -> tuple[float, list[str], bool]:
    """Evidently's own verdicts (the report runs with its tests): the drifted share,
    the columns whose drift test failed, and whether the share test failed."""
    data = snapshot.dict()
    share = next(
        float(m["value"]["share"])
        for m in data["metrics"]
        if m["config"]["type"].endswith(":DriftedColumnsCount")
    )
    drifted, window_drifted = [], False
    for test in data["tests"]:
        params = test["metric_config"]["params"]
        failed = str(test["status"]).endswith("FAIL")
        if params["type"].endswith(":ValueDrift") and failed:
            drifted.append(params["column"])
        elif params["type"].endswith(":DriftedColumnsCount"):
            window_drifted = failed
    return share, drifted, window_drifted


@dataclass(frozen=True)
class PerformanceResult:
    target: str
    rows: int
    accuracy: float
    reference_accuracy: float
    degraded: bool  # Evidently's accuracy test against the reference failed
    snapshot: Snapshot

    def summary(self) -> dict:
        return {
            "delayed_label_rows": self.rows,
            "accuracy_delayed": round(self.accuracy, 4),
            "accuracy_reference": round(self.reference_accuracy, 4),
            "performance_degraded": self.degraded,
        }


def performance(
    target: str,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    label_column: str,
    metadata: dict[str, str] | None = None,
) -> PerformanceResult:
    """Evidently's ClassificationPreset on delayed labels: `current` and `reference`
    (the champion's test split) each hold the label column and the champion's
    `prediction`. Its accuracy test is Evidently's default against the reference
    (within 20%)."""
    labels = pd.concat([current[label_column], reference[label_column]]).astype(str)
    if labels.nunique() == 2:
        # Two classes: Evidently judges them as a binary task, whose positive
        # label is 1 unless named (KeyError: 1 on 'benign'/'malignant'): the
        # reference's rarer class is the positive one.
        rarer = str(reference[label_column].astype(str).value_counts().index[-1])
        task = BinaryClassification(
            target=label_column, prediction_labels=PREDICTION, pos_label=rarer
        )
    else:
        task = MulticlassClassification(
            target=label_column, prediction_labels=PREDICTION
        )
    definition = DataDefinition(
        classification=[task], categorical_columns=[label_column, PREDICTION]
    )

    def dataset(frame: pd.DataFrame) -> Dataset:
        labels = frame[[label_column, PREDICTION]].astype(str).reset_index(drop=True)
        return Dataset.from_pandas(labels, data_definition=definition)

    report = Report(
        [ClassificationPreset()],
        metadata={"target": target, "check": "delayed labels"} | (metadata or {}),
        tags=[target, "performance"],
        include_tests=True,
    )
    with warnings.catch_warnings():
        # A model that never predicts some class has no precision for it: expected
        # on drifted inputs, and the report says so per class.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = report.run(dataset(current), dataset(reference))
    data = snapshot.dict()
    degraded = any(
        t["metric_config"]["params"]["type"].endswith(":Accuracy")
        and str(t["status"]).endswith("FAIL")
        for t in data["tests"]
    )
    accuracy = next(
        float(m["value"])
        for m in data["metrics"]
        if m["config"]["type"].endswith(":Accuracy")
    )
    hits = reference[label_column].astype(str) == reference[PREDICTION].astype(str)
    return PerformanceResult(
        target, len(current), accuracy, float(hits.mean()), degraded, snapshot
    )
