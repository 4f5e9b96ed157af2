"""The keyword spotter's front end, one implementation for training, serving and the
device agent: MLPerf Tiny's MFCC (its keyword-spotting reference, get_dataset.py):
a 1 s clip at 16 kHz, scaled to its peak, 30 ms Hann windows every 20 ms (49
frames), the magnitude of a 512-point FFT, 40 mel bands from 20 to 4,000 Hz
(TensorFlow's `linear_to_mel_weight_matrix`), log(mel + 1e-6), and the first 10
coefficients of TensorFlow's `mfccs_from_log_mel_spectrograms` (DCT-II scaled by
1/sqrt(2 * 40)): 49 x 10 numbers per clip. NumPy only, so a gateway computes what
the model was trained on; tests compare it with `tf.signal` itself.

Also the WAV reading a device or the serving endpoint does (16-bit PCM, mono, 16 kHz,
1 s: anything else is refused by name, never resampled in secret) and the compact
summary a device reports per clip instead of 490 numbers."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000
WINDOW = 480  # 30 ms
STRIDE = 320  # 20 ms
FFT = 512  # the next power of two above the window, as tf.signal.stft does
MEL_BANDS = 40
LOWER_HZ, UPPER_HZ = 20.0, 4_000.0
COEFFICIENTS = 10
FRAMES = 1 + (CLIP_SAMPLES - WINDOW) // STRIDE  # 49
SHAPE = (FRAMES, COEFFICIENTS)
LOG_OFFSET = 1e-6
# A sample at or past this fraction of full scale counts as clipped.
CLIP_LEVEL = 0.999


def feature_names() -> list[str]:
    """The model's input columns, frame-major: mfcc_<frame>_<coefficient>."""
    return [f"mfcc_{f:02d}_{c}" for f in range(FRAMES) for c in range(COEFFICIENTS)]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # TensorFlow's mel scale (HTK's, natural log): 1127 ln(1 + f / 700).
    return 1127.0 * np.log1p(hz / 700.0)


def mel_matrix() -> np.ndarray:
    """(257, 40) weights from FFT bins to mel bands, as TensorFlow's
    linear_to_mel_weight_matrix: triangles on the mel scale, the DC bin zero."""
    bins = FFT // 2 + 1
    linear = np.linspace(0.0, SAMPLE_RATE / 2, bins)[1:]
    bins_mel = _hz_to_mel(linear)[:, None]
    edges = np.linspace(
        _hz_to_mel(np.float64(LOWER_HZ)),
        _hz_to_mel(np.float64(UPPER_HZ)),
        MEL_BANDS + 2,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, MEL_BANDS)), weights])


def dct_matrix() -> np.ndarray:
    """(40, 10): TensorFlow's unnormalized DCT-II (2 * sum x_n cos(pi k (2n+1) / 2N))
    times 1/sqrt(2N), as mfccs_from_log_mel_spectrograms computes it."""
    n = np.arange(MEL_BANDS)[:, None]
    k = np.arange(COEFFICIENTS)[None, :]
    basis = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * MEL_BANDS))
    return basis / np.sqrt(2.0 * MEL_BANDS)


_MEL = mel_matrix().astype(np.float32)
_DCT = dct_matrix().astype(np.float32)
# tf.signal.hann_window's default: periodic.
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)


def mfcc(clips: np.ndarray) -> np.ndarray:
    """(n, 16000) or (16000,) samples in [-1, 1] -> (n, 49, 10) float32 MFCCs."""
    x = np.atleast_2d(np.asarray(clips, dtype=np.float32))
    if x.shape[1] != CLIP_SAMPLES:
        raise ValueError(
            f"clip: {x.shape[1]} samples, expected {CLIP_SAMPLES} "
            f"(1 s at {SAMPLE_RATE} Hz)"
        )
    peak = np.abs(x).max(axis=1, keepdims=True)
    x = x / np.maximum(peak, 1e-9)
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=1)[:, ::STRIDE]
    spectrum = np.abs(np.fft.rfft(frames * _HANN, n=FFT, axis=-1)).astype(np.float32)
    log_mel = np.log(spectrum @ _MEL + LOG_OFFSET)
    return (log_mel @ _DCT).astype(np.float32)


def mfcc_rows(clips: np.ndarray) -> np.ndarray:
    """The MFCCs as the model's input rows: (n, 490), frame-major."""
    return mfcc(clips).reshape(-1, FRAMES * COEFFICIENTS)


class ClipError(ValueError):
    """A clip that is not what the model was trained on: says what it is and what
    was expected."""


def read_wav(data: bytes) -> np.ndarray:
    """A WAV file's bytes -> 16,000 float32 samples in [-1, 1]. Refused with a
    ClipError naming what differs: another rate, length, sample width or channel
    count (never resampled, trimmed or padded here)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width, n = (
                w.getframerate(),
                w.getnchannels(),
                w.getsampwidth(),
                w.getnframes(),
            )
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise ClipError(f"not a PCM WAV file: {exc}") from None
    if rate != SAMPLE_RATE:
        raise ClipError(f"sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    if channels != 1:
        raise ClipError(f"{channels} channels, expected 1 (mono)")
    if width != 2:
        raise ClipError(f"{8 * width}-bit samples, expected 16-bit PCM")
    if n != CLIP_SAMPLES:
        raise ClipError(
            f"{n} samples ({n / rate:.3f} s), expected {CLIP_SAMPLES} (1 s)"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """float samples in [-1, 1] -> 16-bit PCM mono WAV bytes (values past full scale
    are clipped, as a sound card's converter clips them)."""
    pcm = np.clip(np.round(np.asarray(samples) * 32768.0), -32768, 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


# What a device reports about the MFCC rows it ran instead of their 490 columns
# (agent telemetry; the monitor summarises the training rows the same way): each
# coefficient's mean over the clip's frames, how much the frames' energy (c0)
# varies, and the noise floor, the quietest tenth of the frames' c0 below the
# loudest (a clip is scaled to its peak: a noisy one has a high floor).
SUMMARY = "mfcc"
SUMMARY_NAMES = [*(f"c{k}_mean" for k in range(COEFFICIENTS)), "c0_spread", "floor"]


def row_summaries(rows: np.ndarray) -> np.ndarray:
    """(n, 490) MFCC rows -> (n, 12): SUMMARY_NAMES per row."""
    frames = np.asarray(rows, dtype=np.float64).reshape(-1, FRAMES, COEFFICIENTS)
    c0 = frames[:, :, 0]
    floor = np.quantile(c0, 0.1, axis=1) - c0.max(axis=1)
    return np.column_stack([frames.mean(axis=1), c0.std(axis=1), floor])


@dataclass(frozen=True)
class ClipSummary:
    """What a device reports about one clip instead of its 490 inputs: its level
    (RMS, dBFS), noise floor (the quietest 10% of its 20 ms frames, dBFS), the share
    of clipped samples, and the mean of each MFCC coefficient over the clip."""

    level_db: float
    noise_floor_db: float
    clipped_share: float
    mfcc_means: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        out = {
            "level_db": self.level_db,
            "noise_floor_db": self.noise_floor_db,
            "clipped_share": self.clipped_share,
        }
        out.update({f"mfcc_mean_{i}": v for i, v in enumerate(self.mfcc_means)})
        return out


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def summaries(
    clips: np.ndarray, features: np.ndarray | None = None
) -> list[ClipSummary]:
    """One ClipSummary per clip; `features` (n, 490), the clips' MFCC rows, when
    already computed."""
    x = np.atleast_2d(np.asarray(clips, dtype=np.float32))
    rows = mfcc_rows(x) if features is None else np.asarray(features, np.float32)
    coefficient_means = rows.reshape(-1, FRAMES, COEFFICIENTS).mean(axis=1)
    frames = np.lib.stride_tricks.sliding_window_view(x, STRIDE, axis=1)[:, ::STRIDE]
    frame_power = (frames.astype(np.float64) ** 2).mean(axis=-1)
    floor = np.quantile(frame_power, 0.1, axis=1)
    level = (x.astype(np.float64) ** 2).mean(axis=1)
    clipped = (np.abs(x) >= CLIP_LEVEL).mean(axis=1)
    return [
        ClipSummary(
            level_db=round(float(_db(level[i])), 3),
            noise_floor_db=round(float(_db(floor[i])), 3),
            clipped_share=round(float(clipped[i]), 5),
            mfcc_means=tuple(round(float(v), 4) for v in coefficient_means[i]),
        )
        for i in range(len(x))
    ]
