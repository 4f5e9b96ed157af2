"""Simulated devices, around the real agent of edge_fleet/device/: `faults.py`
(cut links, power loss, broken hardware), `streams.py` (device inputs with a
cohort's drift, and the labelled rows of a drifted cohort), `runner.py` (many
devices of mixed profiles and cohorts in one process, against the real fleet
server)."""
