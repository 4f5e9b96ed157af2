"""The data card (the book's data transparency): what the data is, where it came from,
how it is split, and which DVC version it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import FeaturesConfig
from components.data.dates import instants
from components.data.split import SplitResult


def build_card(
    info: dict[str, Any],
    frame: pd.DataFrame,
    split: SplitResult,
    label: str,
    raw_md5: str,
    *,
    kinds: FeaturesConfig | None = None,
) -> dict[str, Any]:
    kinds = kinds or FeaturesConfig()
    dropped = set(kinds.drop) & set(frame.columns)

    def dist(df: pd.DataFrame) -> dict[str, int]:
        counts = df[label].value_counts().sort_index()
        return {str(k): int(v) for k, v in counts.items()}

    return {
        "name": info["name"],
        "source": info["source"],
        "description": info["description"],
        "license": info.get("license") or "not stated",
        "known_limitations": info.get("known_limitations") or "not stated",
        "rows": len(frame),
        "features": len(frame.columns) - 1 - len(dropped),
        "label_column": label,
        "class_distribution": dist(frame),
        "splits": {
            name: {"rows": len(df), "class_distribution": dist(df)}
            for name, df in (
                ("train", split.train),
                ("val", split.val),
                ("test", split.test),
            )
        },
        "dvc_raw_md5": raw_md5,
        "columns": columns_card(frame, split, label, kinds),
        # labelled files from the data set's incoming folder in this version (paths
        # in the folder), and those set aside in quarantine (not this data set's)
        "incoming_files": list(info.get("incoming_files", [])),
        "quarantined_incoming_files": list(info.get("quarantined_incoming_files", [])),
    }


def columns_card(
    frame: pd.DataFrame, split: SplitResult, label: str, kinds: FeaturesConfig
) -> dict[str, dict[str, Any]]:
    """Per column: its kind, its gaps in this version and what fills them, for a
    category its values (declared, or learned from the training split), for a
    date the parts the model takes and the range seen."""
    out: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        if name == label:
            continue
        if name in kinds.drop:
            out[name] = {"kind": "dropped"}
            continue
        spec = kinds.spec(name)
        entry: dict[str, Any] = {
            "kind": spec.kind,
            "missing": int(frame[name].isna().sum()),
            "missing_policy": spec.missing,
        }
        if spec.kind == "categorical":
            learned = sorted(split.train[name].dropna().astype(str).unique())
            entry["categories"] = (
                [str(v) for v in spec.values] if spec.values != "learned" else learned
            )
            entry["categories_from"] = (
                "declared" if spec.values != "learned" else "training split"
            )
        if spec.kind == "datetime" and spec.parts:
            at = instants(frame[name]).dropna()
            entry["parts"] = list(spec.parts)
            if not at.empty:
                entry["range"] = [at.min().isoformat(), at.max().isoformat()]
        out[name] = entry
    return out


def card_markdown(card: dict[str, Any]) -> str:
    classes = ", ".join(f"{k}: {v}" for k, v in card["class_distribution"].items())
    splits = ", ".join(f"{k} {v['rows']}" for k, v in card["splits"].items())
    return "\n".join(
        [
            f"# Data card: {card['name']}",
            "",
            f"- **Source**: `{card['source']}`",
            f"- **License**: {card['license']}",
            f"- **Size**: {card['rows']} rows, {card['features']} features, label "
            f"`{card['label_column']}`",
            f"- **Class distribution**: {classes}",
            f"- **Splits** (by a hash of each row's features): {splits}",
            f"- **DVC md5 of the raw batch**: `{card['dvc_raw_md5']}`",
            f"- **Known limitations**: {card['known_limitations']}",
            "- **Labelled rows added from the incoming folder**: "
            + (", ".join(f"`{f}`" for f in card["incoming_files"]) or "none"),
            "- **Incoming files set aside in quarantine** (other columns, unreadable): "
            + (
                ", ".join(f"`{f}`" for f in card.get("quarantined_incoming_files", []))
                or "none"
            ),
            "",
            "## Columns",
            "",
            "| column | kind | gaps | gap policy | categories or date parts |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {c['kind']} | {c.get('missing', '')} | "
                f"{c.get('missing_policy', '')} | "
                f"{', '.join(c.get('categories', c.get('parts', [])))} |"
                for name, c in card.get("columns", {}).items()
            ),
            "",
            "## Description",
            "",
            card["description"],
            "",
        ]
    )


def write_card(card: dict[str, Any], folder: Path) -> None:
    (folder / "data_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "data_card.md").write_text(card_markdown(card))
