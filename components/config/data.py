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


class SpeechConfig(Strict):
    """How `source: speech:espeak-ng` speaks its clips (components/data/speech.py):
    every setting is part of the data version."""

    # The keywords, each a class.
    words: list[str] = Field(
        default=["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"],
        min_length=1,
    )
    # Other words, spoken for the "unknown" class.
    unknown_words: list[str] = Field(
        default=[
            "bed",
            "bird",
            "cat",
            "dog",
            "happy",
            "house",
            "tree",
            "wow",
            "four",
            "learn",
            "follow",
            "visual",
        ],
        min_length=1,
    )
    # espeak-ng voices (accents); each with each variant is one speaker.
    voices: list[str] = Field(
        default=[
            "en-us",
            "en-gb",
            "en-gb-scotland",
            "en-gb-x-rp",
            "en-gb-x-gbclan",
            "en-gb-x-gbcwmd",
            "en-029",
            "en-us-nyc",
        ],
        min_length=1,
    )
    # espeak-ng voice variants (`espeak-ng --voices=variant`).
    variants: list[str] = Field(
        default=[
            "m1",
            "m2",
            "m3",
            "m4",
            "m5",
            "m7",
            "f1",
            "f2",
            "f3",
            "f4",
            "croak",
            "klatt",
        ],
        min_length=1,
    )
    # Clips per class (each keyword, "unknown" and "silence").
    clips_per_class: int = Field(250, ge=3)
    # Pitch, 0-99, drawn per clip.
    pitch: tuple[int, int] = (25, 75)
    # Speaking rate in words per minute, drawn per clip.
    speed: tuple[int, int] = (120, 200)
    # The clip's peak level after mixing, as a share of full scale, drawn per clip.
    gain: tuple[float, float] = (0.1, 0.9)
    # Signal-to-noise ratio in dB, drawn per clip.
    snr_db: tuple[float, float] = (5.0, 30.0)
    # Background noises drawn from: white, pink, brown, hum, factory.
    noise: list[str] = Field(default=["white", "pink", "brown", "hum"], min_length=1)
    # Seed of every draw (a new seed, new clips).
    seed: int = 7

    @model_validator(mode="after")
    def _ranges(self) -> SpeechConfig:
        for name in ("pitch", "speed", "gain", "snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"speech.{name} is [{low}, {high}]; need min<=max")
        if not (0 <= self.pitch[0] and self.pitch[1] <= 99):
            raise ValueError(
                f"speech.pitch {list(self.pitch)}: expected within [0, 99]"
            )
        if not (0 < self.gain[0] and self.gain[1] <= 1):
            raise ValueError(f"speech.gain {list(self.gain)}: expected within (0, 1]")
        unknown = sorted(set(self.noise) - set(NOISES))
        if unknown:
            raise ValueError(f"speech.noise {unknown}: expected some of {list(NOISES)}")
        both = sorted(set(self.words) & set(self.unknown_words))
        if both:
            raise ValueError(f"speech: {both} both a keyword and an unknown word")
        return self


NOISES = ("white", "pink", "brown", "hum", "factory")


class DataConfig(Strict):
    # The data set's name (in the data card, runs and incoming folders).
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(
        description="sklearn:<digits|wine|breast_cancer|iris>, speech:espeak-ng "
        "(keyword clips spoken by `speech:`) or a .csv/.parquet path"
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
    # How a `speech:espeak-ng` source speaks its clips; null for other sources.
    speech: SpeechConfig | None = None

    @property
    def spoken(self) -> SpeechConfig | None:
        """How the clips are spoken, when the source is spoken keywords."""
        return self.speech if self.source == SPEECH_SOURCE else None

    @model_validator(mode="after")
    def _source_kind(self) -> DataConfig:
        src = self.source
        if src.startswith("sklearn:"):
            if src.split(":", 1)[1] not in SKLEARN_DATASETS:
                raise ValueError(
                    f"unknown scikit-learn data set {src!r}; allowed: "
                    + ", ".join(f"sklearn:{n}" for n in SKLEARN_DATASETS)
                )
        elif src == SPEECH_SOURCE:
            if self.speech is None:
                raise ValueError(f"source {src!r} needs a `speech:` section")
        elif Path(src).suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(
                f"source {src!r} must be sklearn:<name>, {SPEECH_SOURCE} or a "
                ".csv/.parquet file"
            )
        return self


SKLEARN_DATASETS = ("digits", "wine", "breast_cancer", "iris")
SPEECH_SOURCE = "speech:espeak-ng"


class SplitConfig(Strict):
    # Share of rows for validation.
    val: float = Field(0.15, gt=0, lt=1)
    # Share of rows for the test split (the gates judge on it).
    test: float = Field(0.15, gt=0, lt=1)
    # Seed of the split.
    seed: int = 42
    # A column whose rows go to one split together (a speaker, a patient): its value,
    # not the row, is hashed, so no group is in two splits; null: each row alone.
    group_column: str | None = None

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.val + self.test >= 0.9:
            raise ValueError(
                f"val + test = {self.val + self.test:.2f} leaves too little to train "
                "on; expected val + test < 0.9"
            )
        return self


class AudioContract(Strict):
    """What every clip of an audio data set must be."""

    # Samples per second of every clip.
    sample_rate: int = Field(16_000, gt=0)
    # Length of every clip in seconds.
    seconds: float = Field(1.0, gt=0)
    # Share of a clip's samples at full scale allowed (more: the clip is clipped).
    max_clipped_share: float = Field(0.001, ge=0, le=1)
    # A clip quieter than this (RMS, dBFS) is silent.
    silent_db: float = -60.0
    # Share of clips of the batch allowed to be clipped or silent.
    max_bad_share: float = Field(0.01, ge=0, lt=1)


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
    # The clips behind audio rows (their sample_rate, seconds, clipped_share and
    # level_db columns); null for data that is not audio.
    audio: AudioContract | None = None

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
