"""Features against librosa's definitions, and the window/segment identity."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audioclf_core.errors import ParameterError
from audioclf_core.features import FeatureExtractor, mel_filterbank
from audioclf_core.params import FeatureParams

librosa = pytest.importorskip("librosa")
DATA = __import__("pathlib").Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def speech():
    """A real 8 kHz prompt, upsampled to 16 kHz like the pipeline does."""
    import soxr

    y, sr = sf.read(DATA / "speech_en_transfer.wav", dtype="float32")
    return soxr.resample(y, sr, 16000).astype(np.float32)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 64, 0.0, None), (8000, 256, 40, 50.0, 3800.0), (22050, 1024, 128, 20.0, 11025.0)])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def _librosa_features(y, sr, p: FeatureParams):
    kw = dict(n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.win_length, center=False)
    if p.kind == "spectrogram":
        return np.abs(librosa.stft(y, **kw)).T
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax, power=2.0, **kw)
    db = librosa.power_to_db(mel, top_db=None)
    return (db if p.kind == "logmel" else librosa.feature.mfcc(S=db, n_mfcc=p.n_mfcc)).T


@pytest.mark.parametrize("kind", ["logmel", "mfcc", "spectrogram"])
def test_frames_match_librosa_on_real_speech(speech, kind):
    p = FeatureParams(kind=kind, normalize="none", fmax=8000.0 if kind != "spectrogram" else None)
    ours = FeatureExtractor(p, sr=16000).frames(speech)
    ref = _librosa_features(speech, 16000, p)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    scale = np.abs(ref).max()
    assert np.abs(ours - ref).max() <= 1e-4 * scale


def test_a_window_is_a_slice_of_its_segment(speech):
    fx = FeatureExtractor(FeatureParams(), sr=16000)
    win, hop = 16000, 8000
    wins = fx.windows(speech, window=win, hop=hop)
    n_grid = 1 + (speech.size - win) // hop
    assert wins.shape == (n_grid + 1, fx.n_frames(win), 64)  # + the window that ends at the end
    for i in range(n_grid):
        alone = fx.normalize(fx.frames(speech[i * hop : i * hop + win])[None].copy())[0]
        np.testing.assert_allclose(wins[i], alone, atol=1e-5)  # the same numbers, up to BLAS blocking
    tail = fx.normalize(fx.frames(speech[-win:])[None].copy())[0]
    np.testing.assert_allclose(wins[-1], tail, atol=1e-5)


def test_short_segment_is_centred_in_one_window(speech):
    fx = FeatureExtractor(FeatureParams(), sr=16000)
    short = speech[:5000]
    got = fx.windows(short, window=16000, hop=8000)
    padded = np.zeros(16000, np.float32)
    padded[5500:10500] = short
    assert got.shape[0] == 1
    np.testing.assert_allclose(got[0], fx.normalize(fx.frames(padded)[None].copy())[0], atol=1e-5)


def test_window_normalisation_removes_gain(speech):
    """Where no bin sits on the log floor (-100 dB), a gain change is a pure shift."""
    fx = FeatureExtractor(FeatureParams(normalize="window"), sr=16000)
    noisy = speech + np.random.default_rng(0).standard_normal(speech.size).astype(np.float32) * 1e-3
    a = fx.windows(noisy, window=16000, hop=8000)
    b = fx.windows(noisy * np.float32(0.5), window=16000, hop=8000)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert np.allclose(a.mean(axis=(1, 2)), 0, atol=1e-4)
    raw = FeatureExtractor(FeatureParams(normalize="none"), sr=16000)
    assert np.abs(raw.windows(noisy, window=16000, hop=8000) - raw.windows(noisy * np.float32(0.5), window=16000, hop=8000)).min() > 5


def test_window_normalisation_is_zero_mean_unit_variance_over_the_whole_window(speech):
    """What training and inference both feed the model: (x - mean) / std over all frames and bands."""
    raw = FeatureExtractor(FeatureParams(normalize="none"), sr=16000).frames(speech[:16000])
    expected = (raw - raw.mean()) / (raw.std() + 1e-6)
    got = FeatureExtractor(FeatureParams(), sr=16000).windows(speech[:16000], window=16000, hop=8000)
    assert got.shape == (1, *raw.shape)
    np.testing.assert_allclose(got[0], expected, atol=1e-4)
    assert got[0].std() == pytest.approx(1.0, abs=1e-3)
    # per band or per frame would flatten the spectrum's shape, which carries the class
    assert np.abs(got[0].mean(axis=0)).max() > 0.5


def test_frame_count_follows_the_fft_length_and_hop():
    fx = FeatureExtractor(FeatureParams(n_fft=512, hop_length=160, win_length=400), sr=16000)
    assert [fx.n_frames(n) for n in (0, 511, 512, 671, 672, 16000)] == [0, 0, 1, 1, 2, 1 + (16000 - 512) // 160]
    assert fx.frames(np.ones(512, np.float32)).shape == (1, fx.n_features)


@pytest.mark.parametrize("kind", ["logmel", "mfcc", "spectrogram"])
def test_the_feature_count_a_bundle_declares_is_what_frames_have(speech, kind):
    fx = FeatureExtractor(FeatureParams(kind=kind, n_fft=256, win_length=256, n_mels=40, n_mfcc=13), sr=8000)
    assert fx.frames(speech[:8000]).shape[1] == fx.n_features == {"logmel": 40, "mfcc": 13, "spectrogram": 129}[kind]


def test_feature_ranges_are_checked():
    with pytest.raises(ParameterError, match="fmax"):
        FeatureParams(fmin=4000.0, fmax=3000.0)
    with pytest.raises(ParameterError, match="win_length"):
        FeatureParams(n_fft=256, win_length=257)


def test_silence_and_tiny_values_stay_finite():
    fx = FeatureExtractor(FeatureParams(), sr=16000)
    y = np.zeros(16000, np.float32)
    y[::7] = 1e-15  # resampler ringing in digital silence
    out = fx.windows(y, window=16000, hop=8000)
    assert np.isfinite(out).all()


def test_bad_feature_parameters():
    with pytest.raises(ParameterError, match="win_length"):
        FeatureParams(n_fft=256, win_length=400)
    with pytest.raises(ParameterError, match="n_mfcc"):
        FeatureParams(kind="mfcc", n_mels=20, n_mfcc=40)
    with pytest.raises(ParameterError, match="Nyquist"):
        FeatureExtractor(FeatureParams(fmax=6000.0), sr=8000)
    fx = FeatureExtractor(FeatureParams(), sr=16000)
    with pytest.raises(ParameterError, match="multiple"):
        fx.windows(np.zeros(16000, np.float32), window=16000, hop=1000)


@pytest.mark.parametrize("n", [5000, 16000, 24000, 24123, 16000 * 5 + 17])
def test_window_power_is_each_windows_mean_square_in_the_windows_order(speech, n):
    raw = FeatureExtractor(FeatureParams(normalize="none"), sr=16000)
    win, hop = 16000, 8000
    y = np.resize(speech, n) * np.linspace(0.05, 1.0, n, dtype=np.float32)  # louder towards the end
    power = raw.window_power(y, window=win, hop=hop)
    wins = raw.windows(y, window=win, hop=hop)
    assert power.shape == (len(wins),)
    if n < win:  # one window, zero-padded: the padding counts as silence
        assert power[0] == pytest.approx(float(np.sum(y.astype(np.float64) ** 2)) / win, rel=1e-9)
        return
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    assert len(starts) == len(wins)
    for k, a in enumerate(starts):
        piece = y[a : a + win]
        np.testing.assert_allclose(wins[k], raw.frames(piece), atol=1e-4)  # the same window...
        assert power[k] == pytest.approx(float(np.mean(piece.astype(np.float64) ** 2)), rel=1e-6)  # ...its power
    assert len(power) == 1 or power[-1] > power[0]
