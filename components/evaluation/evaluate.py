"""Stage `evaluate`: test-split metrics, a per-class report and a confusion matrix."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    classification_report,
    confusion_matrix,
)

from components.backends import load_classifier
from components.config import Params
from components.metrics import classification_metrics
from components.stage import exit_with, run_stage, stage_parser
from components.training.inputs import to_arrays

log = logging.getLogger("edgeloop.evaluate")
METRICS = "metrics.json"
CLASS_REPORT = "classification_report.json"
CONFUSION = "confusion_matrix.png"


def evaluate_model(
    model_dir: Path, test: pd.DataFrame, label: str, reports: Path
) -> dict:
    """Write test metrics, per-class report and confusion matrix; return the metrics."""
    classifier = load_classifier(model_dir)
    spec = classifier.spec
    data = to_arrays(test, spec, label)
    pred = classifier.predict_proba(data.x).argmax(axis=1)
    metrics = {f"test_{k}": v for k, v in classification_metrics(data.y, pred).items()}
    names = [str(c) for c in spec.classes]
    reports.mkdir(parents=True, exist_ok=True)
    (reports / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    report = classification_report(
        data.y,
        pred,
        labels=range(len(names)),
        target_names=names,
        output_dict=True,
        zero_division=0,
    )
    (reports / CLASS_REPORT).write_text(json.dumps(report, indent=1) + "\n")
    matrix = confusion_matrix(data.y, pred, labels=np.arange(len(names)))
    fig, ax = plt.subplots(figsize=(6, 6))
    ConfusionMatrixDisplay(matrix, display_labels=names).plot(ax=ax, colorbar=False)
    ax.set_title(f"Test confusion matrix (accuracy {metrics['test_accuracy']:.3f})")
    fig.savefig(reports / CONFUSION, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return metrics


def _body(args: argparse.Namespace, params: Params) -> None:
    prepared = args.prepared or params.paths.prepared
    test = pd.read_parquet(prepared / "test.parquet")
    metrics = evaluate_model(
        args.model or params.paths.model,
        test,
        params.data.label_column,
        (args.reports or params.paths.reports) / "evaluate",
    )
    log.info("test metrics: %s", metrics)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("evaluate", __doc__ or "")
    for name in ("prepared", "model", "reports"):
        parser.add_argument(f"--{name}", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
