"""Keyword spotting's data: clips spoken by espeak-ng from params, one MFCC front end
(equal to TensorFlow's tf.signal, MLPerf Tiny's reference computation), speakers
held out whole by the split, and the audio contract refusing what the model was
not trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.config import AudioContract, SpeechConfig, SplitConfig
from components.config.data import ValidationConfig
from components.data import speech
from components.data.contract import validate_batch, validate_split
from components.data.split import SplitResult, split_dataset
from edge_fleet.device import audio

SMALL = SpeechConfig(
    words=["yes", "stop"],
    unknown_words=["cat", "tree"],
    voices=["en-us", "en-gb"],
    variants=["m3", "f2", "croak"],
    clips_per_class=8,
    seed=3,
)


@pytest.fixture(scope="module")
def clips() -> tuple[list[speech.Utterance], np.ndarray]:
    utterances = speech.draw_utterances(SMALL)
    return utterances, speech.render_all(utterances)


def _tf_mfcc(x: np.ndarray, dtype: str) -> np.ndarray:
    """MLPerf Tiny's get_dataset.py front end, in TensorFlow, on peak-scaled clips."""
    import tensorflow as tf

    wav = tf.constant(x.astype(dtype))
    wav = wav / tf.reduce_max(tf.abs(wav), axis=1, keepdims=True)
    stft = tf.signal.stft(
        wav, 480, 320, fft_length=None, window_fn=tf.signal.hann_window
    )
    mel = tf.signal.linear_to_mel_weight_matrix(
        40, stft.shape[-1], 16000, 20.0, 4000.0, dtype=getattr(tf, dtype)
    )
    log_mel = tf.math.log(tf.tensordot(tf.abs(stft), mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()


def test_the_front_end_is_tensorflows_mfcc(clips):
    _, x = clips
    ours = audio.mfcc(x)
    assert ours.shape == (len(x), 49, 10)
    # On spoken clips over noise, equal to TensorFlow's float32 within 1e-3 (the
    # coefficients span about +-100).
    np.testing.assert_allclose(ours, _tf_mfcc(x, "float32"), atol=1e-3)
    # Anywhere (here a chirp past 4 kHz, whose upper mel bands hold almost nothing),
    # within 0.05 of the float64 computation: float32 rounding in a near-empty
    # band's log (TensorFlow's own float32 is 0.27 from it there).
    t = np.arange(16000) / 16000
    chirp = (0.8 * np.sin(2 * np.pi * (200 + 3000 * t) * t))[None].astype(np.float32)
    np.testing.assert_allclose(audio.mfcc(chirp), _tf_mfcc(chirp, "float64"), atol=0.05)


def test_clips_are_one_second_at_16_khz_and_drawn_from_the_seed(clips):
    utterances, x = clips
    assert x.shape == (8 * 4, 16000)
    assert {u.label for u in utterances} == {"yes", "stop", "silence", "unknown"}
    assert {u.word for u in utterances if u.label == "unknown"} <= {"cat", "tree"}
    assert all(u.word is None for u in utterances if u.label == "silence")
    assert np.abs(x).max() <= 0.9 + 1e-6  # speech.gain's top: never clipped
    again = speech.render_all(speech.draw_utterances(SMALL))
    np.testing.assert_array_equal(x, again)
    other = speech.draw_utterances(SMALL.model_copy(update={"seed": 4}))
    assert [u.voice for u in other] != [u.voice for u in utterances]


def test_a_word_is_louder_than_its_noise_by_the_drawn_ratio(clips):
    utterances, x = clips
    worded = [i for i, u in enumerate(utterances) if u.word is not None]
    for i in worded[:6]:
        rms = np.sqrt((x[i] ** 2).mean())
        quiet = np.quantile(np.abs(x[i]), 0.2)
        assert rms > 2 * quiet, utterances[i]


def test_rows_carry_voice_label_audio_columns_and_mfccs(clips):
    utterances, x = clips
    rows = speech.clip_rows(
        x, [u.label for u in utterances], [u.voice for u in utterances]
    )
    assert list(rows.columns[:6]) == ["voice", "label", *speech.AUDIO_COLUMNS]
    assert list(rows.columns[6:]) == audio.feature_names()
    np.testing.assert_array_equal(
        rows[audio.feature_names()].to_numpy(), audio.mfcc_rows(x)
    )
    assert (rows.sample_rate == 16000).all() and (rows.seconds == 1.0).all()


def _frame(n_voices: int = 12, per_voice: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for v in range(n_voices):
        for label in ("yes", "stop"):
            for _ in range(per_voice):
                rows.append({"voice": f"v{v}", "label": label, "f0": rng.random()})
    return pd.DataFrame(rows)


def test_the_split_holds_whole_voices_out():
    frame = _frame()
    split = split_dataset(
        frame, SplitConfig(group_column="voice", seed=5), "label", ["f0"]
    )
    voices = [set(part.voice) for part in (split.train, split.val, split.test)]
    assert not (voices[0] & voices[1]) and not (voices[0] & voices[2])
    assert not (voices[1] & voices[2])
    assert validate_split(split, ["f0"], "voice").success


def test_the_leakage_check_refuses_a_voice_in_train_and_test():
    frame = _frame()
    train = frame[frame.voice.isin([f"v{i}" for i in range(8)])]
    test = frame[frame.voice.isin(["v7", "v9"])].assign(f0=lambda d: d.f0 + 1)
    val = frame[frame.voice.isin(["v10"])].assign(f0=lambda d: d.f0 + 2)
    outcome = validate_split(SplitResult(train, val, test), ["f0"], "voice")
    assert not outcome.success
    assert "v7" in outcome.summary() and "_group" in outcome.summary()


CONTRACT = ValidationConfig(
    labels=["yes", "stop", "silence", "unknown"], audio=AudioContract(), min_rows=10
)


def _rows(clips_, sample_rate=16000):
    utterances, x = clips_
    return speech.clip_rows(
        x,
        [u.label for u in utterances],
        [u.voice for u in utterances],
        sample_rate=sample_rate,
    )


def test_the_audio_contract_passes_the_generated_clips(clips):
    outcome = validate_batch(
        _rows(clips), CONTRACT, audio.feature_names(), "label", group="voice"
    )
    assert outcome.success, outcome.summary()


SOME = audio.feature_names()[:10]  # the refusals need not judge all 490 columns


def _some(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[["voice", "label", *speech.AUDIO_COLUMNS, *SOME]]


def test_the_audio_contract_refuses_another_rate(clips):
    utterances, x = clips
    slow = x[:, ::2]  # the same clips at 8 kHz
    rows = speech.clip_rows(
        slow,
        [u.label for u in utterances],
        [u.voice for u in utterances],
        sample_rate=8000,
    )
    outcome = validate_batch(_some(rows), CONTRACT, SOME, "label", group="voice")
    assert not outcome.success
    failed = {(f.expectation, f.column) for f in outcome.failures}
    assert ("expect_column_values_to_be_in_set", "sample_rate") in failed
    assert "8000" in outcome.summary()


def test_the_audio_contract_refuses_a_clipped_batch(clips):
    utterances, x = clips
    loud = np.clip(x * 8, -1, 1)  # a gain stage turned up: peaks flattened
    rows = speech.clip_rows(
        loud, [u.label for u in utterances], [u.voice for u in utterances]
    )
    outcome = validate_batch(_some(rows), CONTRACT, SOME, "label", group="voice")
    assert not outcome.success
    assert any(f.column == "clipped_share" for f in outcome.failures)


def test_the_audio_contract_refuses_silent_clips(clips):
    utterances, x = clips
    rows = speech.clip_rows(
        x * 1e-4, [u.label for u in utterances], [u.voice for u in utterances]
    )
    outcome = validate_batch(_some(rows), CONTRACT, SOME, "label", group="voice")
    assert any(f.column == "level_db" for f in outcome.failures)


def test_a_wav_clip_is_read_or_refused_by_name(clips):
    _, x = clips
    np.testing.assert_allclose(
        audio.read_wav(audio.write_wav(x[0])), x[0], atol=1 / 32768
    )
    with pytest.raises(audio.ClipError, match="sample rate 8000 Hz, expected 16000"):
        audio.read_wav(audio.write_wav(x[0][::2], rate=8000))
    with pytest.raises(audio.ClipError, match="8000 samples .* expected 16000"):
        audio.read_wav(audio.write_wav(x[0][:8000]))
    with pytest.raises(audio.ClipError, match="not a PCM WAV"):
        audio.read_wav(b"RIFF....not a wav")


def test_a_device_summary_is_fourteen_numbers_not_490(clips):
    _, x = clips
    (quiet,), (loud,) = audio.summaries(x[:1] * 0.1), audio.summaries(x[:1])
    assert len(loud.as_dict()) == 3 + 10
    assert loud.level_db == pytest.approx(quiet.level_db + 20, abs=0.01)
    assert loud.mfcc_means == pytest.approx(quiet.mfcc_means, abs=1e-3)  # peak-scaled


def test_the_data_card_counts_speakers_per_split_and_names_what_it_checks(clips):
    from components.data.datacard import build_card, card_markdown

    rows = _rows(clips)
    split = split_dataset(
        rows, SplitConfig(group_column="voice", seed=1), "label", SOME
    )
    card = build_card(
        {"name": "kws", "source": "speech:espeak-ng", "description": "spoken"},
        rows,
        split,
        "label",
        "md5",
        group="voice",
        checked=speech.AUDIO_COLUMNS,
    )
    assert card["features"] == 490 and card["split_by"] == "voice"
    assert sum(card["groups"].values()) == rows.voice.nunique()  # none in two
    text = card_markdown(card)
    assert "every voice whole in one split" in text
    assert "mfcc_00_0 ... mfcc_48_9 (490 columns)" in text
    assert "`sample_rate`, `seconds`, `clipped_share`, `level_db`, `voice`" in text
