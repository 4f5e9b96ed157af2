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
    group: str | None = None,
    checked: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`group`: the split's group column (speakers held out whole: the card counts
    them per split); `checked`: columns the contract checks but the model does not
    take (a clip's sample rate, length, clipping and level)."""
    kinds = kinds or FeaturesConfig()
    dropped = set(kinds.drop) & set(frame.columns)
    meta = [c for c in (*checked, *([group] if group else [])) if c in frame.columns]

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
        "features": len(frame.columns) - 1 - len(dropped) - len(meta),
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
        "split_by": group or "row",
        "groups": (
            {
                name: int(frame.loc[part.index, group].nunique())
                for name, part in (
                    ("train", split.train),
                    ("val", split.val),
                    ("test", split.test),
                )
            }
            if group
            else None
        ),
        "dvc_raw_md5": raw_md5,
        "columns": columns_card(frame.drop(columns=meta), split, label, kinds),
        "checked_columns": meta,
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
    by = card.get("split_by", "row")
    how = (
        "each row's features"
        if by == "row"
        else f"each row's {by}; every {by} whole in one split"
    )
    if card.get("groups"):
        counts = ", ".join(f"{k} {n}" for k, n in card["groups"].items())
        splits += f" rows; {counts} {by}s"
    columns = _shown_columns(card.get("columns", {}))
    return "\n".join(
        [
            f"# Data card: {card['name']}",
            "",
            f"- **Source**: `{card['source']}`",
            f"- **License**: {card['license']}",
            f"- **Size**: {card['rows']} rows, {card['features']} features, label "
            f"`{card['label_column']}`",
            f"- **Class distribution**: {classes}",
            f"- **Splits** (by a hash of {how}): {splits}",
            *(
                [
                    "- **Checked, not taken by the model**: "
                    + ", ".join(f"`{c}`" for c in card["checked_columns"])
                ]
                if card.get("checked_columns")
                else []
            ),
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
                for name, c in columns.items()
            ),
            "",
            "## Description",
            "",
            card["description"],
            "",
        ]
    )


def _shown_columns(columns: dict[str, dict]) -> dict[str, dict]:
    """The columns' table, a run of plain numeric columns without gaps (a
    spectrogram's 490) as one line: `first ... last (N columns)`."""
    out: dict[str, dict] = {}
    run: list[str] = []

    def flush() -> None:
        if len(run) > 8:
            out[f"{run[0]} ... {run[-1]} ({len(run)} columns)"] = columns[run[0]]
        else:
            out.update({name: columns[name] for name in run})
        run.clear()

    plain = {"kind": "numeric", "missing": 0, "missing_policy": "refuse"}
    for name, c in columns.items():
        if c == plain:
            run.append(name)
            continue
        flush()
        out[name] = c
    flush()
    return out


def write_card(card: dict[str, Any], folder: Path) -> None:
    (folder / "data_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "data_card.md").write_text(card_markdown(card))
