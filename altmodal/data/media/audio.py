"""Audio files to Kaldi-compatible log-mel filterbanks, the paper's audio input.

The paper's reference code calls torchaudio's ``compliance.kaldi.fbank`` on the waveform read as
floats in [-1, 1], after subtracting the waveform's mean, with ``htk_compat=True``,
``use_energy=False``, ``window_type='hanning'``, ``num_mel_bins=128``, ``dither=0``,
``frame_shift=10`` (ms) and the Kaldi defaults otherwise (25 ms frames, pre-emphasis 0.97,
per-frame DC removal, FFT size rounded up to a power of two, ``snip_edges``, mel range 20 Hz to
Nyquist, power spectrum, log floored at float32 epsilon); the result is zero-padded or cut to
1,024 frames. :class:`FbankConfig` holds these settings (sizes are parameters).

Two implementations compute the same numbers:

- ``kaldi-native-fbank`` (the ``media`` extra), a C++ port of Kaldi's feature extractor;
- a vectorised torch port written here (:func:`torch_fbank`).

Kaldi and kaldi-native-fbank refuse settings in which a mel filter covers no FFT bin ("num_mel_bins
too large"), while torchaudio silently returns log(epsilon) for such a filter. The paper's own
setting is one of them: 128 bins at 16 kHz leaves a few of the lowest filters empty. The default
backend ``auto`` therefore uses kaldi-native-fbank when it accepts the settings and the torch port
(which behaves as torchaudio) when it does not, so the paper's features are reproduced exactly
either way. Multi-channel files use their first channel, as torchaudio's fbank does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from altmodal.data.media import MediaError, MissingExtra, require

log = logging.getLogger(__name__)

FLOAT32_EPS = float(np.finfo(np.float32).eps)
Backend = Literal["auto", "kaldi-native-fbank", "torch"]


@dataclass(frozen=True)
class FbankConfig:
    """Log-mel filterbank settings; the defaults are the paper's.

    Attributes:
        num_bins: mel filters (feature width F).
        frames: frames kept per clip (T); shorter clips are zero-padded, longer ones cut.
        frame_length_ms: analysis window length.
        frame_shift_ms: hop between frames.
        low_freq: lowest mel filter edge in Hz.
        high_freq: highest edge in Hz; zero or negative means Nyquist plus this offset (Kaldi).
        remove_mean: subtract the waveform's mean before framing (the reference code does).
        backend: ``auto``, ``kaldi-native-fbank`` or ``torch`` (see the module docstring).
    """

    num_bins: int = 128
    frames: int = 1024
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = 0.0
    remove_mean: bool = True
    backend: Backend = "auto"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The first channel of an audio file as float64 in [-1, 1], and its sample rate.

    Raises:
        MediaError: the file is missing, unreadable or empty.
    """
    soundfile = require("soundfile", "reading audio files")
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such audio file")
    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as err:  # LibsndfileError is a RuntimeError
        raise MediaError(path, f"cannot decode audio ({err})") from err
    if data.shape[0] == 0:
        raise MediaError(path, "the audio file holds no samples")
    declared = wav_declared_frames(path)
    if declared is not None and declared > data.shape[0]:
        raise MediaError(path, f"truncated: the header declares {declared} frames, the file holds {data.shape[0]}")
    return np.ascontiguousarray(data[:, 0]), int(rate)


def wav_declared_frames(path: Path) -> int | None:
    """The frame count a WAV file's header declares (its ``data`` chunk size over the block
    size), or None for other formats and for streamed WAVs without a size."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"data":
                return size // block if block and size != 0xFFFFFFFF else None
            body = fh.read(size + size % 2)
            if name == b"fmt " and len(body) >= 14:
                block = int.from_bytes(body[12:14], "little")


def audio_fbank(path: str | Path, config: FbankConfig = FbankConfig()) -> np.ndarray:
    """(frames, num_bins) float32 log-mel filterbank of an audio file, padded or cut."""
    waveform, rate = read_audio(path)
    try:
        features = log_mel_fbank(waveform, rate, config)
    except ValueError as err:
        raise MediaError(path, f"{err}") from err
    return fit_frames(features, config.frames)


def log_mel_fbank(waveform: np.ndarray, sample_rate: int, config: FbankConfig = FbankConfig()) -> np.ndarray:
    """(n_frames, num_bins) float32 Kaldi log-mel filterbank of a 1-D waveform (not padded).

    Raises:
        ValueError: the waveform is shorter than one window, or holds NaN/inf, or the settings
            are impossible; the message says which.
    """
    wave = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if not np.isfinite(wave).all():
        raise ValueError("the waveform holds NaN or infinite samples")
    length, _ = window_sizes(sample_rate, config)
    if len(wave) < length:
        raise ValueError(
            f"{len(wave)} samples at {sample_rate} Hz is shorter than one {config.frame_length_ms:g} ms window"
        )
    if config.remove_mean:
        wave = wave - wave.mean()
    if config.backend == "torch":
        return torch_fbank(wave, sample_rate, config)
    if config.backend == "kaldi-native-fbank":
        return knf_fbank(wave, sample_rate, config)
    try:
        return knf_fbank(wave, sample_rate, config)
    except MissingExtra:
        return torch_fbank(wave, sample_rate, config)
    except ValueError as err:
        if "too large" not in str(err):
            raise
        _note_empty_filters(sample_rate, config)
        return torch_fbank(wave, sample_rate, config)


def fit_frames(features: np.ndarray, frames: int) -> np.ndarray:
    """Zero-pad (at the end) or cut a (n, F) array to ``frames`` rows, as the reference code does."""
    n = features.shape[0]
    if n >= frames:
        return np.ascontiguousarray(features[:frames])
    return np.concatenate([features, np.zeros((frames - n, features.shape[1]), dtype=features.dtype)])


def window_sizes(sample_rate: int, config: FbankConfig) -> tuple[int, int]:
    """Window length and shift in samples, truncated as Kaldi does."""
    length = int(sample_rate * 0.001 * config.frame_length_ms)
    shift = int(sample_rate * 0.001 * config.frame_shift_ms)
    if length < 2 or shift < 1:
        raise ValueError(f"a {config.frame_length_ms:g} ms window at {sample_rate} Hz is too short")
    return length, shift


def knf_fbank(waveform: np.ndarray, sample_rate: int, config: FbankConfig) -> np.ndarray:
    """The filterbank computed by kaldi-native-fbank (mean removal is the caller's)."""
    knf = require("kaldi_native_fbank", "computing filterbanks with kaldi-native-fbank")
    opts = knf.FbankOptions()
    frame = opts.frame_opts
    frame.samp_freq = float(sample_rate)
    frame.frame_length_ms = float(config.frame_length_ms)
    frame.frame_shift_ms = float(config.frame_shift_ms)
    frame.dither = 0.0
    frame.window_type = "hanning"
    frame.preemph_coeff = 0.97
    frame.remove_dc_offset = True
    frame.round_to_power_of_two = True
    frame.snip_edges = True
    opts.mel_opts.num_bins = int(config.num_bins)
    opts.mel_opts.low_freq = float(config.low_freq)
    opts.mel_opts.high_freq = float(config.high_freq)
    opts.use_energy = False
    opts.htk_compat = True
    opts.use_log_fbank = True
    opts.use_power = True
    computer = knf.OnlineFbank(opts)  # raises ValueError when a filter would be empty
    computer.accept_waveform(float(sample_rate), np.asarray(waveform, dtype=np.float32))
    computer.input_finished()
    rows = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), config.num_bins)


def torch_fbank(waveform: np.ndarray, sample_rate: int, config: FbankConfig) -> np.ndarray:
    """The Kaldi filterbank in torch (float64 inside), behaving as torchaudio for empty filters."""
    length, shift = window_sizes(sample_rate, config)
    wave = torch.as_tensor(np.asarray(waveform, dtype=np.float64))
    n_frames = 1 + (len(wave) - length) // shift
    frames = wave.unfold(0, length, shift)[:n_frames]  # (n, L)
    frames = frames - frames.mean(dim=1, keepdim=True)
    first = frames[:, :1] * (1 - 0.97)  # Kaldi pre-emphasises the first sample against itself
    frames = torch.cat([first, frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)
    i = torch.arange(length, dtype=torch.float64)
    frames = frames * (0.5 - 0.5 * torch.cos(2 * math.pi * i / (length - 1)))
    padded = 1 << (length - 1).bit_length()
    spectrum = torch.fft.rfft(frames, n=padded).abs().pow(2)  # (n, padded/2 + 1)
    banks = torch.as_tensor(mel_banks(config.num_bins, padded, sample_rate, config.low_freq, config.high_freq))
    energies = spectrum[:, : padded // 2] @ banks.T  # the Nyquist bin has no weight in Kaldi
    return torch.log(energies.clamp_min(FLOAT32_EPS)).to(torch.float32).numpy()


def mel(freq: np.ndarray | float) -> np.ndarray:
    """Kaldi's mel scale, 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def mel_banks(num_bins: int, padded: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """(num_bins, padded / 2) triangular filters, equally spaced on the mel scale (Kaldi's rule:
    a bin's weight is positive only strictly inside its triangle)."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"mel range {low_freq:g}-{high:g} Hz must lie inside 0-{nyquist:g} Hz")
    fft_mel = mel(np.arange(padded // 2) * sample_rate / padded)  # (K,)
    mel_low, mel_high = float(mel(low_freq)), float(mel(high))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + delta * np.arange(num_bins)[:, None]  # (B, 1)
    center, right = left + delta, left + 2 * delta
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    weights = np.minimum(up, down)
    return np.where((fft_mel > left) & (fft_mel < right), weights, 0.0)


def empty_filters(num_bins: int, sample_rate: int, config: FbankConfig = FbankConfig()) -> int:
    """How many mel filters cover no FFT bin at these settings (they output log(epsilon))."""
    length, _ = window_sizes(sample_rate, config)
    padded = 1 << (length - 1).bit_length()
    banks = mel_banks(num_bins, padded, sample_rate, config.low_freq, config.high_freq)
    return int((banks.max(axis=1) <= 0).sum())


_NOTED: set[tuple[int, int]] = set()


def _note_empty_filters(sample_rate: int, config: FbankConfig) -> None:
    key = (sample_rate, config.num_bins)
    if key not in _NOTED:
        _NOTED.add(key)
        log.info(
            "%d mel bins at %d Hz leave %d filter(s) empty; kaldi-native-fbank refuses this, so the torch port "
            "computes it (empty filters give log(eps), as torchaudio's fbank in the reference code)",
            config.num_bins,
            sample_rate,
            empty_filters(config.num_bins, sample_rate, config),
        )
