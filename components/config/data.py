"""params.yaml's data side: paths, the data source, the split, the data contract."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from components.config.base import Strict


class PathsConfig(Strict):
    raw: Path = Path("data/raw")
    prepared: Path = Path("data/prepared")
    quarantine: Path = Path("data/quarantine")
    model: Path = Path("models/model")
    variants: Path = Path("models/variants")
    reports: Path = Path("reports")
    # Not a DVC output: it must outlive every rerun of the train stage.
    privacy_ledger: Path = Path("data/privacy_ledger.json")
    prediction_log: Path = Path("data/predictions")
    # Newly labelled rows (.csv/.parquet, the source's columns): the next training
    # run adds them to the source, through the same validation, as a new data version.
    incoming: Path = Path("data/incoming")


class DataConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(
        description="sklearn:<digits|wine|breast_cancer|iris> or a .csv/.parquet path"
    )
    label_column: str = "label"
    image_shape: tuple[int, int] | None = None
    description: str = ""
    license: str = ""
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
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
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
    labels: list[int | str] = Field(min_length=2)
    # The expected feature columns; null means "the columns of data.source".
    feature_columns: list[str] | None = None
    feature_range: tuple[float, float] | None = None
    column_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # KL divergence of the label distribution from uniform (0 = perfectly balanced).
    max_class_kl_divergence: float = Field(0.05, gt=0)
    max_duplicate_fraction: float = Field(0.0, ge=0.0, lt=1.0)
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
