"""The default data set as arrays, prepared the way the pipeline prepares it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import Params, TrainConfig, load_params
from components.data.sources import load_source
from components.data.split import split_dataset
from components.training.inputs import spec_for, to_arrays
from components.training.model import ModelSpec
from components.training.torch_train import Arrays, TrainResult

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchData:
    params: Params
    spec: ModelSpec
    train: Arrays
    val: Arrays
    test: Arrays
    train_frame_path: Path


def default_data(workdir: Path) -> BenchData:
    params = load_params(REPO / "params.yaml")
    frame = load_source(params.data).frame
    split = split_dataset(frame, params.split, params.data.label_column)
    spec = spec_for(params, split.train)
    label = params.data.label_column
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "train.parquet"
    split.train.to_parquet(path, index=False)
    return BenchData(
        params,
        spec,
        to_arrays(split.train, spec, label),
        to_arrays(split.val, spec, label),
        to_arrays(split.test, spec, label),
        path,
    )


def accuracy(classifier, data: Arrays) -> float:
    return float((classifier.predict_proba(data.x).argmax(1) == data.y).mean())


def federated_on(data: BenchData, cfg: TrainConfig) -> TrainResult:
    """Flower's simulation on the bench data, evaluated on its test split."""
    from components.training.federated.simulation import run_federated

    return run_federated(
        data.train,
        data.test,
        data.spec,
        cfg,
        train_path=data.train_frame_path,
        label_column=data.params.data.label_column,
    )
