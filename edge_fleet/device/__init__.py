"""One edge device, as it would run on the hardware: `agent.py` (enroll, check in,
update, telemetry), `command.py` (`python -m edge_fleet.device`), `inference.py`
(runtimes by file hash, one batch summarised for telemetry), `fetcher.py` (TUF's
downloads over HTTP, resumed with range requests), `slots.py` (the A/B model slots
and `state.json`), `inputs.py` (the rows it runs inference on). Nothing here knows
about simulation: edge_fleet/sim/ brings the faults, drift and many devices."""
