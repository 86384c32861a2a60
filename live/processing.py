"""The consumer's work: mix, resample, segment, classify, block by block.

Each step is the batch path's (:class:`audioclf_core.pipeline.Classifier`):
channels mixed by their mean, one streaming soxr resampler to the bundle's
rate, the core's :class:`~audioclf_core.segment.StreamingSegmenter` with the
same silence parameters, :meth:`FeatureExtractor.windows` on each segment's
audio, and the segment's probabilities pooled over its windows as the bundle
says (:func:`audioclf_core.pipeline.pool_windows`). A
recording replayed through here therefore gives the batch path's segments and
labels.

What differs is *when* the work happens. A segment is only reported once it is
over, and classifying a 30 s piece of music then (60 windows) would take tens
of milliseconds. So windows are classified while the segment is still open:
the segmenter's :attr:`~StreamingSegmenter.retain_from` is where the open
segment will start, and every window that starts a whole number of hops after
it is classified as soon as its audio is in. When the segment is reported, the
cached windows that fit inside it are used and only the last one or two are
computed, so the latency does not grow with the segment's length. The cache
is only a guess: it is used only when the reported start equals the guessed
one, and the windows are the very ones :meth:`FeatureExtractor.windows` would
cut (the tests check this against the batch path), so the answer never depends
on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import soxr

from audioclf_core.audio_io import mix_to_mono
from audioclf_core.bundle import Bundle
from audioclf_core.params import SilenceParams
from audioclf_core.pipeline import RESAMPLE_QUALITY, pool_windows
from audioclf_core.segment import StreamingSegmenter

from .inference import WindowModel


@dataclass(frozen=True)
class SegmentEvent:
    """One classified segment.

    ``start``/``end`` are sample offsets at the bundle's rate from the stream's
    first sample (padded as the batch path pads); ``closed_at`` is when the
    block that closed it arrived, ``emitted_at`` when its label was known
    (``time.perf_counter()``).
    """

    index: int
    start: int
    end: int
    sample_rate: int
    probs: np.ndarray  # float32, (n_labels,)
    label: str
    closed_at: float
    emitted_at: float

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def confidence(self) -> float:
        return float(self.probs.max())

    @property
    def latency_ms(self) -> float:
        return 1000.0 * (self.emitted_at - self.closed_at)


class _Tail:
    """The most recent mono samples, from a moving start offset on.

    Appends are amortised (the array grows by doubling and is compacted in
    place), unlike concatenating the open segment's audio on every block.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._lo = 0  # index in _buf of offset ``start``
        self._hi = 0
        self.start = 0  # stream offset of _buf[_lo]

    @property
    def end(self) -> int:
        """Stream offset just past the last sample."""
        return self.start + self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if self._hi + n > len(self._buf):
            held = self._hi - self._lo
            if held + n > len(self._buf) // 2:
                grown = np.zeros(max(2 * len(self._buf), 2 * (held + n)), dtype=np.float32)
                grown[:held] = self._buf[self._lo : self._hi]
                self._buf = grown
            else:
                self._buf[:held] = self._buf[self._lo : self._hi]
            self._lo, self._hi = 0, held
        self._buf[self._hi : self._hi + n] = x
        self._hi += n

    def view(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)`` (stream offsets); valid until the next append."""
        assert self.start <= a <= b <= self.end, (a, b, self.start, self.end)
        return self._buf[self._lo + a - self.start : self._lo + b - self.start]

    def drop_before(self, offset: int) -> None:
        cut = min(max(offset, self.start), self.end) - self.start
        self._lo += cut
        self.start += cut


class LiveProcessor:
    """Turns native-rate blocks into classified segments.

    Parameters
    ----------
    bundle : Bundle
        The model's contract (rate, window, hop, features, labels).
    model : WindowModel
        Runs the model on windows.
    input_rate : int
        Rate of the blocks, Hz (the device's).
    silence : SilenceParams
        The splitter's parameters.
    resample_quality : str
        soxr preset, as the batch path's (``RESAMPLE_QUALITY``, "HQ").
    speculate : bool
        Classify an open segment's windows as they fill (see the module notes).
    """

    def __init__(self, bundle: Bundle, *, model: WindowModel, input_rate: int, silence: SilenceParams,
                 resample_quality: str = RESAMPLE_QUALITY, speculate: bool = True) -> None:
        self.bundle = bundle
        self.model = model
        self.sr = bundle.sample_rate
        self.input_rate = int(input_rate)
        self.silence = silence
        self.labels = bundle.labels
        self.win = bundle.window_samples
        self.hop = bundle.hop_samples
        self.features = bundle.features
        self.segmenter = StreamingSegmenter(sr=self.sr, params=silence)
        self.pad = self.segmenter.pad
        self.speculate = bool(speculate)
        self._resampler = None
        if self.input_rate != self.sr:
            self._resampler = soxr.ResampleStream(self.input_rate, self.sr, 1, dtype="float32", quality=resample_quality)
        self._tail = _Tail()
        self._n_segments = 0
        self._last_end: int | None = None
        self._anchor: int | None = None  # guessed start of the open segment
        self._cached: list[np.ndarray] = []  # probabilities of its windows 0, 1, ...
        self.frames_in = 0  # input frames (at input_rate) processed
        self.windows_ahead = 0  # windows classified before their segment closed
        self.windows_at_close = 0  # windows classified when their segment closed

    def warm_up(self) -> None:
        """Run the features and the model once, so the first segment pays no first-call costs."""
        y = np.zeros(self.win, dtype=np.float32)
        self.model(self.features.windows(y, window=self.win, hop=self.hop))

    # -- the stream ---------------------------------------------------------
    def push(self, block: np.ndarray, *, arrived: float) -> list[SegmentEvent]:
        """Add a block; return the segments it closed, classified.

        Parameters
        ----------
        block : np.ndarray
            float32, ``(frames, channels)`` at ``input_rate``.
        arrived : float
            ``time.perf_counter()`` when the block arrived.
        """
        self.frames_in += len(block)
        x = mix_to_mono(block)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=False)
        return self._segments(np.ascontiguousarray(x[:, 0], dtype=np.float32), arrived=arrived, final=False)

    def flush(self, *, arrived: float) -> list[SegmentEvent]:
        """End the stream: the resampler's tail, then the segment in progress."""
        events: list[SegmentEvent] = []
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros((0, 1), dtype=np.float32), last=True)
            events += self._segments(np.ascontiguousarray(tail[:, 0], dtype=np.float32), arrived=arrived, final=False)
        events += self._segments(np.zeros(0, dtype=np.float32), arrived=arrived, final=True)
        return events

    def work_ahead(self, *, max_windows: int = 2) -> int:
        """Classify the open segment's windows whose audio is complete; return how many.

        Called by the consumer after it has emitted a block's segments, so this
        work never delays a label. At most ``max_windows`` per call: a backlog
        (after a guess changed) is worked off over the next blocks instead of
        holding up the queue.
        """
        if not self.speculate:
            return 0
        guess = self.segmenter.retain_from
        if self._last_end is not None and guess + self.pad == self._last_end:
            guess = self._last_end  # a sound cut at max_segment_s goes on, unpadded, from the cut
        if guess != self._anchor:
            self._anchor, self._cached = guess, []
        done = 0
        while done < max_windows:
            a = self._anchor + len(self._cached) * self.hop
            if a + self.win > self._tail.end:
                return done
            w = self.features.windows(self._tail.view(a, a + self.win), window=self.win, hop=self.hop)
            self._cached.append(self.model(w)[0])
            self.windows_ahead += 1
            done += 1
        return done

    # -- internals ----------------------------------------------------------
    def _segments(self, y: np.ndarray, *, arrived: float, final: bool) -> list[SegmentEvent]:
        if y.size:
            self._tail.append(y)
        bounds = self.segmenter.flush() if final else self.segmenter.push(y)
        events = []
        for a, b in bounds.tolist():
            probs = self._classify(a, b)
            self._last_end = b
            best = int(np.argmax(probs))
            events.append(
                SegmentEvent(self._n_segments, a, b, self.sr, probs, self.labels[best], arrived, time.perf_counter())
            )
            self._n_segments += 1
        self._tail.drop_before(self.segmenter.retain_from)
        return events

    def _classify(self, a: int, b: int) -> np.ndarray:
        """Pooled window probabilities of samples ``[a, b)``, as the batch path computes them."""
        y = self._tail.view(a, b)
        win, hop = self.win, self.hop
        cached, self._anchor, self._cached = (self._cached if a == self._anchor else []), None, []
        power = self.features.window_power(y, window=win, hop=hop)
        if y.size < win:
            windows = self.features.windows(y, window=win, hop=hop)
            self.windows_at_close += len(windows)
            return pool_windows(self.model(windows), power, self.bundle.pooling)
        # FeatureExtractor.windows: windows every hop from the start, plus one
        # that ends at the end if they stop short of it.
        n_win = 1 + (y.size - win) // hop
        have = cached[:n_win]
        todo = [self.features.windows(y[k * hop : k * hop + win], window=win, hop=hop) for k in range(len(have), n_win)]
        if (n_win - 1) * hop + win < y.size:
            todo.append(self.features.windows(y[-win:], window=win, hop=hop))
        probs = list(have)
        if todo:
            new = self.model(np.concatenate(todo))
            self.windows_at_close += len(new)
            probs.extend(new)
        return pool_windows(np.stack(probs).astype(np.float32, copy=False), power, self.bundle.pooling)
