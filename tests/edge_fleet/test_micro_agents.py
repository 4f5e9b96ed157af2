"""Boards of the `mcu` profile as processes: `edgeloop-agent[micro]` (the wheel built
from the repository, in a venv holding only it and TensorFlow Lite Micro) takes
versions through canary and full and follows a rollback, running each full-integer
TFLM file in its board's arena; a board whose arena is smaller than a file needs
refuses it in its smoke test, with the bytes. Before, a board got no model at all:
the mcu profile had no runtime it could load."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_fleet.device.micro import Board, fit_problem, measure
from edge_fleet.sim.runner import shared_runtimes
from tests.edge_fleet.conftest import (
    agent_settings,
    drive,
    keras_int8_files,
    make_agents,
    rollout_over,
)
from tests.edge_fleet.test_agent_package import _cli, _until

pytestmark = pytest.mark.integration

ARENA_KB, FLASH_KB = 192, 768  # the default mcu profile's max_arena_kb, max_flash_kb


@pytest.fixture(scope="module")
def board_files(digits, tmp_path_factory) -> dict[str, Path]:
    """Two Keras models' full-integer files, named as TFLM files."""
    root = tmp_path_factory.mktemp("board-files")
    files = {}
    for version, path in keras_int8_files(digits, root, epochs=5).items():
        micro = path.with_name(f"{path.stem}.micro.tflite")
        micro.write_bytes(path.read_bytes())
        files[version] = micro
    return files


def _board(command: Path, server, home: Path, samples: Path, arena_kb: int):
    settings = agent_settings(
        server,
        home,
        samples,
        device_id=home.name,
        profile="mcu",
        arena_kb=arena_kb,
        flash_kb=FLASH_KB,
    )
    code = server.enroll_code(device_id=home.name)
    assert _cli(command, settings, "enroll", "--code", code)["enrolled"]
    process = subprocess.Popen(
        [str(command), "--config", str(settings), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return settings, process


def test_boards_take_versions_through_canary_and_full_follow_a_rollback_and_refuse_a_file_over_their_arena(  # noqa: E501
    agent_venvs, fleet_server, digits, board_files, tmp_path
):
    command = agent_venvs("micro")
    samples = tmp_path / "samples.npy"
    np.save(samples, digits.x[:100])
    http = httpx.Client(timeout=30)
    others = make_agents(
        fleet_server,
        digits,
        http,
        3,
        home=tmp_path / "sims",
        profile="mcu",
        runtimes=shared_runtimes(Board(ARENA_KB * 1024, FLASH_KB * 1024)),
    )
    boards = [
        _board(command, fleet_server, tmp_path / f"board-{i}", samples, ARENA_KB)
        for i in range(2)
    ]
    small = None
    try:

        def on(version: str):
            return lambda: all(
                _cli(command, settings, "status")["version"] == version
                for settings, _ in boards
            )

        for version in ("1", "2"):
            fleet_server.upload(version, board_files[f"good-{version}"], ["mcu"])
            fleet_server.admin.start_rollout(version, "test")
            drive(others, rollout_over(fleet_server))
            [rollout] = [
                r for r in fleet_server.admin.rollouts() if r["version"] == version
            ]
            assert rollout["state"] == "completed", rollout
            _until(on(version), max_s=90)
        fleet_server.admin.retarget("1", "rollback")
        _until(on("1"), max_s=90)
        devices = {d["id"]: d for d in fleet_server.admin.devices()}
        for settings, _ in boards:
            status = _cli(command, settings, "status")
            assert {s["version"] for s in status["slots"].values()} == {"1", "2"}
            assert devices[settings.stem]["current_version"] == "1"

        # A board with a 1 KB arena: the stable file needs more.
        need = measure(board_files["good-1"]).arena_bytes
        assert need > 1024
        small = _board(command, fleet_server, tmp_path / "board-small", samples, 1)

        def small_board() -> dict:
            found = [
                d for d in fleet_server.admin.devices() if d["id"] == "board-small"
            ]
            return found[0] if found else {}

        _until(lambda: small_board().get("last_error"), max_s=90)
        device = small_board()
        assert (
            f"TFLM arena: the file needs {need} bytes, this device has 1024 "
            f"({need - 1024} bytes over)"
        ) in device["last_error"], device
        assert device["current_version"] is None
    finally:
        outputs = []
        for _, process in boards + ([small] if small else []):
            process.terminate()
            outputs.append(process.communicate(timeout=30)[0])
        http.close()
    for out in outputs[:2]:
        assert "Traceback" not in out, out
        assert "v2: switched to slot" in out


def test_a_board_refuses_a_file_over_its_flash(board_files):
    """The flash check before TFLM is asked: the bytes it is over."""
    path = board_files["good-1"]
    size = path.stat().st_size
    small = Board(ARENA_KB * 1024, size - 100)
    assert fit_problem(path, small) == (
        f"flash: the file is {size} bytes, this device has {size - 100} for a model "
        "(100 bytes over)"
    )
    assert fit_problem(path, Board(ARENA_KB * 1024, FLASH_KB * 1024)) is None
