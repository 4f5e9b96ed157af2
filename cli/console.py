"""What every command prints to (Rich consoles) and the options they share."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # one error, one line: never wrapped

ParamsOption = Annotated[Path, typer.Option("--params")]
ProjectOption = Annotated[Path, typer.Option(help="project root")]
# The drift a simulated cohort is given (edge_fleet/sim/streams.py::drift_kind).
DriftOption = Annotated[
    str,
    typer.Option(
        help="auto (noise on images, shift on a table) | brightness | noise | "
        "rotation (images) | shift | noise | gaps (tables)"
    ),
]


class OneLineFormatter(logging.Formatter):
    """Another formatter's lines without the traceback a record carries (Prefect
    logs a failed task's and flow's with it); other handlers of the same record
    (Prefect's API log, which the UI shows) still get it."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


DEBUG = {"on": False}  # set by the --debug option


def one_line_logs() -> None:
    """Unless --debug: the console's log lines (Prefect's, set up when a flow is
    imported) without tracebacks; the command prints the error in one line."""
    if DEBUG["on"]:
        return
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter or logging.Formatter()
        if not isinstance(formatter, OneLineFormatter):
            handler.setFormatter(OneLineFormatter(formatter))
