"""The Prefect flows, and nothing else: `training` (the DVC stages, then MLflow
logging, registration and gates), `release` (what follows an alias change; run as a
module it is the webhook service), `edge_release` (a version to the fleet, one
release per model at a time), `monitor` (drift and delayed labels per target, the
drift event), `deployments` (the stack's deployments and drift automation) and
`runners` (the task runner of the parallel parts). `flows.adapters` holds the thin
MLflow (`registry`, `tracking`) and DVC (`dvc`) adapters the flows call."""
