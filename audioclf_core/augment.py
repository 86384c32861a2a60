"""Audio augmentation for training: audio in, audio out (float32 mono).

:class:`AugmentParams` holds the probabilities and ranges; :func:`augment` applies them to one
training window's audio: gain, noise mixing, time shift, telephone band-limiting and the G.711
mu-law round trip, speed, tempo and pitch changes, rooms, held vowels. The channel functions
(:func:`telephone`, :func:`mu_law`) are also what evaluation's telephone condition uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

import numpy as np
import soxr
from scipy import signal

from .errors import ParameterError
from .params import split_setting

# Augmentation ranges of factors and times, where zero or less means nothing.
POSITIVE_RANGES = ("speed", "short_s", "stretch", "pitch", "rt60_s", "hold_s")


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges of the audio augmentations (applied per training window).

    Attributes
    ----------
    gain_db : (float, float)
        Uniform gain range; levels are not normalised in the wild.
    p_noise : float
        Probability of mixing a noise clip (or generated coloured noise / hum) under the audio.
    snr_db : (float, float)
        Signal-to-noise ratio range of that mix.
    p_telephone : float
        Probability of a telephone channel: band-pass (about 300-3400 Hz).
    p_clip : float
        Probability of overdrive: the level is pushed ``clip_db`` above full scale and hard-clipped,
        as a loud caller or a hot line clips (some real prompt sets clip 3-18 % of their samples).
    clip_db : (float, float)
        How far above full scale the peak is driven before clipping, dB.
    p_mulaw : float
        Probability of an 8-bit mu-law round trip (independent of the band-pass).
    p_speed : float
        Probability of a speed change (which also shifts pitch).
    speed : (float, float)
        Speed factor range.
    p_short : float
        Probability that a window holds only a short crop, zero-padded as inference pads short
        segments, so that padding says nothing about the class.
    short_s : (float, float)
        Length range of those crops, seconds.
    pad_s : float
        Whole-clip mode: most silence added before and after the clip (time shift).
    p_stretch : float
        Probability of a tempo change that keeps pitch (phase vocoder): speaking rate varies
        apart from voice pitch, and some prompt sets draw syllables out for seconds.
    stretch : (float, float)
        Tempo factor range (below 1: slower, longer).
    p_mask : float
        Probability of masking the window's features (SpecAugment): up to ``mask_bands``
        adjacent bands and up to ``mask_frames`` adjacent frames are set to the window's mean,
        so no single band or instant decides the class.
    mask_bands, mask_frames : int
        Widest band and frame masks.
    p_pitch : float
        Probability of a voice-pitch change that keeps tempo and formants (:func:`shift_pitch`).
    pitch : (float, float)
        Pitch factor range, drawn log-uniformly.
    p_reverb : float
        Probability of a room: the audio is convolved with a synthetic room impulse response
        (:func:`room_response`), as a speaker-phone or a home recording sounds.
    rt60_s : (float, float)
        Reverberation time range (the tail's 60 dB decay), seconds.
    drr_db : (float, float)
        Direct-to-reverberant energy ratio range, dB (high: close to the microphone).
    p_hold : float
        Probability that the steadiest part of the audio (a vowel, a note) is held for longer
        (:func:`hold_sound`), as some prompt sets and callers draw a vowel out for a second or two.
    hold_s : (float, float)
        How much longer it is held, seconds.
    """

    gain_db: tuple[float, float] = (-30.0, 3.0)
    p_noise: float = 0.4
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_telephone: float = 0.5
    p_clip: float = 0.1
    clip_db: tuple[float, float] = (3.0, 20.0)
    p_mulaw: float = 0.5
    p_speed: float = 0.3
    speed: tuple[float, float] = (0.9, 1.1)
    p_short: float = 0.15
    short_s: tuple[float, float] = (0.3, 1.0)
    pad_s: float = 0.15
    p_stretch: float = 0.0
    stretch: tuple[float, float] = (0.5, 1.0)
    p_mask: float = 0.0
    mask_bands: int = 6
    mask_frames: int = 10
    p_pitch: float = 0.0
    pitch: tuple[float, float] = (0.6, 1.8)
    p_reverb: float = 0.0
    rt60_s: tuple[float, float] = (0.15, 0.8)
    drr_db: tuple[float, float] = (-3.0, 15.0)
    p_hold: float = 0.0
    hold_s: tuple[float, float] = (0.3, 1.5)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= v <= 1.0:
                raise ParameterError(f"augmentation {f.name}={v} must be a probability in [0, 1]")
            if isinstance(v, tuple):
                if len(v) != 2 or v[0] > v[1]:
                    raise ParameterError(f"augmentation {f.name}={v} must be a range LOW,HIGH with LOW <= HIGH")
                if f.name in POSITIVE_RANGES and v[0] <= 0:
                    raise ParameterError(f"augmentation {f.name}={v} must be positive")
            if f.name in ("mask_bands", "mask_frames", "pad_s") and v < 0:
                raise ParameterError(f"augmentation {f.name}={v} must be 0 or more")

    def to_dict(self) -> dict:
        return asdict(self)

    def with_items(self, items: Sequence[str]) -> "AugmentParams":
        """These parameters with ``NAME=VALUE`` items applied (``NAME=LOW,HIGH`` for a range),
        as ``audioclf train --augment`` gives them; each item is checked."""
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        changes: dict[str, Any] = {}
        for item in items:
            name, text = split_setting(item, kinds, option="--augment")
            try:
                if kinds[name] is tuple:
                    low, high = (float(x) for x in text.split(","))
                    changes[name] = (low, high)
                else:
                    changes[name] = kinds[name](text)
            except ValueError:
                shape = "LOW,HIGH (two numbers)" if kinds[name] is tuple else f"one {kinds[name].__name__}"
                raise ParameterError(f"--augment {item!r}: {name} takes {shape}") from None
        return replace(self, **changes)


def band_limit(y: np.ndarray, *, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Fourth-order Butterworth band-pass, as a telephone channel does."""
    high_hz = min(high_hz, 0.475 * sr)
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, y).astype(np.float32)


# G.711 mu-law works on 14-bit samples; in 16-bit units a magnitude is clipped at 32635, biased by
# 132 (33 in 14-bit units), and its highest set bit above bit 7 is the segment (0-7), its next four
# bits the step within the segment. Decoding returns the middle of the step's interval, less the bias.
G711_BIAS = 0x84
G711_CLIP = 32635


def mu_law_encode(y: np.ndarray) -> np.ndarray:
    """G.711 mu-law codes (uint8, bits inverted as sent on the line) of float samples in [-1, 1]."""
    x = np.clip(np.round(np.asarray(y, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int32)
    x = (x >> 2) << 2  # the codec's input is 14-bit: the two low bits go first (towards minus infinity)
    mag = np.minimum(np.abs(x), G711_CLIP) + G711_BIAS
    segment = np.clip(np.frexp(mag)[1] - 8, 0, 7)  # frexp's exponent is the bit length
    step = (mag >> (segment + 3)) & 0x0F
    code = ((x < 0).astype(np.int32) << 7) | (segment << 4) | step
    return (~code & 0xFF).astype(np.uint8)


def mu_law_decode(code: np.ndarray) -> np.ndarray:
    """Float samples of G.711 mu-law codes: 255 levels, silence stays 0, peak 32124/32768."""
    c = ~np.asarray(code, dtype=np.int32) & 0xFF
    segment, step = (c >> 4) & 0x07, c & 0x0F
    mag = (((step << 3) + G711_BIAS) << segment) - G711_BIAS
    return (np.where(c & 0x80, -mag, mag) / 32768.0).astype(np.float32)


def mu_law(y: np.ndarray) -> np.ndarray:
    """Round trip through the 8-bit G.711 mu-law codec of a telephone line."""
    return mu_law_decode(mu_law_encode(y))


def telephone(y: np.ndarray, *, sr: int) -> np.ndarray:
    """A fixed telephone channel (300-3400 Hz, mu-law), for evaluation."""
    return mu_law(band_limit(y, sr=sr, low_hz=300.0, high_hz=3400.0))


def random_band(y: np.ndarray, *, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A telephone band-pass with edges drawn as lines differ: 200-400 Hz and 3000-3700 Hz."""
    return band_limit(y, sr=sr, low_hz=float(rng.uniform(200, 400)), high_hz=float(rng.uniform(3000, 3700)))


def change_speed(y: np.ndarray, factor: float, *, sr: int) -> np.ndarray:
    """Play ``factor`` times faster (pitch shifts with it)."""
    return soxr.resample(y, sr, sr / factor, quality="LQ").astype(np.float32)


# Frame of the tempo change's phase vocoder: 32 ms at 8 kHz, enough for voice partials.
STRETCH_N_FFT = 256


def time_stretch(y: np.ndarray, rate: float, *, n_fft: int = STRETCH_N_FFT, hop: int = 64) -> np.ndarray:
    """Play ``y`` at ``rate`` times its tempo without moving its pitch (phase vocoder).

    The short-time spectrum is read at ``rate`` frames per output frame. Each spectral peak's
    phase advances by its measured instantaneous frequency, and the bins around a peak keep
    their phase relation to it (identity phase locking), so a partial's neighbouring bins do
    not drift apart and cancel ("phasiness"). The output holds ``round(len(y) / rate)`` samples.
    """
    y = np.asarray(y, dtype=np.float32)
    if rate == 1.0 or y.size < n_fft:
        return y
    if n_fft % hop:
        raise ParameterError(f"hop {hop} must divide n_fft {n_fft}")
    win = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    padded = np.pad(y.astype(np.float64), (n_fft // 2, n_fft // 2 + hop))
    n_frames = 1 + (padded.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(padded[idx] * win, axis=1)
    n_bins = spec.shape[1]
    steps = np.arange(0, n_frames - 1, rate)
    expected = 2 * np.pi * hop * np.arange(n_bins) / n_fft  # phase advance of each bin's centre per hop
    i0 = steps.astype(int)
    frac = (steps - i0)[:, None]
    mag = (1 - frac) * np.abs(spec[i0]) + frac * np.abs(spec[i0 + 1])
    ana = np.angle(spec)
    dphi = ana[i0 + 1] - ana[i0] - expected
    dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
    advance = expected + dphi  # measured phase advance per hop, per output frame and bin
    # Peaks of every output frame at once; only the phase bookkeeping runs frame by frame.
    is_peak = (mag >= np.pad(mag, ((0, 0), (1, 0)))[:, :-1]) & (mag > np.pad(mag, ((0, 0), (0, 1)))[:, 1:])
    bins = np.arange(n_bins)
    phases = np.empty_like(mag)
    phase = ana[0].copy()
    for k, i in enumerate(i0):
        peaks = np.flatnonzero(is_peak[k])
        if k:
            phase[peaks] += advance[k - 1, peaks]
        if peaks.size:  # every bin follows its nearest peak, keeping its analysis phase offset
            owner = peaks[np.clip(np.searchsorted((peaks[:-1] + peaks[1:]) / 2, bins), 0, peaks.size - 1)]
            phase = phase[owner] + ana[i] - ana[i][owner]
        phases[k] = phase
    frames = np.fft.irfft(mag * np.exp(1j * phases), n_fft, axis=1) * win
    # Overlap-add: hop divides n_fft, so each frame's n_fft // hop blocks land on whole blocks.
    per = n_fft // hop
    blocks = frames.reshape(len(i0), per, hop)
    out = np.zeros((len(i0) + per - 1, hop))
    wsq = np.zeros_like(out)
    wblocks = (win ** 2).reshape(per, hop)
    for j in range(per):
        out[j: j + len(i0)] += blocks[:, j]
        wsq[j: j + len(i0)] += wblocks[j]
    out, wsq = out.ravel(), wsq.ravel()
    out = out[n_fft // 2:] / np.maximum(wsq[n_fft // 2:], 1e-3)
    n = int(round(y.size / rate))
    return np.pad(out, (0, max(0, n - out.size)))[:n].astype(np.float32)


def spectral_envelope(spec: np.ndarray, *, n_fft: int, lifter: int) -> np.ndarray:
    """Smoothed magnitude envelope of each frame (bins x frames): the log spectrum's first
    ``lifter`` cepstral coefficients, which keep the formants and drop the harmonics."""
    logmag = np.log(np.abs(spec) + 1e-6)
    cep = np.fft.irfft(logmag, n_fft, axis=0)
    cep[lifter: n_fft - lifter + 1] = 0.0
    return np.exp(np.fft.rfft(cep, axis=0).real)


def shift_pitch(y: np.ndarray, factor: float, *, sr: int, n_fft: int = 512, hop: int = 128,
                lifter_s: float = 0.0025) -> np.ndarray:
    """Move the voice pitch by ``factor`` (above 1 raises it), keeping tempo and formants.

    A tempo change by ``1 / factor`` played ``factor`` times faster moves pitch and formants
    together; the original spectral envelope (cepstrum liftered at ``lifter_s``, 2.5 ms: below
    the period of voices up to 400 Hz) is then put back on the moved harmonics. A woman's or a
    child's voice differs from a man's more in pitch (about an octave) than in formants
    (15-20 %); speed changes alone cannot make one from the other.
    """
    y = np.asarray(y, dtype=np.float32)
    if factor == 1.0 or y.size < n_fft:
        return y
    moved = change_speed(time_stretch(y, 1.0 / factor), factor, sr=sr)
    moved = np.pad(moved, (0, max(0, y.size - moved.size)))[: y.size]
    kw = dict(nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros", padded=True)
    _, _, x_spec = signal.stft(y, **kw)
    _, _, m_spec = signal.stft(moved, **kw)
    lifter = max(1, int(lifter_s * sr))
    gain = spectral_envelope(x_spec, n_fft=n_fft, lifter=lifter) / spectral_envelope(m_spec, n_fft=n_fft, lifter=lifter)
    _, out = signal.istft(m_spec * np.clip(gain, 0.1, 10.0), nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    return np.pad(out, (0, max(0, y.size - out.size)))[: y.size].astype(np.float32)


def steadiest_frame(y: np.ndarray, *, sr: int, frame_s: float = 0.02, within_db: float = 10.0) -> int:
    """Centre (sample) of the 20 ms frame where the spectrum changes least, among frames within
    ``within_db`` of the loudest: in speech, the middle of a vowel; in music, a held note."""
    n, hop = int(frame_s * sr), int(frame_s * sr) // 2
    if y.size < 3 * n:
        return y.size // 2
    frames = np.lib.stride_tricks.sliding_window_view(y, n)[::hop].astype(np.float64) * np.hanning(n)
    energy = 10 * np.log10(np.sum(frames * frames, axis=1) + 1e-12)
    logspec = np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-6)
    flux = np.abs(np.diff(logspec, axis=0)).mean(axis=1)
    change = np.convolve(np.pad(flux, (1, 0), mode="edge"), np.ones(5) / 5, mode="same")  # over 50 ms
    change[energy < energy.max() - within_db] = np.inf
    return int(np.argmin(change)) * hop + n // 2


def voice_period(x: np.ndarray, *, sr: int, fmin: float = 60.0, fmax: float = 400.0) -> tuple[int, float]:
    """Period (samples) of the strongest autocorrelation peak between ``fmax`` and ``fmin``, and
    its normalised strength (1: perfectly periodic, near 0: noise)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    lo, hi = max(1, int(sr / fmax)), int(sr / fmin)
    if x.size < 2 * hi:
        return lo, 0.0
    spec = np.fft.rfft(x, 2 * x.size)
    ac = np.fft.irfft(spec * np.conj(spec))[: hi + 1]
    if ac[0] <= 0:
        return lo, 0.0
    # Unbiased: each lag's sum covers fewer samples.
    ac = ac / (x.size - np.arange(hi + 1)) * x.size
    lag = lo + int(np.argmax(ac[lo: hi + 1]))
    return lag, float(ac[lag] / ac[0])


def hold_sound(y: np.ndarray, hold_s: float, *, sr: int, rng: np.random.Generator, voiced: float = 0.4) -> np.ndarray:
    """Hold the steadiest part of ``y`` for ``hold_s`` more seconds, as a voice holds a vowel.

    Where the part is periodic (autocorrelation strength at least ``voiced``), one-period grains
    of it are overlap-added at the voice's period, which keeps its spectral envelope (the
    formants), with a slow pitch drift of up to 3 %, 0.5 % jitter and 3 % shimmer, as a held
    human vowel has; elsewhere 10 ms grains at random places in the part make a steady texture.
    The held stretch is spliced in at the middle of the part, with 10 ms cross-fades, so what
    came before and after stays as it was. Every class can be held alike: a held note stays music.
    """
    y = np.asarray(y, dtype=np.float32)
    part_n = int(0.06 * sr)
    add = int(hold_s * sr)
    if y.size < part_n + 2 or add <= 0:
        return y
    c = int(np.clip(steadiest_frame(y, sr=sr), part_n // 2, y.size - part_n // 2))
    part = y[c - part_n // 2: c + part_n // 2].astype(np.float64)
    period, strength = voice_period(part, sr=sr)
    if strength >= voiced:
        grain = period
        starts = np.arange(0, part.size - 2 * period + 1, period)  # pitch-synchronous, in the part
    else:
        grain = int(0.01 * sr)
        starts = None
    fade = min(int(0.01 * sr), part_n // 2)
    n_out = add + 2 * fade
    out = np.zeros(n_out + 2 * grain + 1)
    win = np.hanning(2 * grain + 2)[1:-1]
    rate = rng.uniform(0.5, 5.0)
    depth, phase0 = rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)
    pos, k = 0.0, 0
    while pos < n_out:
        if starts is not None:
            j = k % (2 * len(starts) - 1)
            s = starts[j if j < len(starts) else 2 * len(starts) - 2 - j]  # back and forth through the part
            step = grain * (1 + depth * np.sin(2 * np.pi * rate * pos / sr + phase0) + rng.normal(0, 0.005))
            gain = 1 + rng.normal(0, 0.03)
        else:
            s = int(rng.integers(0, part.size - 2 * grain + 1))
            step, gain = grain, 1.0
        i = int(pos)
        out[i: i + 2 * grain] += gain * win * part[s: s + 2 * grain]
        pos += max(step, 1.0)
        k += 1
    held = out[grain: grain + n_out]  # skip the first grain's rise
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
    left, right = y[:c].astype(np.float64), y[c:].astype(np.float64)
    joined = np.concatenate([
        left[: left.size - fade], left[left.size - fade:] * (1 - ramp) + held[:fade] * ramp,
        held[fade: n_out - fade],
        held[n_out - fade:] * (1 - ramp) + right[:fade] * ramp, right[fade:],
    ])
    return joined.astype(np.float32)


def mask_window(x: np.ndarray, *, bands: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment on one normalised window (frames x bands): one band mask and one frame mask,
    each 0 to ``bands`` / ``frames`` wide, filled with the window's mean."""
    x = x.copy()
    fill = x.mean()
    n_frames, n_bands = x.shape
    w = int(rng.integers(0, min(bands, n_bands) + 1))
    if w:
        b = int(rng.integers(0, n_bands - w + 1))
        x[:, b: b + w] = fill
    w = int(rng.integers(0, min(frames, n_frames) + 1))
    if w:
        f = int(rng.integers(0, n_frames - w + 1))
        x[f: f + w, :] = fill
    return x


def room_response(*, sr: int, rt60_s: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct path, then a Gaussian-noise tail.

    The tail starts 1-5 ms after the direct path (the first reflections), decays by 60 dB in
    ``rt60_s`` (amplitude ``exp(-6.91 t / rt60)``), holds ``drr_db`` less energy than the direct
    path, and is cut where it is 60 dB down. The direct path is 1, so a dry signal keeps its
    level and timing.
    """
    if rt60_s <= 0:
        raise ParameterError(f"rt60_s={rt60_s} must be positive")
    delay = int(rng.uniform(0.001, 0.005) * sr)
    n = max(1, int(rt60_s * sr))
    tail = rng.standard_normal(n) * np.exp(-6.91 * np.arange(n) / sr / rt60_s)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail * tail))
    ir = np.zeros(delay + n, np.float32)
    ir[0] = 1.0
    ir[delay:] += tail.astype(np.float32)
    return ir


def reverberate(y: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``y`` heard in the room ``ir``, cut to ``len(y)`` (the same length and alignment)."""
    if y.size == 0:
        return y
    return signal.fftconvolve(y, ir)[: y.size].astype(np.float32)


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0


def generated_noise(n: int, *, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise (white to brown) or mains hum, unit peak."""
    kind = rng.integers(3)
    if kind == 2:
        t = np.arange(n) / sr
        base = rng.choice([50.0, 60.0])
        y = sum(rng.uniform(0.1, 1) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in range(1, 10))
        y = y + 0.05 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(max(n, 2)))
        f = np.fft.rfftfreq(max(n, 2), 1 / sr)
        f[0] = f[1]
        spec *= f ** (rng.uniform(-2, 1) / 2)
        y = np.fft.irfft(spec, max(n, 2))[:n]
    y = np.asarray(y, dtype=np.float32)
    return y / (np.abs(y).max() + 1e-9)


def mix_noise(y: np.ndarray, noise: np.ndarray, *, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``noise`` (tiled or cropped at random to ``len(y)``) at ``snr_db`` below ``y``."""
    if noise.size == 0 or y.size == 0:
        return y
    if noise.size < y.size:
        noise = np.tile(noise, int(math.ceil(y.size / noise.size)))
    start = int(rng.integers(0, noise.size - y.size + 1))
    noise = noise[start: start + y.size]
    ps, pn = rms(y), rms(noise)
    if ps < 1e-6 or pn < 1e-9:
        return y
    return (y + noise * (ps / pn) * 10 ** (-snr_db / 20)).astype(np.float32)


def augment(
    y: np.ndarray, *, sr: int, params: AugmentParams, rng: np.random.Generator, noise_pool: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """One random variant of ``y``: room, noise mix, channel, gain (in an order a call would apply them).

    Speed changes and crops are done by the caller, which knows how long a window must be.
    """
    # The room first: noise and the line are not reverberated. (No draw at p 0, so that recipes
    # without rooms keep their random streams.)
    if params.p_reverb and rng.random() < params.p_reverb:
        ir = room_response(sr=sr, rt60_s=float(rng.uniform(*params.rt60_s)), drr_db=float(rng.uniform(*params.drr_db)),
                           rng=rng)
        y = reverberate(y, ir)
    if rng.random() < params.p_noise:
        if noise_pool and rng.random() < 0.7:
            noise = noise_pool[int(rng.integers(len(noise_pool)))]
        else:
            noise = generated_noise(y.size, sr=sr, rng=rng)
        y = mix_noise(y, noise, snr_db=float(rng.uniform(*params.snr_db)), rng=rng)
    if rng.random() < params.p_telephone:
        y = random_band(y, sr=sr, rng=rng)
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak > 0:
        # Levels are not normalised: draw a peak level, then clip as a real channel would.
        y = y * np.float32(10 ** (rng.uniform(*params.gain_db) / 20) / peak)
        if rng.random() < params.p_clip:  # overdrive: the clip below flattens the peaks
            y = y * np.float32(10 ** (rng.uniform(*params.clip_db) / 20) / float(np.abs(y).max()))
    if rng.random() < params.p_mulaw:
        y = mu_law(y)
    return np.clip(y, -1.0, 1.0).astype(np.float32, copy=False)
