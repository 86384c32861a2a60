"""Cut audio into segments at its silences, vectorised and streaming.

The rule is pydub's ``detect_silence``/``detect_nonsilent``: a window of
``min_silence_ms`` whose RMS is at or below the threshold is silent; the union
of silent windows is silence; what is left is sound. pydub tests a window at
every millisecond in a Python loop; here the windows step by one analysis
frame (``frame_ms``) and are tested all at once from cumulative frame energies,
which is pydub with ``seek_step=frame_ms``: boundaries agree with pydub's
default ``seek_step=1`` to within one frame.

There is one implementation, :class:`StreamingSegmenter`: blocks go in,
finished segments come out. :func:`split_nonsilent` is that segmenter fed one
block, so the batch path, the live sidecar and training all cut audio the
same way, and memory stays flat however long the recording is.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ParameterError
from .params import SilenceParams

_EMPTY = np.zeros((0, 2), dtype=np.int64)


class StreamingSegmenter:
    """Stateful silence splitter: push mono blocks, get finished segments.

    Parameters
    ----------
    sr : int
        Sample rate of the blocks, Hz.
    params : SilenceParams
        Silence rule and segment limits.

    Notes
    -----
    A segment is reported once it is over: after ``min_silence_ms`` of silence
    has followed it (that is what makes it over), when it reaches
    ``max_segment_s`` (long sounds such as music report every ``max_segment_s``
    instead of never), or at :meth:`flush`. Offsets count samples from the first
    sample pushed. Segments shorter than ``min_segment_ms`` are dropped; the
    others are padded by ``keep_silence_ms`` on each side where they border
    silence (never across a ``max_segment_s`` cut, and never past the audio).
    """

    def __init__(self, *, sr: int, params: SilenceParams | None = None) -> None:
        params = params or SilenceParams()
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ParameterError(f"sr must be a positive integer sample rate, got {sr!r}")
        frame = int(round(params.frame_ms * sr / 1000))
        if frame < 1:
            raise ParameterError(f"frame_ms={params.frame_ms} is under one sample at sr={sr}")
        self.sr = int(sr)
        self.params = params
        self.frame = frame
        # Window length in frames; pydub's window is min_silence_ms long.
        self.k = max(1, int(round(params.min_silence_ms / params.frame_ms)))
        self.max_frames = max(1, int(math.floor(params.max_segment_s * sr / frame)))
        self.min_samples = int(round(params.min_segment_ms * sr / 1000))
        self.pad = int(round(params.keep_silence_ms * sr / 1000))
        self._abs_pow = 10.0 ** (params.threshold_dbfs / 10.0)
        self._rel = None if params.threshold_rel_db is None else 10.0 ** (params.threshold_rel_db / 10.0)

        self._carry = np.zeros(0, dtype=np.float32)  # samples of the incomplete frame
        # Energies and sample counts of frames from index ``self._e0`` on: the
        # k-1 frames before the first undecided one (windows reaching back)
        # and the undecided frames themselves.
        self._energy = np.zeros(0, dtype=np.float64)
        self._count = np.zeros(0, dtype=np.float64)
        self._e0 = 0
        self._energy_before = 0.0  # total energy of frames before _e0
        self._samples_before = 0.0
        self._n_frames = 0  # frames computed so far
        self._decided = 0  # frames whose silent/sound status is final
        self._open: int | None = None  # first frame of the segment in progress
        self._open_cut = False  # it starts at a max-length cut (no left padding)
        self._total = 0  # samples pushed
        self._flushed = False
        self.sound_frames = 0  # frames decided to be sound (kept or dropped as too short)

    # -- public -------------------------------------------------------------
    @property
    def samples_seen(self) -> int:
        """Samples pushed so far."""
        return self._total

    @property
    def retain_from(self) -> int:
        """Earliest sample offset a segment not yet reported can include.

        Callers that keep the audio for the segments may drop everything
        before it.
        """
        first = self._open if self._open is not None else self._decided
        return max(0, first * self.frame - self.pad)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add samples and return the segments that ended.

        Parameters
        ----------
        block : np.ndarray
            float32 samples, shape ``(n,)``, full scale 1.0.

        Returns
        -------
        np.ndarray
            int64, shape ``(m, 2)``: ``[start, end)`` sample offsets, padded.
        """
        if self._flushed:
            raise ParameterError("push() after flush(): make a new StreamingSegmenter per stream")
        block = np.asarray(block)
        if block.ndim != 1:
            raise ParameterError(f"block must be 1-D mono samples, got shape {block.shape}")
        if block.size == 0:
            return _EMPTY
        self._total += block.size
        buf = np.concatenate([self._carry, block.astype(np.float32, copy=False)]) if self._carry.size else block
        n_full = buf.size // self.frame
        used = n_full * self.frame
        self._carry = np.array(buf[used:], dtype=np.float32)
        if n_full == 0:
            return _EMPTY
        frames = buf[:used].reshape(n_full, self.frame).astype(np.float32, copy=False)
        energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64)
        self._append(energy, np.full(n_full, float(self.frame)))
        return self._decide(final=False)

    def flush(self) -> np.ndarray:
        """End the stream: decide the remaining frames and close the last segment."""
        if self._flushed:
            return _EMPTY
        if self._carry.size:
            c = self._carry.astype(np.float64)
            self._append(np.array([float(np.dot(c, c))]), np.array([float(c.size)]))
            self._carry = np.zeros(0, dtype=np.float32)
        out = self._decide(final=True)
        self._flushed = True
        return out

    # -- internals ----------------------------------------------------------
    def _append(self, energy: np.ndarray, count: np.ndarray) -> None:
        self._energy = np.concatenate([self._energy, energy])
        self._count = np.concatenate([self._count, count])
        self._n_frames += energy.size

    def _decide(self, *, final: bool) -> np.ndarray:
        k, n = self.k, self._n_frames
        if final and 0 < n < k:
            # The whole stream is shorter than one window: it is judged as one window, so
            # a quiet recording shorter than min_silence_ms is silence, not a sound (pydub
            # finds no silence in audio shorter than its window).
            k = n
        last = n - 1 if final else n - k  # last frame whose status can be final
        if last < self._decided:
            return _EMPTY
        e, c, e0 = self._energy, self._count, self._e0
        cs_e = np.concatenate([[0.0], np.cumsum(e)])
        cs_c = np.concatenate([[0.0], np.cumsum(c)])
        # Windows i (absolute frame index) that start in the kept range and fit.
        n_win = max(0, (n - e0) - k + 1)
        win_e = cs_e[k : k + n_win] - cs_e[:n_win]
        win_c = cs_c[k : k + n_win] - cs_c[:n_win]
        thr = np.full(n_win, self._abs_pow)
        if self._rel is not None and n_win:
            # Running level of everything heard up to each window's end.
            level = (self._energy_before + cs_e[k : k + n_win]) / (self._samples_before + cs_c[k : k + n_win])
            thr = np.maximum(thr, level * self._rel)
        silent_win = win_e <= thr * win_c
        # Frame j (absolute) is silent iff a silent window starts in [j-k+1, j].
        cs_w = np.concatenate([[0], np.cumsum(silent_win, dtype=np.int64)])
        j = np.arange(self._decided, last + 1)
        rel_j = j - e0
        hi = np.minimum(rel_j, n_win - 1) + 1
        lo = np.clip(rel_j - k + 1, 0, None)
        silent = (cs_w[np.maximum(hi, lo)] - cs_w[lo]) > 0
        self.sound_frames += int(silent.size - np.count_nonzero(silent))
        out = self._runs(j[0], silent, final=final)
        self._decided = last + 1
        self._trim()
        return out

    def _trim(self) -> None:
        keep_from = max(0, self._decided - self.k + 1)
        drop = keep_from - self._e0
        if drop > 0:
            self._energy_before += float(self._energy[:drop].sum())
            self._samples_before += float(self._count[:drop].sum())
            self._energy = self._energy[drop:]
            self._count = self._count[drop:]
            self._e0 = keep_from

    def _runs(self, first: int, silent: np.ndarray, *, final: bool) -> np.ndarray:
        """Turn newly decided frame statuses into finished segments.

        ``silent`` holds the statuses of frames ``first, first+1, ...``; the
        segment in progress (if any) is sound up to ``first - 1``.
        """
        pieces: list[tuple[int, int, bool, bool]] = []  # frames [s, e), cut on left, cut on right
        stop = first + silent.size
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (~silent).astype(np.int8), [0]])))
        runs = list(zip((edges[0::2] + first).tolist(), (edges[1::2] + first).tolist()))
        if self._open is not None:
            if runs and runs[0][0] == first:
                runs[0] = (self._open, runs[0][1])  # the segment in progress goes on
            else:
                runs.insert(0, (self._open, first))  # it ended just before ``first``
        left_cut, self._open, open_cut = self._open_cut, None, False
        for s, e in runs:
            if s != runs[0][0]:
                left_cut = False
            if e == stop and not final:
                self._open, open_cut = s, left_cut
                break
            while e - s > self.max_frames:  # cut only where the sound goes on
                pieces.append((s, s + self.max_frames, left_cut, True))
                s, left_cut = s + self.max_frames, True
            pieces.append((s, e, left_cut, False))
        # Long sounds report every max_segment_s instead of only when they end.
        while self._open is not None and stop - self._open > self.max_frames:
            pieces.append((self._open, self._open + self.max_frames, open_cut, True))
            self._open, open_cut = self._open + self.max_frames, True
        self._open_cut = open_cut
        return self._to_samples(pieces)

    def _to_samples(self, pieces: list[tuple[int, int, bool, bool]]) -> np.ndarray:
        rows = []
        for s, e, left_cut, right_cut in pieces:
            a, b = s * self.frame, min(e * self.frame, self._total)
            if b - a < max(1, self.min_samples):
                continue
            # Pad only where the segment borders silence; by the time a
            # segment closes, at least min_silence_ms >= 2*keep_silence_ms of
            # audio after it has been pushed, so the padding is known.
            rows.append((a if left_cut else max(0, a - self.pad), b if right_cut else min(self._total, b + self.pad)))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def split_nonsilent(y: np.ndarray, *, sr: int, params: SilenceParams | None = None) -> np.ndarray:
    """Find the sounds between silences of a whole signal.

    Parameters
    ----------
    y : np.ndarray
        float32 mono samples, shape ``(n,)``, full scale 1.0.
    sr : int
        Sample rate, Hz.
    params : SilenceParams, optional
        Silence rule and segment limits (defaults: :class:`SilenceParams`).

    Returns
    -------
    np.ndarray
        int64, shape ``(m, 2)``: ``[start, end)`` sample offsets into ``y``.
    """
    seg = StreamingSegmenter(sr=sr, params=params)
    return np.concatenate([seg.push(np.asarray(y, dtype=np.float32)), seg.flush()])


class SegmentedStream:
    """A :class:`StreamingSegmenter` that also keeps the audio of open segments.

    Push mono blocks; get back each finished segment with its samples. Only
    the audio a future segment can still include is kept, so memory is
    bounded by ``max_segment_s`` plus one block, not by the stream's length.
    Blocks are kept as they came and joined only when a segment is cut out,
    so a push costs the block, not the whole open segment.
    """

    def __init__(self, *, sr: int, params: SilenceParams | None = None) -> None:
        self.segmenter = StreamingSegmenter(sr=sr, params=params)
        self._chunks: list[np.ndarray] = []
        self._start = 0  # sample offset of _chunks[0][0]

    @property
    def buffered_samples(self) -> int:
        """Samples held for segments not yet reported."""
        return sum(c.size for c in self._chunks)

    def push(self, block: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Add float32 mono samples; return ``(start, end, samples)`` of finished segments."""
        block = np.array(block, dtype=np.float32)  # our own copy: callers reuse buffers
        if block.size:
            self._chunks.append(block)
        return self._take(self.segmenter.push(block))

    def flush(self) -> list[tuple[int, int, np.ndarray]]:
        """End the stream and return the last segments."""
        return self._take(self.segmenter.flush())

    def _take(self, bounds: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        out = []
        if len(bounds):
            buf = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks = [buf]
            out = [(a, b, buf[a - self._start : b - self._start].copy()) for a, b in bounds.tolist()]
        keep = self.segmenter.retain_from
        # Drop whole blocks that end before anything still needed; trim the first kept one.
        while self._chunks and self._start + self._chunks[0].size <= keep:
            self._start += self._chunks.pop(0).size
        if self._chunks and keep > self._start:
            self._chunks[0] = self._chunks[0][keep - self._start :].copy()
            self._start = keep
        return out
