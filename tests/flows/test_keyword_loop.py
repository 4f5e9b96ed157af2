"""Keyword spotting around the whole loop, as `make run DATA=kws` runs it on a small
set: `edgeloop data use kws`, `up`, `run` (clips spoken by espeak-ng, checked by the
audio contract, split by voice, a DS-CNN trained and made into int8 files for every
profile, the mcu's a TFLM file), serving's /listen answering a WAV clip and refusing
another rate, then `edgeloop loop`: one cohort's surroundings get loud (factory
noise), its devices' clip summaries drift, the labelling team's noisy clips arrive,
the retrained model passes the gates and reaches the cohort's devices, and its
accuracy on the cohort's delayed labels rises."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient
from ruamel.yaml import YAML

from components.config import SpeechConfig
from components.data import speech
from edge_fleet.client import FleetAdmin
from edge_fleet.device import audio
from stack.contracts import Tag
from stack.net import free_port
from stack.secrets import stack_secrets
from stack.settings import Settings
from tests.conftest import FAST_OPTIMIZE, default_params_dict, make_project
from tests.flows.test_cli import edgeloop
from tests.flows.test_loop import PORTS
from tests.flows.test_own_table_loop import QUICK, closed_loop

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1100)]

# The test's time only: fewer speakers and clips than the preset (40 speakers,
# 960 clips), fewer epochs, and a gate such a model passes.
SMALL = {
    "voices": ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"],
    "variants": ["m1", "m3", "m7", "f1", "f2", "f4", "croak", "klatt"],
    "clips_per_class": 80,
}


def test_keywords_go_around_the_loop(tmp_path):
    project = make_project(
        tmp_path / "project", default_params_dict(optimize=FAST_OPTIMIZE)
    )
    env = {f"EDGELOOP_{name}_PORT": str(free_port()) for name in PORTS} | {
        "EDGELOOP_STATE_DIR": str(tmp_path / "state")
    }
    used = edgeloop("data", "use", "kws", cwd=project, env=env)
    assert used.returncode == 0, used.stdout + used.stderr
    yaml = YAML()
    yaml.preserve_quotes = True
    params = yaml.load(project / "params.yaml")
    assert params["data"]["source"] == "speech:espeak-ng"
    params["data"]["speech"].update(SMALL)
    params["train"].update({"epochs": 20, "patience": 5})
    params["registry"]["gates"]["min_test_accuracy"] = 0.75
    for section, values in QUICK.items():
        params[section].update(values)
    params["fleet"]["profile_mix"] = {"gateway": 0.5, "mcu": 0.5}
    # The loop is under test here, not the latency check (tests/edge_fleet/
    # test_rollout.py): each version's gateway file is the variant its optimize
    # stage timed fastest, on a machine busy with the other tests, so v2 may ship
    # int8 where v1 shipped fp32, and the devices time it 2.5x slower (CI, at
    # 5ddbeb4: rolled back at wave-1 on latency_ratio 2.48).
    params["fleet"]["checks"]["max_latency_ratio"] = 10.0
    params["optimize"]["profiles"]["mcu"] = {  # the default board
        "runtime": "micro",
        "max_flash_kb": 768,
        "max_arena_kb": 192,
    }
    yaml.dump(params, project / "params.yaml")
    settings = Settings(
        state_dir=tmp_path / "state",
        mlflow_port=int(env["EDGELOOP_MLFLOW_PORT"]),
        fleet_port=int(env["EDGELOOP_FLEET_PORT"]),
        serving_port=int(env["EDGELOOP_SERVING_PORT"]),
    )
    try:
        for command in (("up",), ("run",)):
            out = edgeloop(*command, cwd=project, env=env, timeout=600)
            assert out.returncode == 0, out.stdout + out.stderr
        client = MlflowClient(settings.tracking_uri)
        v1 = client.get_model_version_by_alias("edgeloop-kws", "champion")
        assert v1.version == "1"
        listens_as_trained(settings.serving_url)

        # Retraining a DS-CNN on a machine busy with the other tests: CI, at
        # 8bb5b13, waited 420 s for v2 and failed.
        closed_loop(project, env, "factory 3 on cohort north", max_s=600)
        champion = client.get_model_version_by_alias("edgeloop-kws", "champion")
        assert champion.version == "2" and champion.tags[Tag.TRIGGER] == "drift"
        fleet = FleetAdmin(
            settings.fleet_url, stack_secrets(settings)["fleet_admin_token"]
        )
        north = fleet.devices("north")
        assert {d["current_version"] for d in north} == {"2"}
        assert {d["profile"] for d in north} == {"gateway", "mcu"}  # TFLM boards too
    finally:
        edgeloop("down", cwd=project, env=env)


def listens_as_trained(url: str) -> None:
    """/listen answers a clip as /predict answers the row training computed of it
    (one front end); another rate or length is a 400 that names it."""
    cfg = SpeechConfig(
        voices=["en-us-nyc"], variants=["m2"], clips_per_class=3, seed=11
    )
    utterances = speech.draw_utterances(cfg)[:6]
    # As a WAV file holds them: 16-bit samples (training's rows of the same).
    clips = np.stack(
        [audio.read_wav(audio.write_wav(c)) for c in speech.render_all(utterances)]
    )
    rows = speech.clip_rows(clips, [u.label for u in utterances], ["v"] * len(clips))
    for clip, row in zip(clips, rows[audio.feature_names()].to_numpy(), strict=True):
        wav = audio.write_wav(clip)
        heard = httpx.post(
            f"{url}/listen", files={"clip": ("clip.wav", wav, "audio/wav")}, timeout=30
        )
        assert heard.status_code == 200, heard.text
        [predicted] = httpx.post(
            f"{url}/predict", json={"instances": [row.tolist()]}, timeout=30
        ).json()
        assert heard.json()["keyword"] == predicted["label"]
        np.testing.assert_allclose(
            heard.json()["probabilities"], predicted["probabilities"], atol=1e-6
        )
    slow = httpx.post(
        f"{url}/listen",
        files={"clip": ("slow.wav", audio.write_wav(clips[0][::2], 8000), "audio/wav")},
        timeout=30,
    )
    assert slow.status_code == 400 and "sample rate 8000 Hz" in slow.text, slow.text
    short = httpx.post(
        f"{url}/listen",
        files={"clip": ("short.wav", audio.write_wav(clips[0][:8000]), "audio/wav")},
        timeout=30,
    )
    assert short.status_code == 400 and "8000 samples" in short.text, short.text
