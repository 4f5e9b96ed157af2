"""`bentoml build` of bentofile.yaml: a Bento whose source is complete (the service
imports from the Bento alone), whose APIs are the service's, and whose Python
environment is the lock with the one local wheel and PyTorch's CPU index, which
`bentoml containerize` installs (not run here: no Docker engine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import BIN, REPO


def pins(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if "==" in line}


def test_bentoml_build_makes_a_complete_bento(tmp_path: Path):
    env = os.environ | {"BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    built = subprocess.run(
        [str(BIN / "bentoml"), "build", "--output", "tag"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = tmp_path / "bentos" / name / version
    meta = yaml.safe_load((bento / "bento.yaml").read_text())
    assert meta["service"] == "serving.service:Predictor"
    routes = {r["route"] for r in meta["schema"]["routes"]}
    assert {"/predict", "/refresh"} <= routes
    # The service and everything it imports come from the Bento's own source.
    src = bento / "src"
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, serving.service, components.optimization.runtime; "
            "print(*[getattr(m, '__file__', None) or '' for m in list("
            "sys.modules.values())], sep='\\n')",
        ],
        cwd=src,
        env=env | {"EDGELOOP_PARAMS": str(src / "params.yaml")},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    files = imported.stdout.splitlines()
    leaked = [f for f in files if f.startswith(str(REPO)) and "/.venv/" not in f]
    assert not leaked, leaked  # every module of ours from the Bento's source
    assert any(f.startswith(str(src / "serving")) for f in files), files
    # What containerize installs: the lock, the local wheel, the CPU torch index.
    python = bento / "env" / "python"
    assert pins(REPO / "requirements.lock") <= pins(python / "requirements.txt")
    assert list((python / "wheels").glob("antlr4_python3_runtime-*.whl"))
    assert "download.pytorch.org/whl/cpu" in (python / "install.sh").read_text()
    assert (bento / "env" / "docker" / "Dockerfile").exists()
