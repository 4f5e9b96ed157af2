"""The device agent as its own program (`edgeloop-agent`): it imports nothing of the
stack, reads its settings from a small file or the environment and names a bad one
in one line, and its local inference checks a row before it reaches the model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.config import FleetConfig
from edge_fleet.device.config import AgentConfig, ConfigError
from edge_fleet.device.inference import p95
from edge_fleet.device.local import LocalInputs, _row
from edge_fleet.device.scope import ROLLOUT, STABLE
from stack.contracts import Channel

REQUIRED = {
    "server": "http://127.0.0.1:8300",
    "device_id": "gw-1",
    "profile": "gateway",
    "cohort": "north",
    "home": "/var/lib/edgeloop-agent",
    "root": "/etc/edgeloop-agent/root.json",
    "samples": "/etc/edgeloop-agent/samples.npy",
}


def _toml(values: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def test_the_agent_imports_nothing_of_the_stack_or_the_training_stack():
    """What the wheel ships must run without what it does not declare: loading the
    agent's modules pulls in no package of the stack, no pandas, no torch."""
    code = (
        "import sys, numpy as np, edge_fleet.device.command, edge_fleet.device.local, "
        "edge_fleet.device.runtime, edge_fleet.device.agent as a, "
        "edge_fleet.device.inference as i;"
        "x = np.ones((8, 3), np.float32); i.predictions(x); i.feature_stats(x);"
        "i.p95([1.0, 2.0, 3.0]);"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})));"
        "print('numpy.ma' in sys.modules)"
    )
    names, ma = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    out = names.split()
    stack = {"components", "stack", "serving", "flows", "monitoring", "scenarios"}
    heavy = {"pandas", "torch", "tensorflow", "mlflow", "prefect", "yaml", "pydantic"}
    assert not (stack | heavy) & set(out), sorted((stack | heavy) & set(out))
    # Nor numpy.ma (7 MB resident, imported by np.percentile): a report's p95 is
    # the standard library's, numpy's linear percentile.
    assert ma == "False"


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9])
def test_a_reports_p95_is_numpys_linear_percentile(n):
    values = np.random.default_rng(n).random(n).tolist()
    assert p95(values) == pytest.approx(np.percentile(values, 95), abs=1e-12)


def test_settings_from_a_file_then_the_environment(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(_toml(REQUIRED | {"poll_s": 30, "sample_cohorts": ["north"]}))
    cfg = AgentConfig.load(
        path, env={"EDGELOOP_AGENT_POLL_S": "5.5", "EDGELOOP_AGENT_MEMORY_MB": "256"}
    )
    assert cfg.poll_s == 5.5 and cfg.memory_mb == 256  # the environment wins
    assert cfg.home == Path("/var/lib/edgeloop-agent")
    assert cfg.sample_cohorts == ("north",)
    only_env = {f"EDGELOOP_AGENT_{k.upper()}": v for k, v in REQUIRED.items()}
    assert AgentConfig.load(None, env=only_env).device_id == "gw-1"


@pytest.mark.parametrize(
    ("values", "env", "message"),
    [
        ({k: v for k, v in REQUIRED.items() if k != "root"}, {}, "root: required"),
        (REQUIRED | {"poll": 3}, {}, "unknown key 'poll'"),
        (REQUIRED | {"poll_s": "often"}, {}, "poll_s (FILE): expected a number"),
        (REQUIRED, {"EDGELOOP_AGENT_INFERENCE_PORT": "x"}, "inference_port ("),
        (REQUIRED, {"EDGELOOP_AGENT_REPLAY_SAMPLES": "maybe"}, "expected true or"),
        (REQUIRED | {"max_backoff_s": -1}, {}, "at least 0"),
        (REQUIRED | {"server": ""}, {}, "server (FILE): expected a non-empty"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(tmp_path, values, env, message):
    path = tmp_path / "agent.toml"
    path.write_text(_toml(values))
    with pytest.raises(ConfigError) as caught:
        AgentConfig.load(path, env=env)
    text = str(caught.value)
    assert message.replace("FILE", str(path)) in text, text
    assert "\n" not in text


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        AgentConfig.load(tmp_path / "absent.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("server = \n")
    with pytest.raises(ConfigError, match=r"broken.toml: not TOML"):
        AgentConfig.load(broken, env={})


def test_the_agents_polling_defaults_are_the_fleets():
    """A device installed from the wheel polls as the simulated fleet does."""
    fleet = FleetConfig()
    agent = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
    for name in ("poll_s", "poll_jitter", "max_backoff_s", "max_metadata_age_s"):
        assert agent[name] == getattr(fleet, name), name
    assert agent["telemetry_batch"] == fleet.telemetry_batch
    assert (STABLE, ROLLOUT) == (Channel.STABLE.value, Channel.ROLLOUT.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([1.0, 2.0], "expected a list of 3 numbers, got 2"),
        ("1,2,3", "expected a list of 3 numbers, got str"),
        ([1.0, "2", 3.0], "row[1]: expected a number or null, got '2'"),
        ([1.0, True, 3.0], "row[1]: expected a number or null, got True"),
        ([1e39, 0.0, 0.0], "out of float32's range"),
    ],
)
def test_local_inference_refuses_a_malformed_row(row, message):
    with pytest.raises(ValueError) as caught:
        _row(row, 3)
    assert message in str(caught.value)


def test_a_gap_is_a_nan_the_model_fills():
    x = _row([1, None, 2.5], 3)
    assert x.dtype == np.float32 and np.isnan(x[0, 1]) and x[0, 2] == 2.5


def test_telemetry_summarises_the_rows_asked_about_or_nothing():
    samples = np.arange(12, dtype=np.float32).reshape(4, 3)
    local = LocalInputs(samples, capacity=3, replay=False)
    assert local.batch(8).shape == (0, 3)  # nothing asked: no report
    for i in range(5):
        local.record(np.full(3, i, np.float32))
    assert local.batch(2)[:, 0].tolist() == [2, 3]  # the oldest beyond 3 dropped
    assert local.batch(8)[:, 0].tolist() == [4]
    replaying = LocalInputs(samples, capacity=3, replay=True)
    assert replaying.batch(5).shape == (5, 3)  # no application: the samples


def test_an_enrollment_code_is_one_word_on_a_command_line():
    """A code beginning with "-" (1 in 64 of token_urlsafe's) was read by argparse
    as an option: `enroll --code -CoHB9...` failed with "expected one argument".
    The server no longer makes such codes; the agent takes one an older server
    made."""
    from edge_fleet.device.command import parse_args
    from edge_fleet.server.admin_api import new_enrollment_code

    codes = [new_enrollment_code() for _ in range(3000)]
    assert not [c for c in codes if c.startswith("-")]
    assert len(set(codes)) == len(codes) and {len(c) for c in codes} == {32}
    for code in ("-CoHB9ZBW4cH7IC8q2OL-7q-KJ5eFjZu", "plainCode_1"):
        args = parse_args(["--config", "agent.toml", "enroll", "--code", code])
        assert (args.command, args.code, args.config) == (
            "enroll",
            code,
            Path("agent.toml"),
        )
