"""params.yaml's data side: paths, the data source, the split, the data contract."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from components.config.base import Strict


class PathsConfig(Strict):
    # The source's rows as the prepare stage read them.
    raw: Path = Path("data/raw")
    # The split data set (train, val, test) the contract passed.
    prepared: Path = Path("data/prepared")
    # Rows the data contract refused, with why.
    quarantine: Path = Path("data/quarantine")
    # The trained model the train stage writes.
    model: Path = Path("models/model")
    # The optimized variants (fp32, int8, pruned) and their report.
    variants: Path = Path("models/variants")
    # Metrics, the data card and the stages' reports.
    reports: Path = Path("reports")
    # Not a DVC output: it must outlive every rerun of the train stage.
    privacy_ledger: Path = Path("data/privacy_ledger.json")
    prediction_log: Path = Path("data/predictions")
    # Newly labelled rows (.csv/.parquet, the source's columns): the next training
    # run adds them to the source, through the same validation, as a new data version.
    incoming: Path = Path("data/incoming")
    # Where a table source (`data.source`, a .csv/.parquet file) lives: a DVC
    # dependency of the prepare stage, so an edited source is a new data version.
    sources: Path = Path("data/sources")


class DataConfig(Strict):
    # The data set's name (in the data card, runs and incoming folders).
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(
        description="sklearn:<digits|wine|breast_cancer|iris> or a .csv/.parquet path"
    )
    # The column that holds the label.
    label_column: str = "label"
    # Height and width when the rows are images (a CNN is trained); null for a table.
    image_shape: tuple[int, int] | None = None
    # The data card's description of the data.
    description: str = ""
    # The data's licence, for the data card.
    license: str = ""
    # What the data cannot stand for, for the data card.
    known_limitations: str = ""

    @model_validator(mode="after")
    def _source_kind(self) -> DataConfig:
        src = self.source
        if src.startswith("sklearn:"):
            if src.split(":", 1)[1] not in SKLEARN_DATASETS:
                raise ValueError(
                    f"unknown scikit-learn data set {src!r}; allowed: "
                    + ", ".join(f"sklearn:{n}" for n in SKLEARN_DATASETS)
                )
        elif Path(src).suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(
                f"source {src!r} must be sklearn:<name> or a .csv/.parquet file"
            )
        return self


SKLEARN_DATASETS = ("digits", "wine", "breast_cancer", "iris")


class SplitConfig(Strict):
    # Share of rows for validation.
    val: float = Field(0.15, gt=0, lt=1)
    # Share of rows for the test split (the gates judge on it).
    test: float = Field(0.15, gt=0, lt=1)
    # Seed of the split.
    seed: int = 42

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.val + self.test >= 0.9:
            raise ValueError(
                f"val + test = {self.val + self.test:.2f} leaves too little to train "
                "on; expected val + test < 0.9"
            )
        return self


class ValidationConfig(Strict):
    # The allowed labels; a row with another is refused.
    labels: list[int | str] = Field(min_length=2)
    # The expected feature columns; null means "the columns of data.source".
    feature_columns: list[str] | None = None
    # Bounds for every feature column (null: none), also enforced by serving.
    feature_range: tuple[float, float] | None = None
    # Bounds per named column, over feature_range.
    column_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # KL divergence of the label distribution from uniform (0 = perfectly balanced).
    max_class_kl_divergence: float = Field(0.05, gt=0)
    # Share of duplicate rows allowed.
    max_duplicate_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    # Fewest rows a data version may have.
    min_rows: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> ValidationConfig:
        ranges = dict(self.column_ranges)
        if self.feature_range is not None:
            ranges["feature_range"] = self.feature_range
        for name, (low, high) in ranges.items():
            if low > high:
                raise ValueError(
                    f"range for {name!r} is [{low}, {high}]; need min<=max"
                )
        return self
