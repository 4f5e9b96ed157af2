"""`edgeloop`, the command line: `cli.app` is the Typer app and its root callback
(which sets the stack's Prefect environment once, before any flow is imported);
one module per command group: `services` (up, down, status, register), `pipeline`
(run, validate), `registry` (promote, rollback, history), `fleet`, `drift`, `loop`."""
