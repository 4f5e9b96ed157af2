"""What every `python -m components.<group>.<stage>` entry point shares: arguments,
logging, and one-line errors (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from components.config import Params, load_params
from components.errors import EdgeloopError

log = logging.getLogger("edgeloop")


# `edgeloop --verbose` (inherited by the stages DVC runs): every library's log
# lines and warnings on the console too.
VERBOSE = "EDGELOOP_VERBOSE"
FORMAT = logging.Formatter(
    "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
)


class OwnLines(logging.Filter):
    """The console's share of a stage's log: edgeloop's own lines, and any
    library's errors; the libraries' progress and warnings (ONNX rewriters,
    quantization, deprecations: some 200 lines a run) go to the stage's log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("edgeloop") or record.levelno >= logging.ERROR


def configure_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO)
    quiet = not (debug or os.environ.get(VERBOSE))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(FORMAT)
        if quiet:
            handler.addFilter(OwnLines())
    logging.captureWarnings(True)  # to the log file, or with --verbose the console
    if quiet:
        # torch logs through its own handler, not the root's: its exporter's
        # "torchvision is not installed" lines, eight a run, are not ours to fix.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # GX announces every ephemeral context at INFO; keep the stage logs readable.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def log_to_file(reports: Path, stage: str) -> Path:
    """Every log line and warning of the stage, the libraries' too, in
    `<reports>/logs/<stage>.log` (this run's)."""
    path = reports / "logs" / f"{stage}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(FORMAT)
    logging.getLogger().addHandler(handler)
    _stage_log["file"] = path.resolve()  # a library may change the directory
    return path


_stage_log: dict[str, Path] = {}  # this process's stage log file, once opened


@contextlib.contextmanager
def library_output() -> Iterator[None]:
    """What a library prints while it runs (Python's print and C++'s writes to the
    process's stdout and stderr: onnx2tf and TensorFlow's converter, ~80 lines a
    conversion) into the stage's log file instead of the console; with
    `--verbose`, or outside a stage, left where it goes."""
    log_file = _stage_log.get("file")
    if log_file is None or not log_file.is_file() or os.environ.get(VERBOSE):
        yield  # no stage log (a test's stage ran in a folder since removed)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_file.open("a") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"components.{stage}", description=description
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def failure_report(reports: Path, stage: str) -> Path:
    """Where a stage that failed leaves its one-line reason for whoever ran it."""
    return reports / "failed" / f"{stage}.json"


def run_stage(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace, Params], None],
    argv: list[str] | None = None,
) -> int:
    """Run one stage; an EdgeloopError becomes one log line, exit code 1, and a
    failure report under the reports folder."""
    args = parser.parse_args(argv)
    configure_logging(args.debug)
    stage = parser.prog.removeprefix("components.")
    params = None
    try:
        params = load_params(args.params)
        log_to_file(params.paths.reports, stage)
        report = failure_report(params.paths.reports, stage)
        report.unlink(missing_ok=True)
        body(args, params)
    except EdgeloopError as exc:
        if params is not None:
            report = failure_report(params.paths.reports, stage)
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(
                json.dumps(
                    {
                        "stage": stage,
                        "error": type(exc).__name__,
                        "message": str(exc),
                        "hint": exc.hint,
                    }
                )
            )
        if args.debug:
            raise
        log.error("%s%s", exc, f" (hint: {exc.hint})" if exc.hint else "")
        return 1
    return 0


def exit_with(code: int) -> None:
    sys.exit(code)
