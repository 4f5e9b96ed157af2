"""Newly labelled rows in the data set's incoming folder join the source in the
prepare stage; a file with other columns is set aside in quarantine, named, and
never stops the run; another data set's rows are never read; a missing incoming
folder is made, not a DVC failure."""

from __future__ import annotations

import json
import logging

import pandas as pd
import yaml

from components.config import DataConfig
from components.data.prepare import export_source, main
from tests.conftest import default_params_dict

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


def test_a_value_the_sources_type_cannot_hold_is_kept(tmp_path):
    """A labelled row's 2007.6 in the source's integer column: the column widens,
    the value stays (it was cast to 2007, silently); whole floats take the type."""
    (tmp_path / "data" / "sources").mkdir(parents=True)
    pd.DataFrame({"year": [2007, 2008], "x": [0.5, 1.5], "label": ["a", "b"]}).to_csv(
        tmp_path / "data" / "sources" / "t.csv", index=False
    )
    cfg = DataConfig(name="t", source="data/sources/t.csv", label_column="label")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    rows = pd.DataFrame({"year": [2009.0], "x": [2.0], "label": ["a"]})
    rows.to_parquet(incoming / "a.parquet")
    out = pd.read_parquet(export_source(cfg, tmp_path / "raw1", tmp_path, incoming))
    assert out.year.dtype == "int64" and out.year.tolist() == [2007, 2008, 2009]
    rows.assign(year=[2007.6]).to_parquet(incoming / "b.parquet")
    out = pd.read_parquet(export_source(cfg, tmp_path / "raw2", tmp_path, incoming))
    assert out.year.tolist() == [2007, 2008, 2009, 2007.6]


def test_a_file_with_other_columns_goes_to_quarantine_named(tmp_path, caplog):
    base = pd.read_parquet(export_source(CFG, tmp_path / "raw0"))
    incoming, quarantine = tmp_path / "incoming", tmp_path / "quarantine"
    (incoming / "cohort-north").mkdir(parents=True)
    pd.DataFrame({"pixel_0_0": [1.0], "target": [3]}).to_csv(
        incoming / "cohort-north" / "labels-2026-11.csv", index=False
    )
    (incoming / "broken.parquet").write_bytes(b"not parquet")
    base.head(4).to_parquet(incoming / "good.parquet")
    with caplog.at_level(logging.WARNING, logger="edgeloop.prepare"):
        out = export_source(
            CFG, tmp_path / "raw", incoming=incoming, quarantine=quarantine
        )
    assert len(pd.read_parquet(out)) == len(base) + 4  # the good file only
    assert (quarantine / "cohort-north" / "labels-2026-11.csv").is_file()
    assert (quarantine / "broken.parquet").is_file()
    assert not (incoming / "cohort-north" / "labels-2026-11.csv").exists()
    warned = caplog.text
    assert "labels-2026-11.csv: expected the source's columns" in warned
    assert "unexpected ['target']" in warned and "moved to" in warned
    assert "broken.parquet: not readable" in warned
    info = json.loads((tmp_path / "raw" / "source.json").read_text())
    assert info["incoming_files"] == ["good.parquet"]
    assert info["quarantined_incoming_files"] == [
        "broken.parquet",
        "cohort-north/labels-2026-11.csv",
    ]


def test_another_data_sets_rows_are_not_read(tmp_path, caplog, monkeypatch):
    """The digits loop's rows (in data/incoming/digits/, and in the layout before
    data sets had folders) do not reach a wine run, and nothing is moved."""
    project = tmp_path / "project"
    digits_rows = pd.read_parquet(export_source(CFG, tmp_path / "raw0")).head(3)
    for folder in ("data/incoming/digits/cohort-north", "data/incoming/cohort-north"):
        (project / folder).mkdir(parents=True)
        digits_rows.to_parquet(project / folder / "labelled.parquet")
    params = default_params_dict(data={"name": "wine", "source": "sklearn:wine"})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)  # a stage runs in the project, as DVC runs it
    with caplog.at_level(logging.WARNING, logger="edgeloop.prepare"):
        assert main(["--params", "params.yaml"]) == 0
    info = json.loads((project / "data" / "raw" / "source.json").read_text())
    assert info["incoming_files"] == [] and info["quarantined_incoming_files"] == []
    assert (project / "data/incoming/digits/cohort-north/labelled.parquet").is_file()
    assert (
        "data/incoming/cohort-north: labelled rows outside a data set's" in caplog.text
    )
