"""Newly labelled rows in `paths.incoming` join the source in the prepare stage;
a file with other columns stops it, naming the file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.config import DataConfig
from components.data.prepare import export_source
from components.errors import DataContractError

CFG = DataConfig(name="digits", source="sklearn:digits")


def test_incoming_rows_are_added_in_file_order(tmp_path):
    base = pd.read_parquet(export_source(CFG, tmp_path / "raw0"))
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "README.md").write_text("ignored")
    base.head(5).assign(label=1).to_csv(incoming / "b.csv", index=False)
    base.tail(3).to_parquet(incoming / "a.parquet")
    (incoming / "cohort-south").mkdir()  # labelled rows from one deployment target
    base.head(2).to_parquet(incoming / "cohort-south" / "c.parquet")
    out = export_source(CFG, tmp_path / "raw", incoming=incoming)
    combined = pd.read_parquet(out)
    assert len(combined) == len(base) + 10
    assert list(combined.columns) == list(base.columns)
    assert combined.dtypes.equals(base.dtypes)
    assert (combined.iloc[-7:-2]["label"] == 1).all()  # b.csv after a.parquet
    info = json.loads((tmp_path / "raw" / "source.json").read_text())
    assert info["incoming_files"] == ["a.parquet", "b.csv", "cohort-south/c.parquet"]
    assert info["incoming_rows"] == 10


def test_an_incoming_file_with_other_columns_is_refused_by_name(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    pd.DataFrame({"pixel_0_0": [1.0], "target": [3]}).to_csv(
        incoming / "labels-2026-11.csv", index=False
    )
    with pytest.raises(DataContractError, match="labels-2026-11.csv") as err:
        export_source(CFG, tmp_path / "raw", incoming=incoming)
    assert "missing" in str(err.value) and "target" in str(err.value)
