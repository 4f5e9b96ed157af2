"""Thin adapters the flows call: the MLflow registry (`registry`: gates, aliases,
alias history, data cards), MLflow tracking (`tracking`: a training run, its
lineage, artifacts and the registered version) and DVC (`dvc`: one stage run)."""
