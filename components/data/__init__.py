"""The data stages: loading a source (sources.py), `prepare` (raw Parquet from the
source and newly labelled rows), `validate` (the Great Expectations contract,
splits, the leakage check, the data card)."""
