"""`edgeloop data describe PATH`: a proposed `data:`, `validation:` and `features:`
section for a user's table, inferred once from the table and written for the user
to review (the way a profiler proposes expectations: Great Expectations 1.x no
longer ships its profilers, so the inference is pandas'). Each choice carries a
comment with what was measured."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from components.config.data import SplitConfig
from components.config.features import FeaturesConfig
from components.data.dates import instants
from components.data.features import FALSE, TRUE, encode_column, fit_encoding
from components.data.sources import read_table
from components.errors import ConfigError

MAX_LISTED_CATEGORIES = 50
GATE_NOTE = "a linear model on the network's inputs"  # how the gate's comment starts


def propose(path: Path, label: str) -> str:
    """The proposed sections as params.yaml text, with comments."""
    frame = read_table(path)
    if label not in frame.columns:
        raise ConfigError(
            f"{path}: no label column {label!r}; columns: {list(frame.columns)}"
        )
    labels = frame[label].dropna()
    values = sorted(labels.unique().tolist(), key=str)
    shares = labels.value_counts(normalize=True)
    kl = float(sum(p * math.log(p * len(shares)) for p in shares))
    features = frame.drop(columns=label)
    duplicates = float(features.duplicated(keep=False).mean()) if len(features) else 0.0
    lines = [f"# proposed by `edgeloop data describe {path} --label {label}`: review"]
    source = Path("data/sources") / path.name  # paths.sources: DVC watches it
    if path.resolve() != source.resolve():
        lines.append(f"# copy {path} to {source} (a DVC dependency of prepare)")
    lines += _block(
        "data",
        {"name": _name(path), "source": source.as_posix(), "label_column": label},
    )
    lines += _block(
        "validation",
        {
            "labels": [v if isinstance(v, int) else str(v) for v in values],
            "min_rows": max(1, min(100, len(frame) // 2)),
            # measured, with room for a new batch's wobble
            "max_class_kl_divergence": round(max(0.05, 1.5 * kl + 0.01), 3),
            "max_duplicate_fraction": round(min(0.9, 2 * duplicates), 3),
        },
    )
    measured = {str(k): round(float(v), 3) for k, v in shares.items()}
    lines.append(
        f"  # class shares {measured}, KL from uniform {kl:.3f}; "
        f"{100 * duplicates:.1f}% of rows repeat another's features"
    )
    columns, drop, notes = _features(frame, label)
    lines += _block("features", {"columns": columns, "drop": drop})
    base = baseline(frame, label, proposed_features(frame, label))
    if base is not None:
        lines += _block(
            "registry", {"gates": {"min_test_accuracy": base.min_test_accuracy}}
        )
        lines.append(f"  # {base.note}")
    return "\n".join(lines + ["# what was measured, per column:", *notes]) + "\n"


def _features(frame: pd.DataFrame, label: str) -> tuple[dict, list[str], list[str]]:
    """Each column's proposed spec (plain numeric ones left out), the columns
    dropped, and a note per column of what was measured."""
    columns, drop, notes = {}, [], []
    for name in frame.columns:
        if name == label:
            continue
        spec, note = _column(frame[name])
        notes.append(f"#   {name}: {note}")
        if spec is None:
            drop.append(name)
        elif spec:
            columns[name] = spec
    return columns, drop, notes


def proposed_features(frame: pd.DataFrame, label: str) -> FeaturesConfig:
    """The `features:` section `describe` proposes for the table."""
    columns, drop, _ = _features(frame, label)
    return FeaturesConfig.model_validate({"columns": columns, "drop": drop})


@dataclass(frozen=True)
class Baseline:
    """The gate proposed for a table: the cross-validated accuracy of a linear
    model on the network's own inputs (the floor any model of ours should clear),
    and of a tree ensemble on the same columns (how much the table allows)."""

    accuracy: float  # the linear model's: the gate is proposed from it
    trees: float  # HistGradientBoosting's: said, not gated on
    folds: int
    test_rows: int
    min_test_accuracy: float

    @property
    def note(self) -> str:
        return (
            f"{GATE_NOTE} (scikit-learn "
            f"LogisticRegression: categories one-hot, gaps filled and flagged, "
            f"standardized; {self.folds}-fold cross-validation) reached "
            f"{self.accuracy:.3f}; the gate is the low end of its Wilson interval "
            f"(z = 2) on a {self.test_rows}-row test split: a model as good as a "
            f"linear one passes. Trees (HistGradientBoosting) reached "
            f"{self.trees:.3f}: what the table allows"
        )


def baseline(
    frame: pd.DataFrame,
    label: str,
    features: FeaturesConfig,
    test_share: float = SplitConfig().test,
    max_rows: int = 20_000,
) -> Baseline | None:
    """The table's cross-validated baselines and the `min_test_accuracy` they
    suggest; None where a class has fewer than two rows (no stratified fold),
    there is one class only, or no column is an input.

    The gate comes from the linear model, not the trees: the network reads the
    same one-hot, filled and standardized inputs and contains a linear model, so
    a trained network that falls below it is broken, while trees can split an
    integer code (gapminder's `iso_num`: 0.986 against the network's 0.662) in
    ways an MLP on standardized numbers does not learn."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = frame.dropna(subset=[label])
    if len(frame) > max_rows:
        frame = frame.sample(max_rows, random_state=0)
    y = frame[label].astype(str).to_numpy()
    folds = min(5, int(pd.Series(y).value_counts().min()))
    names = [c for c in frame.columns if c != label and c not in features.drop]
    if folds < 2 or len(set(y)) < 2 or not names:
        return None
    x, categorical = _baseline_inputs(frame, names, features)
    numeric = [i for i in range(x.shape[1]) if i not in categorical]
    inputs = ColumnTransformer(
        [
            (
                "categories",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            ),
            ("numbers", SimpleImputer(strategy="median", add_indicator=True), numeric),
        ]
    )
    linear = make_pipeline(inputs, StandardScaler(), LogisticRegression(max_iter=5000))
    trees = HistGradientBoostingClassifier(
        categorical_features=categorical or None, random_state=0
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    accuracy = float(cross_val_score(linear, x, y, cv=cv).mean())
    tree_accuracy = float(cross_val_score(trees, x, y, cv=cv).mean())
    test_rows = max(1, round(test_share * len(frame)))
    gate = math.floor(100 * wilson_low(accuracy, test_rows)) / 100
    return Baseline(accuracy, tree_accuracy, folds, test_rows, gate)


def wilson_low(accuracy: float, rows: int, z: float = 2.0) -> float:
    """The lower end of the Wilson score interval (z standard errors) of an
    accuracy measured on `rows` rows: where a model as good as `accuracy` lands
    on a test split that small, but for about 1 time in 40. Unlike the plain
    standard error it does not collapse to no margin at all at 1.0."""
    n, p = rows, accuracy
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _baseline_inputs(
    frame: pd.DataFrame, names: list[str], features: FeaturesConfig
) -> tuple[np.ndarray, list[int]]:
    """The columns as the model reads them (components/data/features.py), a date
    by its parts; the categorical ones' positions (a tree splits them as sets)."""
    encoding = fit_encoding(frame, names, features)
    columns, categorical = [], []
    for column in encoding:
        values = frame[column.name]
        if column.kind == "datetime":
            at = instants(values)
            parts = features.spec(column.name).parts or []
            columns += [getattr(at.dt, part).to_numpy(np.float64) for part in parts]
            continue
        if column.kind == "categorical":
            categorical.append(len(columns))
        columns.append(encode_column(values, column).astype(np.float64))
    return np.stack(columns, axis=1), categorical


def _column(values: pd.Series) -> tuple[dict | None, str]:
    """A column's proposed spec ({} for plain numeric, None to drop) and a note."""
    n, gaps = len(values), int(values.isna().sum())
    present = values.dropna()
    distinct = present.nunique()
    spec: dict = {}
    gap_note = f"{gaps} gaps ({100 * gaps / max(n, 1):.1f}%)"
    if present.empty:
        return None, f"no value at all, {gap_note}: dropped"
    if pd.api.types.is_bool_dtype(values) or _looks_boolean(present):
        spec["kind"] = "boolean"
        what = "boolean"
    elif pd.api.types.is_numeric_dtype(values):
        what = f"numeric, {distinct} distinct, {present.min()}..{present.max()}"
        if distinct == n and _counts_rows(values):
            return None, f"{what}: a distinct integer per row, an identifier: dropped"
    elif _looks_datetime(present):
        spec["kind"] = "datetime"
        spec["parts"], what = _date_parts(present)
    else:
        spec["kind"] = "categorical"
        what = f"text, {distinct} distinct"
        if distinct > MAX_LISTED_CATEGORIES:
            return None, f"{what}: too many to be categories (free text?): dropped"
        spec["values"] = sorted(present.astype(str).unique().tolist())
    if gaps:
        median = spec.get("kind") in (None, "datetime")
        spec["missing"] = "median" if median else "most_frequent"
        spec["indicator"] = True
        spec["max_missing"] = round(min(0.99, 2 * gaps / n + 0.01), 3)
    return spec, f"{what}, {gap_note}"


def _counts_rows(values: pd.Series) -> bool:
    """Integers that number the rows: distinct and dense (0..n-1, 1001..1000+n,
    with at most as many holes as rows). A population or a price in whole units
    is distinct per row too, but spread far wider: a measurement, kept (the
    gapminder table's `pop` was dropped as an identifier)."""
    if not pd.api.types.is_integer_dtype(values) or values.isna().any():
        return False
    return int(values.max()) - int(values.min()) + 1 <= 2 * len(values)


def _looks_boolean(present: pd.Series) -> bool:
    text = {str(v).strip().lower() for v in present.unique()}
    return (
        0 < len(text) <= 2
        and text <= TRUE | FALSE
        and not text <= {"0", "1", "0.0", "1.0"}
    )


def _looks_datetime(present: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(present):  # a Parquet table's dates
        return True
    if present.empty or not pd.api.types.is_object_dtype(present):
        return False
    sample = present.astype(str).head(200)
    parsed = instants(sample)  # as encode will read them
    return bool(parsed.notna().mean() >= 0.95) and sample.str.len().min() >= 8


def _date_parts(present: pd.Series) -> tuple[list[str], str]:
    """Month and day of week, and the hour where times of day vary; not the year
    (a model would meet years it never saw), but where the column is a year or a
    month written as a date (every value the 1st): then the year (and month)."""
    at = instants(present).dropna()
    span = f"{at.min():%Y-%m-%d}..{at.max():%Y-%m-%d}"
    midnight = bool(((at.dt.hour == 0) & (at.dt.minute == 0)).all())
    if midnight and bool((at.dt.day == 1).all()):
        # A year (or month) written as a date, like a car's model year: the week
        # day of 1 January says nothing; the year is what the column holds.
        yearly = bool((at.dt.month == 1).all())
        parts = ["year"] if yearly else ["year", "month"]
        what = (
            "one value per year (every date 1 January)"
            if yearly
            else ("one value per month (every date the 1st)")
        )
        return parts, f"dates, {span}, {what}: parts {', '.join(parts)}"
    parts = ["month", "dayofweek"]
    timed = bool((at.dt.hour * 60 + at.dt.minute).nunique() > 1)
    if timed:
        parts.append("hour")
    times = "times of day vary" if timed else "no time of day"
    return parts, f"dates, {span}, {times}: parts {', '.join(parts)}"


def _name(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in path.stem)


def _block(section: str, body: dict) -> list[str]:
    text = yaml.safe_dump({section: body}, sort_keys=False, default_flow_style=None)
    return text.rstrip("\n").splitlines()


def write_proposal(path: Path, label: str, params_file: Path) -> list[str]:
    """Merge the proposal into `params_file`, keeping its other sections and their
    comments: `data:`, `validation:` and `features:` replaced (with the measured
    notes), `data.image_shape: null` (a table), `registry.model_name` named for the
    table; the table copied to `data/sources/` when it is elsewhere. The file as it
    was is kept beside it (`.before-describe`); what is written must load as
    params, or the file is put back. What was done, one line each."""
    import shutil

    from ruamel.yaml import YAML

    from components.data.presets import dump_checked

    text = propose(path, label)
    rt = YAML()  # round trip: comments and order kept
    rt.width = 100
    proposal = rt.load(text)
    params = rt.load(params_file.read_text())
    done = []
    source = Path(proposal["data"]["source"])
    if path.resolve() != source.resolve():
        if source.exists() and source.read_bytes() != path.read_bytes():
            raise ConfigError(
                f"{source} exists with other content",
                hint=f"remove it, or describe {source} itself",
            )
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source)
        done.append(f"copied {path} to {source} (a DVC dependency of prepare)")
    proposal["data"]["image_shape"] = None
    for section in ("data", "validation", "features"):
        params[section] = proposal[section]
    # The per-column notes close the proposal: kept above `features:`.
    lines = text.rstrip("\n").splitlines()
    start = max(i for i, line in enumerate(lines) if not line.startswith("#")) + 1
    notes = "\n".join(
        line[2:] if line.startswith("# ") else line[1:] for line in lines[start:]
    )
    params.yaml_set_comment_before_after_key("features", before=notes)
    name = f"edgeloop-{proposal['data']['name']}"
    registry = params.setdefault("registry", {})
    registry["model_name"] = name
    proposed = proposal.get("registry", {}).get("gates", {})
    if proposed:
        gates = registry.setdefault("gates", {})
        gates["min_test_accuracy"] = proposed["min_test_accuracy"]
        note = text.split(f"  # {GATE_NOTE}", 1)[1].splitlines()[0]
        gates.yaml_add_eol_comment(f"{GATE_NOTE}{note}", "min_test_accuracy")
    backup = dump_checked(rt, params, params_file, ".before-describe")
    gate = (
        f", registry.gates.min_test_accuracy: {proposed['min_test_accuracy']}"
        if proposed
        else ""
    )
    done.append(
        f"wrote data:, validation:, features:, registry.model_name: {name}{gate} "
        f"into {params_file} (as it was: {backup})"
    )
    return done
