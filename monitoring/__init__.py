"""Drift monitoring: `drift` (a window against its reference with Evidently's
statistics, and the champion's accuracy on delayed labels), `sequential` (the
decision: an e-detector per target, e-BH across targets), `reference` (which rows
each target is compared with), `trigger` (the flagged target and its cooldown
before retraining) and `workspace` (snapshots and dashboards in the Evidently
workspace)."""
