"""Time-frequency features: log-mel, MFCC and magnitude spectrogram.

One implementation for batch inference, training and the live sidecar, so the
same audio always gives the same numbers. The definitions are librosa's
(Slaney mel scale and filter norm, periodic Hann window, ``power_to_db`` with
``amin=1e-10`` and no ``top_db`` clipping, orthonormal DCT-II for MFCC), with
frames taken without centre padding: the frames of a model window are then
exactly a slice of the frames of the segment that holds it, and a segment's
STFT is computed once however many windows overlap it. Everything stays
float32; nothing here imports librosa (its first call compiles for ~30 s).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from .errors import ParameterError
from .params import FeatureParams

_AMIN = 1e-10
_EPS = 1e-6
# Samples below this (-200 dBFS, far under 24-bit quantisation) are zeroed:
# resampler ringing leaves values near 1e-15 in digital silence, and their
# products go denormal inside the FFT, which makes it 5-6x slower.
_TINY = np.float32(1e-10)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    lin = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, lin)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(*, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters with Slaney area normalisation.

    Returns
    -------
    np.ndarray
        float32, shape ``(n_mels, n_fft // 2 + 1)``: weights on rfft bins.
    """
    fmax = sr / 2 if fmax is None else fmax
    if fmax > sr / 2:
        raise ParameterError(f"fmax={fmax} Hz is above the Nyquist frequency of sr={sr}")
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


class FeatureExtractor:
    """Computes one bundle's features at one sample rate.

    Parameters
    ----------
    params : FeatureParams
        Feature definition (from the bundle manifest).
    sr : int
        Sample rate of the audio, Hz (the bundle's rate).
    """

    def __init__(self, params: FeatureParams, *, sr: int) -> None:
        self.params = params
        self.sr = int(sr)
        n_fft = params.n_fft
        win = params.win_length or n_fft
        # Periodic Hann, centred in n_fft (librosa's get_window + pad_center).
        hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)
        self._window = np.zeros(n_fft, dtype=np.float32)
        left = (n_fft - win) // 2
        self._window[left : left + win] = hann
        self._mel: np.ndarray | None = None
        self._dct: np.ndarray | None = None
        if params.kind in ("logmel", "mfcc"):
            self._mel = np.ascontiguousarray(
                mel_filterbank(sr=self.sr, n_fft=n_fft, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax).T
            )
        if params.kind == "mfcc":
            basis = scipy.fft.dct(np.eye(params.n_mels), type=2, norm="ortho", axis=0)[: params.n_mfcc]
            self._dct = np.ascontiguousarray(basis.T.astype(np.float32))

    @property
    def n_features(self) -> int:
        """Feature rows per frame."""
        return self.params.n_features

    def n_frames(self, n_samples: int) -> int:
        """Frames in ``n_samples`` of audio (0 if shorter than one FFT)."""
        p = self.params
        return 0 if n_samples < p.n_fft else 1 + (n_samples - p.n_fft) // p.hop_length

    def frames(self, y: np.ndarray) -> np.ndarray:
        """Features of every frame of ``y``, not normalised.

        Parameters
        ----------
        y : np.ndarray
            float32 mono samples, shape ``(n,)``.

        Returns
        -------
        np.ndarray
            float32, shape ``(n_frames(n), n_features)``.
        """
        p = self.params
        y = np.asarray(y, dtype=np.float32)
        n = self.n_frames(y.size)
        if n == 0:
            return np.zeros((0, self.n_features), dtype=np.float32)
        y = np.where(np.abs(y) < _TINY, np.float32(0), y)
        framed = np.lib.stride_tricks.sliding_window_view(y, p.n_fft)[:: p.hop_length][:n] * self._window
        spec = scipy.fft.rfft(framed, axis=1)
        if p.kind == "spectrogram":
            return np.abs(spec).astype(np.float32, copy=False)
        power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32, copy=False)
        logmel = 10.0 * np.log10(np.maximum(power @ self._mel, _AMIN))
        if p.kind == "mfcc":
            return logmel @ self._dct
        return logmel

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Per-window normalisation of stacked windows, in place where it can.

        Parameters
        ----------
        x : np.ndarray
            float32, shape ``(n_windows, n_frames, n_features)``.
        """
        if self.params.normalize == "window" and x.size:
            mean = x.mean(axis=(1, 2), keepdims=True)
            std = x.std(axis=(1, 2), keepdims=True)
            x -= mean
            x /= std + _EPS
        return x

    def windows(self, y: np.ndarray, *, window: int, hop: int) -> np.ndarray:
        """Cut a segment into model windows and return their features.

        Windows start every ``hop`` samples; if the last one stops short of
        the end, one more window ends exactly at the end. A segment shorter
        than one window is zero-padded on both sides to a single window.

        Parameters
        ----------
        y : np.ndarray
            float32 mono samples of one segment, shape ``(n,)``.
        window, hop : int
            Window length and step in samples; ``hop`` is a multiple of the
            feature ``hop_length``.

        Returns
        -------
        np.ndarray
            float32, shape ``(n_windows, n_frames(window), n_features)``,
            normalised as the bundle says.
        """
        p = self.params
        if hop % p.hop_length:
            raise ParameterError(f"window hop {hop} is not a multiple of the feature hop_length {p.hop_length}")
        y = np.asarray(y, dtype=np.float32)
        if y.size < window:
            left = (window - y.size) // 2
            y = np.pad(y, (left, window - y.size - left))
        fpw = self.n_frames(window)
        step = hop // p.hop_length
        n_win = 1 + (y.size - window) // hop
        covered = (n_win - 1) * hop + window
        seg_frames = self.frames(y[:covered])
        idx = np.arange(n_win)[:, None] * step + np.arange(fpw)[None, :]
        out = seg_frames[idx]
        if covered < y.size:
            out = np.concatenate([out, self.frames(y[-window:])[None]], axis=0)
        return self.normalize(out)

    @staticmethod
    def window_power(y: np.ndarray, *, window: int, hop: int) -> np.ndarray:
        """Mean power (mean square) of each window that :meth:`windows` cuts from ``y``.

        Same windows, same order, same zero padding of a short segment; float64
        ``(n_windows,)``. Computed from the samples, since window-normalised features
        no longer say how loud a window was.
        """
        y = np.asarray(y, dtype=np.float32)
        if y.size < window:
            y64 = y.astype(np.float64)
            return np.array([float(np.dot(y64, y64)) / window])
        n_win = 1 + (y.size - window) // hop
        starts = np.arange(n_win) * hop
        if (n_win - 1) * hop + window < y.size:
            starts = np.append(starts, y.size - window)
        ends = starts + window
        # Sum y**2 between consecutive window edges in float32 (one pass, no float64 copy: 20x
        # cheaper than a float64 cumsum), then add those blocks up in float64.
        edges = np.unique(np.concatenate([starts, ends]))  # the last edge is y.size
        blocks = np.add.reduceat(y * y, edges[:-1])
        prefix = np.concatenate([[0.0], np.cumsum(blocks, dtype=np.float64)])
        return (prefix[np.searchsorted(edges, ends)] - prefix[np.searchsorted(edges, starts)]) / window
