"""Simulated inputs: a device's rows with a cohort's drift, and the labelled rows
a labelling team would return for a drifted cohort. For images (the digits):
brightness, noise, rotation. For a table (a model with a fitted `features:`
encoding), each column drifts by its kind: numbers by a share of their spread,
a category's share of the rows, booleans flipped, dates moving on, and gaps."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from components.config import SpeechConfig
from components.data.dates import instants
from components.data.features import ColumnEncoding, encode
from components.errors import ConfigError
from components.training.calendar import MINUTES_PER_DAY
from edge_fleet.device.inputs import RecordedInputs

IMAGE_DRIFTS = ("brightness", "noise", "rotation")
# shift: every number moved by the same share of its spread (a sensor's offset,
# a price list's change), the one a retrained model can learn; brightness is its
# image name, taken on a table too.
TABLE_DRIFTS = ("shift", "noise", "gaps")
TABLE_NAMES = {"brightness": "shift"}
# factory: a keyword spotter's surroundings get loud (speech.noisy_surroundings).
AUDIO_DRIFTS = ("factory",)


def drift_kind(kind: str, table: bool, *, audio: bool = False) -> str:
    """The drift named by `--drift` on images, a table or clips (`auto`: noise on
    images, shift on a table, factory on clips); a name the data's kind has not
    is refused."""
    if kind == "auto":
        return "factory" if audio else "shift" if table else "noise"
    kinds = (
        AUDIO_DRIFTS
        if audio
        else (*TABLE_DRIFTS, *TABLE_NAMES)
        if table
        else IMAGE_DRIFTS
    )
    if kind not in kinds:
        what = "clips" if audio else "a table" if table else "images"
        raise ConfigError(
            f"--drift {kind!r}: expected auto or one of {', '.join(kinds)} on {what}"
        )
    return TABLE_NAMES.get(kind, kind) if table and not audio else kind


@dataclass
class DataStream(RecordedInputs):
    """A simulated device's inputs: rows drawn from a labelled set, optionally
    shifted (the drift a cohort can be given), within what the sensor can report
    (`value_range`, the data contract's feature range, when given). With the
    model's `encoding`, the rows are a table's, encoded, and drift by column kind."""

    drift: str | None = None
    strength: float = 0.0
    value_range: tuple[float, float] | None = None
    encoding: Sequence[ColumnEncoding] = ()
    # A keyword spotter's clips (data.speech): `factory` drift draws its rows from
    # clips spoken again over factory noise, not from the recorded ones.
    speech: SpeechConfig | None = None
    spread: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoding:  # each column's spread in the recorded rows
            self.spread = np.nan_to_num(np.nanstd(self.x, axis=0), nan=1.0)

    def batch(self, n: int) -> np.ndarray:
        if self.drift in AUDIO_DRIFTS and self.strength > 0:
            if self.speech is None:
                raise ValueError(f"drift {self.drift!r} is for clips (data.speech)")
            noisy = noisy_rows(self.speech, self.strength)
            return noisy[self.rng.integers(0, len(noisy), n)]
        rows = super().batch(n)
        if self.encoding:
            assert self.spread is not None
            return shift_encoded(
                rows,
                self.drift,
                self.strength,
                self.rng,
                encoding=self.encoding,
                spread=self.spread,
            )
        rows = shift(rows, self.drift, self.strength, self.rng)
        if self.value_range is not None:
            rows = np.clip(rows, *self.value_range)
        return rows


def noisy_rows(cfg: SpeechConfig, strength: float) -> np.ndarray:
    """MFCC rows of a cohort's clips in loud surroundings (one set per setting,
    shared by the devices that draw from it; its seed apart from the labelling
    team's)."""
    return _noisy_rows(cfg.model_dump_json(), strength)


@functools.cache
def _noisy_rows(settings: str, strength: float) -> np.ndarray:
    from components.data import speech  # espeak-ng: only when clips are spoken

    cfg = SpeechConfig.model_validate_json(settings)
    noisy = speech.noisy_surroundings(cfg, strength, NOISY_CLIPS, seed=cfg.seed + 1)
    frame = speech.speech_frame(noisy)
    return frame[speech.feature_names()].to_numpy(np.float32)


NOISY_CLIPS = 40  # per class, the pool a drifting cohort's devices draw from


def labelled_clips(
    cfg: SpeechConfig, *, strength: float, rows: int, label_column: str, seed: int
) -> pd.DataFrame:
    """A labelling team's clips from a cohort in loud surroundings, as rows with
    the source's columns (voice, label, the audio contract's, the MFCCs)."""
    from components.data import speech

    classes = len(speech.labels(cfg))
    noisy = speech.noisy_surroundings(cfg, strength, -(-rows // classes), seed=seed)
    return speech.speech_frame(noisy, label_column)


def shift(
    rows: np.ndarray, kind: str | None, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Brightness (add), noise (gaussian) or rotation (of square images)."""
    if kind is None or strength == 0:
        return rows
    if kind == "brightness":
        return rows + strength
    if kind == "noise":
        return rows + rng.normal(0, strength, rows.shape).astype(np.float32)
    if kind == "rotation":
        side = math.isqrt(rows.shape[1])
        turns = max(1, round(strength)) % 4
        return np.rot90(rows.reshape(-1, side, side), turns, axes=(1, 2)).reshape(
            len(rows), -1
        )
    raise ValueError(f"drift {kind!r}: expected one of {', '.join(IMAGE_DRIFTS)}")


def _table_kind(kind: str) -> str:
    """A table drift's own name (brightness is shift); another is a ValueError:
    `drift_kind` has refused it for a user before it reaches here."""
    kind = TABLE_NAMES.get(kind, kind)
    if kind not in TABLE_DRIFTS:
        raise ValueError(
            f"drift {kind!r} on a table: expected one of {', '.join(TABLE_DRIFTS)}"
        )
    return kind


def share(strength: float) -> float:
    """The share of rows a table's drift of this strength changes (3: 0.375)."""
    return min(1.0, strength / 8)


def shift_encoded(
    rows: np.ndarray,
    kind: str | None,
    strength: float,
    rng: np.random.Generator,
    *,
    encoding: Sequence[ColumnEncoding],
    spread: np.ndarray,
) -> np.ndarray:
    """A table's encoded rows drifted column by column, as the raw rows would
    (`shift_raw`): numbers by strength/4 of their spread (`shift` the same,
    `noise` gaussian), a share of the rows moved to the next category, booleans
    flipped, dates `strength` months on; `gaps`: a share of the values of each
    column whose policy fills gaps left empty."""
    if kind is None or strength == 0:
        return rows
    kind = _table_kind(kind)
    rows = rows.copy()
    moved = rng.random(rows.shape) < share(strength)
    for j, column in enumerate(encoding):
        values, pick = rows[:, j], moved[:, j]
        if kind == "gaps":
            if not np.isnan(column.fill):
                values[pick] = np.nan
        elif column.kind == "categorical":
            assert column.categories is not None
            values[pick] = (values[pick] + 1) % len(column.categories)
        elif column.kind == "boolean":
            values[pick] = 1 - values[pick]
        elif column.kind == "datetime":
            values += np.float32(strength * 30 * MINUTES_PER_DAY)
        elif kind == "shift":
            values += np.float32(strength / 4 * spread[j])
        else:
            values += rng.normal(0, strength / 4 * spread[j], len(values))
    return rows


def shift_raw(
    frame: pd.DataFrame,
    kind: str,
    strength: float,
    rng: np.random.Generator,
    encoding: Sequence[ColumnEncoding],
) -> pd.DataFrame:
    """Raw rows of a table drifted as `shift_encoded` drifts them encoded: what a
    labelling team returns, with the table's own values (a category's name, the
    column's own yes/no words, a date as text)."""
    kind = _table_kind(kind)
    frame = frame.copy()
    spread = np.nan_to_num(np.nanstd(encode(frame, list(encoding)), axis=0), nan=1.0)
    for j, column in enumerate(encoding):
        name = column.name
        pick = rng.random(len(frame)) < share(strength)
        if kind == "gaps":
            if not np.isnan(column.fill):
                frame[name] = frame[name].where(~pick)
        elif column.kind == "categorical":
            assert column.categories is not None
            nxt = {
                c: column.categories[(i + 1) % len(column.categories)]
                for i, c in enumerate(column.categories)
            }
            text = frame[name].astype(object)
            frame[name] = text.where(~pick, text.map(lambda v: nxt.get(str(v), v)))
        elif column.kind == "boolean":
            frame[name] = _flipped(frame[name], pick)
        elif column.kind == "datetime":
            # Read as the model reads dates (components/data/dates.py).
            moved = instants(frame[name]) + pd.Timedelta(days=round(strength * 30))
            frame[name] = moved.dt.strftime("%Y-%m-%d %H:%M:%S").where(moved.notna())
        else:
            values = pd.to_numeric(frame[name], errors="coerce")
            step = strength / 4 * spread[j]
            frame[name] = values + (
                step if kind == "shift" else rng.normal(0, step, len(frame))
            )
    return frame


def _flipped(values: pd.Series, pick: np.ndarray) -> pd.Series:
    """A boolean column's values with the picked ones turned to the opposite word
    the column itself uses (Yes/No stays Yes/No)."""
    from components.data.features import FALSE, TRUE

    seen = [v for v in values.dropna().unique()]
    truthy = [v for v in seen if str(v).strip().lower() in TRUE]
    falsy = [v for v in seen if str(v).strip().lower() in FALSE]
    if not truthy or not falsy:
        return values
    opposite = {str(v).strip().lower(): falsy[0] for v in truthy} | {
        str(v).strip().lower(): truthy[0] for v in falsy
    }
    flipped = values.map(lambda v: opposite.get(str(v).strip().lower(), v))
    return values.astype(object).where(~pick, flipped)


def _new_rows(
    frame: pd.DataFrame, train: pd.DataFrame, keys: list[str]
) -> pd.DataFrame:
    """The drifted rows that are new: not one the table has (a row whose
    numbers are all gaps drifts to itself) and not repeated, as the data
    contract's duplicate bound expects of labelled rows."""
    left, right = frame[keys].copy(), train[keys].drop_duplicates()
    for key in keys:  # an integer column of the table against its shifted floats
        if is_numeric_dtype(left[key]) and is_numeric_dtype(right[key]):
            left[key], right[key] = left[key].astype(float), right[key].astype(float)
    known = left.merge(right, how="left", on=keys, indicator=True)
    fresh = frame[(known["_merge"] == "left_only").to_numpy()]
    return fresh.drop_duplicates(subset=keys).reset_index(drop=True)


def labelled_rows(
    train: pd.DataFrame,
    *,
    drift: str,
    strength: float,
    rows: int,
    value_range: tuple[float, float] | None,
    label_column: str,
    seed: int = 7,
    encoding: Sequence[ColumnEncoding] = (),
    known: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A simulated labelling team's answer to a drifting cohort: training rows with
    the cohort's shift applied, their true labels; for images clipped to what a
    sensor can report (the data contract's range), for a table (`encoding`, the
    champion's) drifted by column kind in its raw values, the rows that are new
    only (so at most `rows`): not in `train` nor in `known` (the rows the data
    set has already, default `train`)."""
    picked = train.sample(min(rows, len(train)), random_state=seed)
    rng = np.random.default_rng(seed)
    if encoding:
        frame = shift_raw(
            picked.drop(columns=label_column), drift, strength, rng, encoding
        ).reset_index(drop=True)
        frame[label_column] = picked[label_column].to_numpy()
        keys = [c.name for c in encoding]
        seen = train if known is None else pd.concat([train[keys], known[keys]])
        return _new_rows(frame, seen, keys)[list(train.columns)]
    features = [c for c in train.columns if c != label_column]
    shifted = shift(picked[features].to_numpy(np.float32), drift, strength, rng)
    low, high = value_range or (None, None)
    frame = pd.DataFrame(shifted.astype(np.float64), columns=features).clip(
        lower=low, upper=high
    )
    frame[label_column] = picked[label_column].to_numpy()
    return frame
