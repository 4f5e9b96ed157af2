"""A keyword spotter's devices: the agent's local /listen takes a WAV clip and
answers what /predict answers for the MFCC row training computed of it (one front
end); its reports summarise clips in 12 numbers, which the fleet server checks and
the monitor compares with the training rows summarised the same way."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from components.config import MonitoringConfig, SpeechConfig
from components.data import speech
from edge_fleet.device import audio
from edge_fleet.device.agent import Agent, Identity
from edge_fleet.device.local import LocalServer
from edge_fleet.sim.streams import DataStream
from monitoring.drift import check, device_frames
from stack.net import free_port
from tests.edge_fleet.conftest import drive, linear_onnx

pytestmark = pytest.mark.integration

SMALL = SpeechConfig(
    words=["yes", "stop"],
    unknown_words=["cat", "tree"],
    voices=["en-us", "en-gb"],
    variants=["m3", "f2"],
    clips_per_class=12,
    seed=5,
)


@pytest.fixture(scope="module")
def spoken() -> tuple[pd.DataFrame, np.ndarray, list]:
    """Clips, their rows as training computes them (speech.clip_rows), and
    a linear keyword spotter on those rows as ONNX."""
    utterances = speech.draw_utterances(SMALL)
    # As a WAV file holds them: 16-bit samples.
    clips = np.stack(
        [audio.read_wav(audio.write_wav(c)) for c in speech.render_all(utterances)]
    )
    rows = speech.clip_rows(
        clips, [u.label for u in utterances], [u.voice for u in utterances]
    )
    return rows, clips, utterances


@pytest.fixture
def listening(fleet_server, spoken, http, tmp_path):
    rows, _, _ = spoken
    x = rows[audio.feature_names()].to_numpy(np.float32)
    fit = LogisticRegression(max_iter=500).fit(x / 50, rows["label"])
    model = linear_onnx(tmp_path / "kws.onnx", fit.coef_.T / 50, fit.intercept_)
    fleet_server.admin.upload(
        "1",
        model,
        model="edgeloop-digits",
        variant="fp32",
        profiles=["gateway"],
        features=len(audio.feature_names()),
    )
    fleet_server.admin.retarget("1", "test")
    code = fleet_server.enroll_code(devices=1)
    device = Agent(
        fleet_server.url,
        Identity("kws-000", "gateway", fleet_server.cfg.cohorts[0]),
        tmp_path / "kws-000",
        factory_root=fleet_server.factory_root,
        enroll_code=code,
        cfg=fleet_server.cfg,
        stream=DataStream(x, seed=0),
        http=http,
        front_end=audio.SUMMARY,
    )
    drive([device], lambda: device.version == "1")
    server = LocalServer(device, "127.0.0.1", free_port()).start()
    yield device, server, fit
    server.shutdown()


def test_the_agent_hears_a_clip_as_training_computed_it(listening, spoken):
    device, server, fit = listening
    rows, clips, utterances = spoken
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for i in (0, 13, 30):
        heard = httpx.post(f"{url}/listen", content=audio.write_wav(clips[i])).json()
        row = rows[audio.feature_names()].iloc[i].tolist()
        predicted = httpx.post(f"{url}/predict", json={"row": row}).json()
        assert heard == predicted
    slow = httpx.post(f"{url}/listen", content=audio.write_wav(clips[0][::2], 8000))
    assert slow.status_code == 400
    assert "sample rate 8000 Hz, expected 16000 Hz" in slow.json()["error"]
    short = httpx.post(f"{url}/listen", content=audio.write_wav(clips[0][:4000]))
    assert short.status_code == 400 and "4000 samples" in short.json()["error"]


def test_reports_summarise_clips_and_the_monitor_compares_them(
    listening, spoken, fleet_server
):
    device, _, _ = listening
    rows, _, _ = spoken
    for _ in range(3):
        device.step()
    reports = fleet_server.admin.telemetry(limit=10)
    assert reports, "no report stored"
    stats = reports[0]["feature_stats"]
    assert stats["summary"] == "mfcc"
    assert len(stats["mean"]) == len(audio.SUMMARY_NAMES) == 12  # not 490
    train = rows[["label", *audio.feature_names()]]
    reference, current = device_frames(
        train, reports, batch=64, reference_batches=20, label_column="label"
    )
    assert list(reference.columns[:2]) == ["mean_c0_mean", "mean_c1_mean"]
    assert len(reference.columns) == 2 * 12 + 4  # means, stds, class shares
    assert list(current.columns) == list(reference.columns)
    result = check("device", reference, current, MonitoringConfig(), min_rows=1)
    assert (result.columns, result.rows) == (len(reference.columns), len(current))


def test_the_server_refuses_a_summary_of_the_wrong_width(listening, fleet_server):
    device, _, _ = listening
    payload = device._checkin()  # what the agent sends, its summary cut to 5
    stats = payload["telemetry"]["feature_stats"]
    payload["telemetry"]["feature_stats"] = {
        k: v[:5] if isinstance(v, list) else v for k, v in stats.items()
    }
    answer = device.http.post(
        f"{fleet_server.url}/v1/devices/{device.id.device_id}/checkin",
        headers={"Authorization": f"Bearer {device.state['token']}"},
        json=payload,
    )
    assert answer.status_code == 409, answer.text
    assert "5 summary values: expected 12 per clip" in answer.text
