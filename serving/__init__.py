"""BentoML serving of the registry's champion: `service` (the BentoML service: checked
input, adaptive batching, health, metrics, `/refresh` on an alias change),
`model_source` (the alias' version and its device file from MLflow) and
`prediction_log` (the sampled inputs and outputs drift monitoring reads)."""
