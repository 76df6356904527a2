"""Filterbanks: both backends against an independent numpy transcription of Kaldi's algorithm."""

from dataclasses import replace

import numpy as np
import pytest

from altmodal.data import media
from altmodal.data.media import MediaError, MissingExtra
from altmodal.data.media.audio import FbankConfig, audio_fbank, empty_filters, fit_frames, log_mel_fbank, read_audio
from tests.media_fakes import write_wav

pytest.importorskip("soundfile")


def kaldi_fbank_reference(wave: np.ndarray, rate: int, bins: int) -> np.ndarray:
    """Kaldi's fbank written out loop by loop (snip_edges, DC removal, pre-emphasis 0.97,
    symmetric Hann window, power spectrum, mel triangles, natural log floored at float32 eps)."""
    length, shift = int(rate * 0.025), int(rate * 0.010)
    fft = 1
    while fft < length:
        fft *= 2
    nyquist, n_bins = rate / 2, fft // 2

    def to_mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = to_mel(20.0), to_mel(nyquist)
    step = (hi - lo) / (bins + 1)
    banks = np.zeros((bins, n_bins))
    for b in range(bins):
        left, center, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        for k in range(n_bins):
            m = to_mel(k * rate / fft)
            if left < m <= center:
                banks[b, k] = (m - left) / (center - left)
            elif center < m < right:
                banks[b, k] = (right - m) / (right - center)
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / (length - 1)) for i in range(length)])
    rows = []
    for start in range(0, len(wave) - length + 1, shift):
        frame = wave[start : start + length].astype(np.float64).copy()
        frame -= frame.mean()
        for i in range(length - 1, 0, -1):
            frame[i] -= 0.97 * frame[i - 1]
        frame[0] -= 0.97 * frame[0]
        padded = np.zeros(fft)
        padded[:length] = frame * window
        power = np.abs(np.fft.rfft(padded)) ** 2
        rows.append(np.log(np.maximum(banks @ power[:n_bins], np.finfo(np.float32).eps)))
    return np.array(rows)


@pytest.fixture
def wave():
    rng = np.random.default_rng(3)
    t = np.arange(4000) / 8000
    return 0.4 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(len(t)) + 0.1


@pytest.mark.parametrize("backend", ["kaldi-native-fbank", "torch"])
@pytest.mark.parametrize("rate, bins", [(8000, 64), (16000, 80)])
def test_backends_match_the_reference_implementation(backend, rate, bins):
    pytest.importorskip("kaldi_native_fbank")
    rng = np.random.default_rng(rate)
    wave = rng.standard_normal(rate // 2) * 0.1 + np.sin(np.arange(rate // 2) * 0.07) * 0.3 + 0.2
    config = FbankConfig(num_bins=bins, frames=1024, backend=backend)
    got = log_mel_fbank(wave, rate, config)
    expected = kaldi_fbank_reference(wave - wave.mean(), rate, bins)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (1 + (rate // 2 - rate // 40) // (rate // 100), bins)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)


def test_paper_setting_at_16khz_has_an_empty_filter_and_still_matches(caplog):
    """128 bins at 16 kHz: kaldi-native-fbank refuses it; auto falls back to the torch port, which
    gives log(eps) for the empty filter as torchaudio does in the reference code."""
    assert empty_filters(128, 16000) == 1 and empty_filters(64, 8000) == 0 and empty_filters(128, 8000) == 4
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(8000) * 0.2
    got = log_mel_fbank(wave, 16000, FbankConfig())
    expected = kaldi_fbank_reference(wave - wave.mean(), 16000, 128)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
    empty = np.flatnonzero((got == got[0]).all(axis=0) & np.isclose(got[0], np.log(np.finfo(np.float32).eps)))
    assert empty.tolist() == [3]


def test_audio_file_is_mean_removed_padded_and_cut(tmp_path, wave):
    path = tmp_path / "clip.wav"
    written = write_wav(path, seconds=0.5, rate=8000)
    config = FbankConfig(num_bins=40, frames=64)
    feats = audio_fbank(path, config)
    assert feats.shape == (64, 40)
    read, rate = read_audio(path)
    assert rate == 8000 and abs(read.mean() - written.mean()) < 1e-3  # a DC offset was written
    expected = kaldi_fbank_reference(read - read.mean(), 8000, 40)  # 48 frames of 0.5 s
    assert len(expected) == 48
    np.testing.assert_allclose(feats[:48], expected, atol=2e-3, rtol=1e-4)
    assert (feats[48:] == 0).all()  # zero padding, as the reference code pads
    cut = audio_fbank(path, replace(config, frames=10))
    np.testing.assert_array_equal(cut, feats[:10])
    kept = log_mel_fbank(read, 8000, replace(config, remove_mean=False))
    # the per-frame DC removal already cancels a global offset: the paper's mean removal is harmless
    np.testing.assert_allclose(kept, feats[:48], atol=1e-3)


def test_fit_frames():
    x = np.ones((3, 2), dtype=np.float32)
    assert fit_frames(x, 5).shape == (5, 2) and fit_frames(x, 5)[3:].sum() == 0
    assert fit_frames(x, 2).shape == (2, 2)


def test_unreadable_short_and_missing_audio_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(MediaError, match=r"bad.wav: cannot decode audio"):
        audio_fbank(bad)
    short = tmp_path / "short.wav"
    write_wav(short, seconds=0.01, rate=8000)
    with pytest.raises(MediaError, match=r"short.wav: 80 samples at 8000 Hz is shorter than one 25 ms window"):
        audio_fbank(short)
    with pytest.raises(MediaError, match=r"nowhere.wav: no such audio file") as info:
        audio_fbank(tmp_path / "nowhere.wav")
    assert info.value.path.endswith("nowhere.wav") and info.value.reason == "no such audio file"


def test_missing_extra_names_the_install_command(monkeypatch):
    def absent(name):
        raise ImportError(name)

    monkeypatch.setattr(media.importlib, "import_module", absent)
    with pytest.raises(MissingExtra, match=r'reading audio files needs .*pip install "altmodal\[media\]"'):
        read_audio("x.wav")
