"""params.yaml's `features:` section: what each raw column of a user's table is
(its kind), what to do where it has a gap (its missing-value policy), and the
columns left out of the model. A column not named is numeric and may have no gap:
the behaviour of an all-numeric, gap-free table. `edgeloop data describe PATH`
proposes the section for a table."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Strict

Kind = Literal["numeric", "categorical", "boolean", "datetime"]
Policy = Literal["refuse", "median", "most_frequent", "constant"]
# What a datetime column gives the model (computed inside the exported graph):
# calendar parts as numbers, dayofweek 0 = Monday as in pandas.
Part = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour", "minute"]


class FeatureSpec(Strict):
    # What the column holds: number, category, boolean or date.
    kind: Kind = "numeric"
    # categorical: the allowed values, or "learned" (those of the training split);
    # a value outside them is a contract finding, bounded by max_unseen.
    values: list[str | int] | Literal["learned"] = "learned"
    # refuse: a gap fails the data contract and a serving request; otherwise it is
    # filled inside the model with the training split's median, most frequent
    # value, or `fill`.
    missing: Policy = "refuse"
    # The value a gap is filled with when missing is constant.
    fill: float | str | None = None
    indicator: bool = False  # adds a 0/1 "was missing" input to the model
    max_missing: float = Field(0.05, ge=0, lt=1)  # share of a batch's rows
    max_unseen: float = Field(0.0, ge=0, lt=1)  # share of a batch's rows
    # datetime: the parts the model sees (a timestamp itself only grows with time)
    parts: list[Part] | None = None

    @model_validator(mode="after")
    def _coherent(self) -> FeatureSpec:
        if self.missing == "median" and self.kind not in ("numeric", "datetime"):
            raise ValueError(
                f"missing 'median' needs kind numeric or datetime, not {self.kind!r}; "
                "use most_frequent or constant"
            )
        if (self.kind == "datetime") != (self.parts is not None):
            raise ValueError(
                "parts are given exactly for kind datetime (for example "
                "parts: [month, dayofweek, hour])"
            )
        if self.parts is not None and not self.parts:
            raise ValueError("parts: name at least one (year, month, day, ...)")
        if self.parts is not None and len(set(self.parts)) < len(self.parts):
            raise ValueError(f"parts: {self.parts} names a part twice")
        if (self.missing == "constant") != (self.fill is not None):
            raise ValueError("fill is given exactly when missing is 'constant'")
        if self.indicator and self.missing == "refuse":
            raise ValueError("indicator needs a missing policy other than 'refuse'")
        if self.values != "learned" and self.kind != "categorical":
            raise ValueError(f"values are for kind categorical, not {self.kind!r}")
        if isinstance(self.fill, str) and self.kind not in ("categorical", "datetime"):
            raise ValueError(
                f"a text fill {self.fill!r} needs kind categorical or datetime"
            )
        if self.kind == "datetime" and self.missing == "constant":
            if not isinstance(self.fill, str) or _instant(self.fill) is None:
                raise ValueError(
                    f"fill {self.fill!r} is not an ISO 8601 date (2024-01-31)"
                )
        return self

    @property
    def plain(self) -> bool:
        """Numeric with no gaps allowed: the column goes into the model as it is."""
        return self.kind == "numeric" and self.missing == "refuse"


class FeaturesConfig(Strict):
    columns: dict[str, FeatureSpec] = Field(default_factory=dict)
    drop: list[str] = Field(default_factory=list)  # not model inputs

    @model_validator(mode="after")
    def _disjoint(self) -> FeaturesConfig:
        both = sorted(set(self.columns) & set(self.drop))
        if both:
            raise ValueError(f"columns {both} are both described and dropped")
        return self

    def spec(self, column: str) -> FeatureSpec:
        return self.columns.get(column, PLAIN)

    @property
    def plain(self) -> bool:
        """Every column numeric and gap-free: no preprocessing inside the model."""
        return all(s.plain for s in self.columns.values())


def _instant(text: str) -> datetime | None:
    """A constant fill must be ISO 8601 text: stricter than what `encode` reads
    (components/data/dates.py, pandas' mixed formats, which config may not import:
    the data package imports config), so a fill that loads also encodes."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


PLAIN = FeatureSpec()
