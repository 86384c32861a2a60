"""Augmentation: each change to a training window's audio does what it says, measured on signals with a known answer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from audioclf_core.augment import (
    AugmentParams,
    augment,
    band_limit,
    change_speed,
    hold_sound,
    mask_window,
    mix_noise,
    mu_law,
    mu_law_decode,
    mu_law_encode,
    reverberate,
    rms,
    room_response,
    shift_pitch,
    steadiest_frame,
    time_stretch,
    voice_period,
)
from audioclf_core.errors import ParameterError

DATA = Path(__file__).parents[1] / "data"
SR = 8000


def ffmpeg_pipe(data: bytes, *args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args], input=data, capture_output=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mu_law_is_the_g711_codec_that_ffmpeg_implements():
    # the decoder: every one of the 256 codes decodes as ffmpeg decodes it
    codes = np.arange(256, dtype=np.uint8)
    theirs = np.frombuffer(ffmpeg_pipe(codes.tobytes(), "-f", "mulaw", "-ar", "8000", "-ac", "1", "-i", "-",
                                       "-f", "s16le", "-"), dtype="<i2")
    ours = mu_law_decode(codes)
    assert np.array_equal(np.round(ours * 32768).astype(np.int16), theirs)
    assert np.unique(ours).size == 255 and ours.max() == pytest.approx(32124 / 32768)  # +0 and -0 are one level
    # the encoder, on every 16-bit sample value: ffmpeg picks the nearest level, G.711 its decision
    # table; the two differ only just under a segment's start, where the step doubles
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    theirs = np.frombuffer(ffmpeg_pipe(pcm.astype("<i2").tobytes(), "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "-",
                                       "-f", "mulaw", "-"), dtype=np.uint8)
    ours = mu_law_encode(pcm / 32768.0)
    differ = ours != theirs
    assert 0 < differ.mean() < 0.01
    segment = lambda c: (~c.astype(np.int32) >> 4) & 0x07  # noqa: E731
    assert np.all(segment(ours[differ]) == segment(theirs[differ]) + 1)  # ffmpeg keeps the top of the segment below
    assert np.all(np.abs(mu_law_decode(ours[differ])) > np.abs(mu_law_decode(theirs[differ])))
    # silence stays silence (a mid-rise quantiser would turn it into a small DC offset)
    assert not mu_law(np.zeros(100, np.float32)).any()


def test_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    low, mid = np.sin(2 * np.pi * 100 * t).astype(np.float32), np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    assert rms(band_limit(low, sr=SR, low_hz=300, high_hz=3400)[SR // 4:]) < 0.1 * rms(low)
    assert rms(band_limit(mid, sr=SR, low_hz=300, high_hz=3400)[SR // 4:]) > 0.9 * rms(mid)
    err = mu_law(0.5 * mid) - 0.5 * mid
    assert 0 < rms(err) < 0.01  # 8-bit companding: small, but not nothing
    noise = rng.standard_normal(SR).astype(np.float32)
    mixed = mix_noise(mid, noise, snr_db=10.0, rng=rng)
    assert 20 * np.log10(rms(mid) / rms(mixed - mid)) == pytest.approx(10.0, abs=0.01)
    short = mix_noise(mid, noise[:3000], snr_db=10.0, rng=rng)  # a noise clip shorter than the audio is tiled
    assert short.shape == mid.shape and 20 * np.log10(rms(mid) / rms(short - mid)) == pytest.approx(10.0, abs=0.1)
    for name in ("speed", "stretch", "pitch", "hold_s"):
        with pytest.raises(ParameterError, match="positive"):
            AugmentParams(**{name: (0.0, 1.1)})
    for _ in range(20):
        y = augment(mid * 3, sr=SR, params=AugmentParams(p_noise=1, p_telephone=1, p_mulaw=1), rng=rng)
        assert y.dtype == np.float32 and y.shape == mid.shape and np.isfinite(y).all() and np.abs(y).max() <= 1
    # overdrive: driven 3-20 dB over full scale, a sine is flattened at +-1 over part of each cycle
    quiet = dict(p_noise=0, p_telephone=0, p_mulaw=0, gain_db=(-6.0, -6.0))
    for _ in range(10):
        y = augment(mid, sr=SR, params=AugmentParams(p_clip=1, **quiet), rng=rng)
        flat = np.mean(np.abs(y) >= 0.999)
        assert 0.2 < flat < 0.95, flat  # +3 dB clips ~50 % of a sine's samples, +20 dB ~94 %
    y = augment(mid, sr=SR, params=AugmentParams(p_clip=0, **quiet), rng=rng)
    assert np.abs(y).max() == pytest.approx(10 ** (-6 / 20), rel=1e-4)  # no overdrive: the drawn peak, unclipped


@pytest.mark.parametrize("rate", [0.4, 0.7, 1.3])
def test_time_stretch_changes_tempo_not_pitch(rate):
    # Two tones gated on and off: the gaps' times scale by 1/rate, the tones' pitches stay.
    t = np.arange(2 * SR) / SR
    gate = (np.floor(t * 4) % 2 == 0).astype(np.float32)  # on 0.25 s, off 0.25 s
    y = (0.3 * np.sin(2 * np.pi * 500 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)).astype(np.float32) * gate
    z = time_stretch(y, rate)
    assert z.dtype == np.float32 and len(z) == round(len(y) / rate) and np.isfinite(z).all()
    spec = np.abs(np.fft.rfft(z * np.hanning(len(z))))
    f = np.fft.rfftfreq(len(z), 1 / SR)
    near = (np.abs(f - 500) < 40) | (np.abs(f - 1300) < 40)
    assert np.sum(spec[near] ** 2) > 0.8 * np.sum(spec ** 2)  # the energy stays at the two pitches
    for tone in (500, 1300):
        band = np.abs(f - tone) < 200
        assert f[band][np.argmax(spec[band])] == pytest.approx(tone, abs=3)
    env = np.convolve(np.abs(z), np.ones(80) / 80, mode="same")
    rises = np.flatnonzero(np.diff((env > 0.1).astype(int)) == 1) / SR
    onsets = [r for i, r in enumerate(rises) if i == 0 or r - rises[i - 1] > 0.15]  # ripples on an edge count once
    assert len(onsets) >= 3 and np.allclose(np.diff(onsets), 0.5 / rate, atol=0.03)  # one tone burst every 0.5 s of the original
    assert time_stretch(y, 1.0) is y or np.array_equal(time_stretch(y, 1.0), y)


FORMANTS = ((700, 80), (1200, 100), (2600, 150))  # an /a/-like vocal tract: centre and bandwidth, Hz
# Each formant as a two-pole resonator: pole radius and angle.
RESONATORS = [(np.exp(-np.pi * bw / SR), 2 * np.pi * f / SR) for f, bw in FORMANTS]


def _tract(x: np.ndarray) -> np.ndarray:
    for r, th in RESONATORS:
        x = signal.lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], x)
    return x


def _tract_gain(freqs: np.ndarray) -> np.ndarray:
    z = np.exp(-1j * 2 * np.pi * np.asarray(freqs) / SR)  # z^-1 on the unit circle
    h = np.ones_like(z)
    for r, th in RESONATORS:
        h *= (1 - r) / (1 - 2 * r * np.cos(th) * z + r * r * z * z)
    return np.abs(h)


@pytest.mark.parametrize("f0,factor", [(100, 1.8), (120, 1.4), (210, 0.6)])
def test_shift_pitch_moves_the_harmonics_and_keeps_the_formants(f0, factor):
    # A sustained vowel: equal harmonics of f0 through three formant resonators. After the
    # shift, the harmonics sit at multiples of f0 * factor and their levels still follow the
    # same vocal tract; a speed change (pitch and formants together) does not.
    t = np.arange(2 * SR) / SR
    y = _tract(sum(np.cos(2 * np.pi * k * f0 * t) for k in range(1, int(3900 / f0))))
    y = (0.5 * y / np.abs(y).max()).astype(np.float32)
    z = shift_pitch(y, factor, sr=SR)
    assert z.dtype == np.float32 and z.shape == y.shape and np.isfinite(z).all()
    assert shift_pitch(y, 1.0, sr=SR) is y

    top = 3400 * min(1.0, factor)  # lowered, the audio holds nothing above factor * 4 kHz

    def harmonics(s, pitch):
        mid = s[SR // 4: -SR // 4] * np.hanning(len(s) - SR // 2)
        spec = np.abs(np.fft.rfft(mid, 1 << 16))
        f = np.fft.rfftfreq(1 << 16, 1 / SR)
        ks = np.arange(1, int(top / pitch)) * pitch
        return ks, spec, f, np.array([spec[np.argmin(np.abs(f - k))] for k in ks])

    new_f0 = f0 * factor
    ks, spec, f, amps = harmonics(z, new_f0)
    on = np.zeros_like(f, bool)
    for k in ks:
        on |= np.abs(f - k) < 0.15 * new_f0
    assert np.sum(spec[on & (f < top)] ** 2) > 0.9 * np.sum(spec[f < top] ** 2)  # energy at the new harmonics
    kept = np.corrcoef(np.log(amps), np.log(_tract_gain(ks)))[0, 1]
    moved = change_speed(time_stretch(y, 1 / factor), factor, sr=SR)[: y.size]
    naive = np.corrcoef(np.log(harmonics(moved, new_f0)[3]), np.log(_tract_gain(ks)))[0, 1]
    assert kept > 0.9 and naive < kept - 0.2, (kept, naive)


def _syllable(f0: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """A consonant burst, a short gap, then 0.2 s of a vowel on f0: the audio and the vowel's span."""
    t = np.arange(int(0.2 * SR)) / SR
    vowel = _tract(sum(np.cos(2 * np.pi * k * f0 * t) for k in range(1, int(3900 / f0))))
    vowel = 0.5 * vowel / np.abs(vowel).max()
    head = np.concatenate([np.zeros(400), 0.2 * rng.standard_normal(400), np.zeros(80)])
    y = np.concatenate([head, vowel, np.zeros(800)]).astype(np.float32)
    return y, head.size, head.size + vowel.size


def test_voice_period_and_the_steadiest_frame():
    rng = np.random.default_rng(3)
    y, start, end = _syllable(125, rng)
    assert start + 100 <= steadiest_frame(y, sr=SR) <= end - 100  # in the vowel, not the burst
    period, strength = voice_period(y[start + 400: start + 880], sr=SR)
    assert period == 64 and strength > 0.8  # 8000 / 125 Hz
    assert voice_period(rng.standard_normal(480), sr=SR)[1] < 0.3


@pytest.mark.parametrize("f0,hold", [(110, 1.0), (220, 0.4)])
def test_hold_sound_draws_the_vowel_out_with_its_pitch_and_formants(f0, hold):
    # What comes before the vowel stays as it was; the held stretch is periodic at the vowel's
    # pitch (within the 3 % drift), follows the same vocal tract, and keeps the vowel's level.
    rng = np.random.default_rng(5)
    y, start, end = _syllable(f0, rng)
    z = hold_sound(y, hold, sr=SR, rng=rng)
    assert z.dtype == np.float32 and z.size == y.size + int(hold * SR) and np.isfinite(z).all()
    assert np.array_equal(z[:start], y[:start])
    assert np.array_equal(z[-800:], y[-800:])  # the silence after the vowel follows it
    held = z[end: end + int(hold * SR) - 400].astype(np.float64)  # inside the hold, past the original vowel
    for a in range(0, held.size - 480, 480):
        period, strength = voice_period(held[a: a + 480], sr=SR, fmax=1.5 * f0)
        assert strength > 0.7 and SR / period == pytest.approx(f0, rel=0.05)
    spec = np.abs(np.fft.rfft(held * np.hanning(held.size), 1 << 15))
    f = np.fft.rfftfreq(1 << 15, 1 / SR)
    ks = np.arange(1, int(3400 / f0)) * f0
    amps = np.array([spec[np.abs(f - k) < 0.2 * f0].max() for k in ks])
    assert np.corrcoef(np.log(amps), np.log(_tract_gain(ks)))[0, 1] > 0.9
    level = 20 * np.log10(rms(held.astype(np.float32)) / rms(y[start + 200: end - 200]))
    assert abs(level) < 2.0


def test_hold_sound_keeps_noise_noise_and_leaves_nothing_to_hold_alone():
    rng = np.random.default_rng(6)
    hiss = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    z = hold_sound(hiss, 0.5, sr=SR, rng=rng)
    assert z.size == SR + SR // 2
    mid = z[SR // 2: SR].astype(np.float64)
    assert voice_period(mid[:480], sr=SR)[1] < 0.4  # no pitch made up
    assert 20 * np.log10(rms(mid.astype(np.float32)) / rms(hiss)) == pytest.approx(0.0, abs=2.5)
    tiny = np.ones(100, np.float32)
    assert hold_sound(tiny, 1.0, sr=SR, rng=rng) is tiny or np.array_equal(hold_sound(tiny, 1.0, sr=SR, rng=rng), tiny)


@pytest.mark.parametrize("rt60,drr", [(0.3, 10.0), (0.8, 0.0)])
def test_room_response_decays_by_60_db_in_rt60_with_the_drawn_direct_to_reverberant_ratio(rt60, drr):
    rng = np.random.default_rng(4)
    ir = room_response(sr=SR, rt60_s=rt60, drr_db=drr, rng=rng)
    assert ir.dtype == np.float32 and ir[0] == pytest.approx(1.0, abs=0.05)
    tail = ir[1:].astype(np.float64)
    assert 10 * np.log10(1.0 / np.sum(tail ** 2)) == pytest.approx(drr, abs=0.5)
    start = np.flatnonzero(tail)[0]
    assert 0.001 * SR - 1 <= start + 1 <= 0.005 * SR  # first reflections 1-5 ms after the direct path
    energy = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder's backward integral
    decay_db = 10 * np.log10(energy / energy[start])
    t20 = (np.flatnonzero(decay_db < -25)[0] - np.flatnonzero(decay_db < -5)[0]) / SR
    assert 3 * t20 == pytest.approx(rt60, rel=0.15)  # the T20 estimate of RT60
    # An impulse comes out as the response itself; any input keeps its length and its start.
    click = np.zeros(SR, np.float32)
    click[100] = 1.0
    out = reverberate(click, ir)
    assert out.shape == click.shape and np.allclose(out[100: 100 + ir.size], ir[: SR - 100], atol=1e-5)
    assert np.allclose(out[:100], 0, atol=1e-6)
    with pytest.raises(ParameterError, match="rt60_s"):
        room_response(sr=SR, rt60_s=0.0, drr_db=0.0, rng=rng)


def test_mask_window_masks_one_band_run_and_one_frame_run():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((97, 40)).astype(np.float32)
    widths = []
    for _ in range(50):
        m = mask_window(x, bands=6, frames=10, rng=rng)
        assert m.shape == x.shape and not np.shares_memory(m, x)
        cols = np.flatnonzero(np.all(m == x.mean(), axis=0))
        rows = np.flatnonzero(np.all(m == x.mean(), axis=1))
        assert len(cols) <= 6 and len(rows) <= 10
        assert len(cols) == 0 or np.all(np.diff(cols) == 1)
        assert len(rows) == 0 or np.all(np.diff(rows) == 1)
        keep = np.ones_like(x, bool)
        keep[:, cols] = False
        keep[rows, :] = False
        assert np.array_equal(m[keep], x[keep])  # nothing else touched
        widths.append(len(cols))
    assert max(widths) >= 4  # masks are really drawn, not always empty
