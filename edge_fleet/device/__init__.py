"""One edge device, as it runs on the hardware; also the `edgeloop-agent`
distribution (pyproject.toml here: `pip install edgeloop-agent[onnx]` or `[litert]`),
so it imports nothing of the repository outside this folder (an import-linter
contract) and nothing heavier than httpx, python-tuf, numpy and one runtime.

`agent.py` (enroll, check in, update, telemetry), `command.py` (`edgeloop-agent
enroll|run|status`), `config.py` (its TOML file and environment), `local.py` (local
inference on a loopback port, the telemetry's rows), `runtime.py` (ONNX Runtime and
LiteRT; the stack measures files with these too), `inference.py` (runtimes by file
hash, a batch summarised), `fetcher.py` (TUF's downloads, resumed with range
requests), `slots.py` (the A/B slots and `state.json`), `files.py` (crash-safe
writes), `scope.py` (which channel covers this device), `seams.py` (settings, rows
and interference as protocols), `inputs.py` (recorded rows). Nothing here knows
about simulation: edge_fleet/sim/ brings the faults, drift and many devices."""
