"""A stage's console is edgeloop's own lines and any library's errors; the
libraries' progress and warnings go to `reports/logs/<stage>.log` (on main a
penguins `edgeloop run` printed 249 lines, most of them ONNX rewriters',
quantization's and DVC's advice; 69 now); `edgeloop --verbose` shows them all."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from components.stage import VERBOSE
from tests.conftest import REPO, default_params_dict

STAGE = """
import logging, os, sys, warnings
from components.stage import library_output, run_stage, stage_parser

def body(args, params):
    logging.getLogger("onnxscript.rewriter").info("Applied 4 rewrite rules")
    logging.getLogger("torch.onnx._internal.exporter").warning("no torchvision")
    warnings.warn("LeafSpec is deprecated", FutureWarning)
    logging.getLogger("edgeloop.train").info("trained, best step 36")
    logging.getLogger("somelib").error("the disk is full")
    with library_output():  # a converter's prints, Python's and C++'s
        print("Captures: TensorSpec(shape=(1, 8, 8, 1))")
        os.write(2, b"fully_quantize: 0, inference_type: 6\\n")
    print("after the converter")

sys.exit(run_stage(stage_parser("training.train", "a stage"), body))
"""


def _run(tmp_path, **env: str) -> str:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params_dict()))
    done = subprocess.run(
        [sys.executable, "-c", STAGE],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO)} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout + done.stderr


def test_the_console_has_our_lines_and_the_log_file_all(tmp_path):
    console = _run(tmp_path)
    assert "INFO edgeloop.train: trained, best step 36" in console
    assert "ERROR somelib: the disk is full" in console
    for noise in ("rewrite rules", "LeafSpec", "torchvision"):
        assert noise not in console, console
    # onnx2tf and TensorFlow's converter printed ~80 lines a run on the console
    for noise in ("Captures", "fully_quantize"):
        assert noise not in console, console
    assert "after the converter" in console
    log = (tmp_path / "reports" / "logs" / "training.train.log").read_text()
    assert "Captures: TensorSpec" in log and "fully_quantize: 0" in log
    assert "INFO onnxscript.rewriter: Applied 4 rewrite rules" in log
    assert "FutureWarning: LeafSpec is deprecated" in log
    assert "trained, best step 36" in log


def test_verbose_shows_the_libraries_lines(tmp_path):
    console = _run(tmp_path, **{VERBOSE: "1"})
    assert "rewrite rules" in console and "LeafSpec" in console
    assert "torchvision" in console and "fully_quantize" in console


def test_a_stage_log_since_removed_leaves_the_output_alone(tmp_path, monkeypatch):
    """A stage run in-process in a test's folder, removed since: the next
    conversion in that process stopped on 'No such file or directory:
    reports/logs/prepare.log' (a relative path, from another folder)."""
    from components import stage

    monkeypatch.setitem(stage._stage_log, "file", tmp_path / "gone" / "prepare.log")
    with stage.library_output():
        os.write(1, b"a converter's line\n")
