"""The optimize stage's record: every variant's measurements (`VariantReport`), what
each device profile gets, written as `variants.json` (read by the pipeline's MLflow
logging and by serving), `report.md` and a trade-off plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from components.training.model import ModelSpec

REPORT = "variants.json"


@dataclass
class VariantReport:
    name: str
    file: str
    size_bytes: int
    gzip_bytes: int
    parameters: int
    macs: int
    accuracy: float
    accuracy_drop: float
    latency_median_ms: float
    latency_p95_ms: float
    estimated_ram_kb: float
    accepted: bool
    reason: str
    deployable_to: list[str] = field(default_factory=list)
    not_deployable: dict[str, str] = field(default_factory=dict)
    # Median single-sample ms in each deployable profile's runtime and threads.
    latency_ms_by_profile: dict[str, float] = field(default_factory=dict)
    # The paired comparison with the framework model on the same test rows
    # (components/optimization/optimize.py PairedDrop).
    rows_worse: int = 0
    rows_better: int = 0
    drop_p_value: float = 1.0
    # A TFLM file's tensor arena as TFLM's recording allocator measured it, its
    # operators (TFLite builtins), or why it could not be measured.
    arena_bytes: int | None = None
    arena_error: str = ""
    ops: list[str] = field(default_factory=list)


def write_report(  # noqa: PLR0917 - the report's parts
    reference: float,
    reports: list[VariantReport],
    ship: str,
    folder: Path,
    spec: ModelSpec | None = None,
    per_profile: dict[str, dict] | None = None,
) -> None:
    """The variants and, from the model's spec, what their files take: the raw
    feature columns in order and their fitted encoding (categories by index, gaps
    as NaN; components/data/features.py), which serving reads with the file."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "reference_accuracy": reference,
        "ship_variant": ship,
        "ship_per_profile": per_profile or {},
        "variants": [asdict(r) for r in reports],
        "inputs": {
            "feature_columns": spec.feature_columns if spec else None,
            "encoding": spec.encoding if spec else None,
        },
    }
    (folder / REPORT).write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "| variant | KB | gzip KB | arena KB | params | MACs | accuracy | drop (pt) | "
        "median ms | p95 ms | gate | deployable to |",
        "|" + "---|" * 12,
    ]
    for r in reports:
        lines.append(
            f"| {r.name}{' (ships)' if r.name == ship else ''} | "
            f"{r.size_bytes / 1024:.1f} | {r.gzip_bytes / 1024:.1f} | "
            f"{'-' if r.arena_bytes is None else f'{r.arena_bytes / 1024:.1f}'} | "
            f"{r.parameters} | "
            f"{r.macs} | {r.accuracy:.4f} | {r.accuracy_drop * 100:.2f} | "
            f"{r.latency_median_ms:.4f} | {r.latency_p95_ms:.4f} | "
            f"{'pass' if r.accepted else 'REJECTED: ' + r.reason} | "
            f"{', '.join(r.deployable_to) or '-'} |"
        )
    problems = [
        f"- {r.name} not deployable to {p}: {why}"
        for r in reports
        for p, why in r.not_deployable.items()
    ]
    profiles = [
        f"- {p}: **{c['variant'] or 'nothing'}** ({c['why']}; measured ms: "
        + ", ".join(f"{v} {ms:.4f}" for v, ms in c["measured_ms"].items())
        + ")"
        for p, c in (per_profile or {}).items()
    ]
    (folder / "report.md").write_text(
        f"# Optimized variants (reference accuracy {reference:.4f})\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(problems)
        + "\n\n## What each device profile gets\n\n"
        + "\n".join(profiles)
        + "\n"
    )
    _plot(reference, reports, folder / "tradeoff.png")


def _plot(reference: float, reports: list[VariantReport], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in reports:
        for ax, x in ((axes[0], r.size_bytes / 1024), (axes[1], r.latency_median_ms)):
            ax.scatter(x, r.accuracy, marker="o" if r.accepted else "x")
            ax.annotate(r.name, (x, r.accuracy), fontsize=8)
    for ax, label in ((axes[0], "file size (KB)"), (axes[1], "median latency (ms)")):
        ax.axhline(reference, linestyle="--", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
    fig.suptitle("Variants: accuracy against size and latency (x = rejected)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
