"""Drift monitoring with Evidently: `drift` (a window against its reference, and the
champion's accuracy on delayed labels), `reference` (which rows each target is
compared with), `trigger` (hysteresis and cooldown before retraining) and
`workspace` (snapshots and dashboards in the Evidently workspace)."""
