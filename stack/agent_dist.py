"""The device agent as a device gets it: the `edgeloop-agent` wheel built from
edge_fleet/device/ (its own pyproject.toml), and a fresh virtual environment holding
only that wheel, one runtime extra and their dependencies, at the lock's versions,
installed offline (uv's cache, as `make setup` filled it; no index is asked).

    python -m stack.agent_dist --out dist                 # the wheel (make agent-wheel)
    python -m stack.agent_dist --out dist --venv V --extra litert   # and a venv
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "edge_fleet" / "device"
EXTRAS = ("onnx", "litert", "micro")


class AgentBuildError(RuntimeError):
    pass


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise AgentBuildError(f"{' '.join(cmd[:3])} ...: " + " | ".join(tail))


def build_wheel(out: Path) -> Path:
    """dist/edgeloop_agent-<version>-py3-none-any.whl, built by setuptools from a
    copy of the package folder (a build writes build/ and egg-info beside its
    source), without build isolation: no index is needed."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "edgeloop-agent"
        shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("__pycache__"))
        for old in out.glob("edgeloop_agent-*.whl"):
            old.unlink()
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                str(src),
                "-w",
                str(out),
            ]
        )
    [wheel] = out.glob("edgeloop_agent-*.whl")
    return wheel


def make_venv(venv: Path, wheel: Path, extra: str) -> Path:
    """A fresh venv with the wheel and `extra`'s runtime; returns its
    `edgeloop-agent` command. Files are copied, not linked to uv's cache, so the
    folder's size is what a device holds."""
    if extra not in EXTRAS:
        raise AgentBuildError(f"extra {extra!r}: expected one of {', '.join(EXTRAS)}")
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    uv = Path(sys.executable).with_name("uv")
    _run(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--offline",
            "--only-binary",
            ":all:",
            "--link-mode",
            "copy",
            "--python",
            str(venv / "bin" / "python"),
            "--find-links",
            str(REPO / "wheels"),
            "-c",
            str(REPO / "requirements.lock"),
            f"{wheel}[{extra}]",
        ]
    )
    return venv / "bin" / "edgeloop-agent"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--venv", type=Path, help="also make this venv")
    parser.add_argument("--extra", choices=EXTRAS, default="onnx")
    args = parser.parse_args(argv)
    try:
        wheel = build_wheel(args.out)
        sys.stdout.write(f"{wheel}\n")
        if args.venv:
            sys.stdout.write(f"{make_venv(args.venv, wheel, args.extra)}\n")
    except AgentBuildError as exc:
        raise SystemExit(f"agent_dist: {exc}") from None


if __name__ == "__main__":
    main()
