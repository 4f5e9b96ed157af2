"""Keyword clips made here: eSpeak NG (Debian's espeak-ng) speaks each keyword, and
"unknown" words, across its voices and variants at a drawn pitch and rate; each word
is placed at a random offset in a 1 s, 16 kHz clip over background noise at a drawn
signal-to-noise ratio; "silence" is noise alone. Every draw comes from the `speech:`
section and its seed, so the settings are the data version. Nothing is downloaded.

A clip becomes one row: its speaker (`voice`, the split's group), label, what the
audio contract checks (sample_rate, seconds, clipped_share, level_db) and the 490
MFCC numbers of the shared front end (edge_fleet/device/audio.py), which serving
and the device agent compute the same way."""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from components.config import SpeechConfig
from components.errors import ConfigError
from edge_fleet.device import audio

# The front end, for serving (which may not import the device agent itself).
ClipError, read_wav, mfcc_rows = audio.ClipError, audio.read_wav, audio.mfcc_rows
feature_names = audio.feature_names
# What devices report per clip, and the monitor computes of the training rows.
row_summaries, SUMMARY_NAMES = audio.row_summaries, audio.SUMMARY_NAMES

SILENCE, UNKNOWN = "silence", "unknown"
VOICE = "voice"
AUDIO_COLUMNS = ("sample_rate", "seconds", "clipped_share", "level_db")
ESPEAK = "espeak-ng"


def labels(cfg: SpeechConfig) -> list[str]:
    """The classes, as MLPerf Tiny orders them: the keywords, then silence, unknown."""
    return [*cfg.words, SILENCE, UNKNOWN]


def espeak_version() -> str:
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise ConfigError(
            "data.source speech:espeak-ng: the espeak-ng program is not installed",
            hint="install Debian's espeak-ng (`bash tests/system_packages.sh` does)",
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split("  ")[0]


@dataclass(frozen=True)
class Utterance:
    """One clip's draws."""

    label: str
    word: str | None  # None: silence
    voice: str  # accent+variant, the speaker
    pitch: int
    speed: int
    offset: float  # where the word starts, share of the room left in the clip
    gain: float
    snr_db: float
    noise: str
    seed: int


def draw_utterances(cfg: SpeechConfig) -> list[Utterance]:
    rng = np.random.default_rng(cfg.seed)
    speakers = [f"{v}+{m}" for v in cfg.voices for m in cfg.variants]
    out = []
    for label in labels(cfg):
        for _ in range(cfg.clips_per_class):
            word = (
                None
                if label == SILENCE
                else str(rng.choice(cfg.unknown_words))
                if label == UNKNOWN
                else label
            )
            out.append(
                Utterance(
                    label=label,
                    word=word,
                    voice=str(rng.choice(speakers)),
                    pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                    speed=int(rng.integers(cfg.speed[0], cfg.speed[1] + 1)),
                    offset=float(rng.random()),
                    gain=float(rng.uniform(*cfg.gain)),
                    snr_db=float(rng.uniform(*cfg.snr_db)),
                    noise=str(rng.choice(cfg.noise)),
                    seed=int(rng.integers(2**31)),
                )
            )
    return out


def speak(word: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """espeak-ng's speech of `word` at 16 kHz, float in [-1, 1], silence trimmed."""
    done = subprocess.run(
        [ESPEAK, "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", word],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0 or len(done.stdout) <= 44:
        raise ConfigError(
            f"data.speech: espeak-ng -v {voice} could not speak {word!r}: "
            f"{done.stderr.decode(errors='replace').strip() or 'no audio'}"
        )
    # --stdout writes a streaming WAV header (its length field unset): the samples
    # are what follows the 44-byte header, 16-bit mono at the voice's rate (22,050
    # Hz; an MBROLA voice's 16,000), read from the header.
    rate = int.from_bytes(done.stdout[24:28], "little")
    pcm = np.frombuffer(done.stdout[44:], dtype="<i2").astype(np.float32) / 32768.0
    common = math.gcd(audio.SAMPLE_RATE, rate)
    speech = resample_poly(pcm, audio.SAMPLE_RATE // common, rate // common)
    speech = speech.astype(np.float32)
    loud = np.flatnonzero(np.abs(speech) > 0.01 * max(np.abs(speech).max(), 1e-9))
    return speech[loud[0] : loud[-1] + 1] if loud.size else speech


def noise(
    kind: str, rng: np.random.Generator, n: int = audio.CLIP_SAMPLES
) -> np.ndarray:
    """Background noise with unit RMS: white, pink (1/f), brown (1/f^2), mains hum
    (50 Hz and harmonics over a little hiss), or factory (hum, pink rumble and
    impacts)."""
    white = rng.standard_normal(n)
    if kind == "white":
        out = white
    elif kind in ("pink", "brown"):
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f) if kind == "pink" else f
        out = np.fft.irfft(spectrum, n)
    elif kind == "hum":
        t = np.arange(n) / audio.SAMPLE_RATE
        base = rng.choice([50.0, 60.0])
        out = sum(
            np.sin(2 * np.pi * base * h * t + rng.random() * 6.3) / h
            for h in (1, 2, 3, 5)
        )
        out = out + 0.1 * white
    elif kind == "factory":
        hum = noise("hum", rng, n)
        rumble = noise("pink", rng, n)
        impacts = np.zeros(n)
        for at in rng.integers(0, n - 800, 6):
            impacts[at : at + 800] += rng.standard_normal(800) * np.exp(
                -np.arange(800) / 120
            )
        out = hum + rumble + 2.0 * impacts / max(np.sqrt((impacts**2).mean()), 1e-9)
    else:
        raise ConfigError(f"data.speech.noise: unknown noise {kind!r}")
    out = np.asarray(out, dtype=np.float64)
    return (out / max(np.sqrt((out**2).mean()), 1e-12)).astype(np.float32)


def render(u: Utterance) -> np.ndarray:
    """One utterance as a 1 s clip at 16 kHz."""
    rng = np.random.default_rng(u.seed)
    background = noise(u.noise, rng)
    clip = np.zeros(audio.CLIP_SAMPLES, dtype=np.float32)
    if u.word is not None:
        speech = speak(u.word, u.voice, u.pitch, u.speed)
        speech = speech[: audio.CLIP_SAMPLES]
        start = int(u.offset * (audio.CLIP_SAMPLES - len(speech)))
        clip[start : start + len(speech)] = speech
        speech_rms = np.sqrt((speech.astype(np.float64) ** 2).mean())
        clip += background * speech_rms / 10 ** (u.snr_db / 20)
    else:
        clip += background
    return (clip * u.gain / max(np.abs(clip).max(), 1e-9)).astype(np.float32)


def render_all(utterances: Sequence[Utterance], workers: int = 4) -> np.ndarray:
    """Every utterance's clip, (n, 16000); espeak-ng runs `workers` at a time."""
    espeak_version()
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(render, utterances)))


def clip_rows(
    clips: np.ndarray,
    label: Sequence[str],
    voice: Sequence[str],
    label_column: str = "label",
    sample_rate: int = audio.SAMPLE_RATE,
) -> pd.DataFrame:
    """Clips as rows: voice, label, the audio contract's columns and the MFCC
    columns. Clips at another rate or length get their audio columns (the contract
    refuses them) and no MFCCs (NaN)."""
    clips = np.atleast_2d(np.asarray(clips, dtype=np.float32))
    meta = pd.DataFrame(
        {
            VOICE: list(voice),
            label_column: list(label),
            "sample_rate": sample_rate,
            "seconds": clips.shape[1] / sample_rate,
            "clipped_share": (np.abs(clips) >= audio.CLIP_LEVEL).mean(axis=1),
            "level_db": 10
            * np.log10(np.maximum((clips.astype(np.float64) ** 2).mean(axis=1), 1e-12)),
        }
    )
    if sample_rate == audio.SAMPLE_RATE and clips.shape[1] == audio.CLIP_SAMPLES:
        values = audio.mfcc_rows(clips)
    else:
        values = np.full((len(clips), len(audio.feature_names())), np.nan, np.float32)
    features = pd.DataFrame(values, columns=audio.feature_names())
    return pd.concat([meta, features], axis=1)


def speech_frame(cfg: SpeechConfig, label_column: str = "label") -> pd.DataFrame:
    """The configured clips as rows."""
    utterances = draw_utterances(cfg)
    clips = render_all(utterances)
    return clip_rows(
        clips,
        [u.label for u in utterances],
        [u.voice for u in utterances],
        label_column,
    )


def description(cfg: SpeechConfig) -> str:
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    return (
        f"Keyword clips spoken by {espeak_version()} (settings {digest}): "
        f"{len(cfg.words)} keywords, {SILENCE} and {UNKNOWN} ({len(cfg.unknown_words)} "
        f"other words), {cfg.clips_per_class} clips each, {len(cfg.voices)} voices x "
        f"{len(cfg.variants)} variants as speakers, pitch {list(cfg.pitch)}, "
        f"{list(cfg.speed)} words/min, each word at a random offset in a 1 s, 16 kHz "
        f"clip over {'/'.join(cfg.noise)} noise at {list(cfg.snr_db)} dB SNR; as the "
        "MLPerf Tiny MFCC front end's 49 x 10 coefficients."
    )


def noisy_surroundings(
    cfg: SpeechConfig, strength: float, clips_per_class: int, seed: int
) -> SpeechConfig:
    """A cohort whose surroundings got loud (the loop's drift on keyword spotting):
    the same words and speakers over factory noise (hum, rumble, impacts) at a
    signal-to-noise ratio drawn from [0, 12 / strength] dB (strength 3: 0-4 dB)."""
    return cfg.model_copy(
        update={
            "noise": ["factory"],
            "snr_db": (0.0, 12.0 / max(strength, 1e-3)),
            "clips_per_class": max(3, clips_per_class),
            "seed": seed,
        }
    )
