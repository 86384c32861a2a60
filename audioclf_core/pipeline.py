"""Classify recordings: decode, resample, segment, featurise, infer, summarise.

Each recording streams through in blocks: decode a block, mix (or split) its
channels, resample it once to the bundle's rate, push it through the
streaming splitter, and turn every finished segment into model windows.
Background threads (``workers``, one recording each) do that front end while
the caller's thread runs the model, so decoding overlaps inference; outcomes
still come in input order. Windows from all segments, and from consecutive
recordings, are pooled into large batches. Memory is bounded, per worker, by
one block and one maximum-length segment per channel, plus one batch, whatever
the recordings' lengths.

A recording that cannot be read becomes an outcome with ``status="error"``
and a reason; the others carry on.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import soxr
from pydantic import BaseModel, Field

from .audio_io import AudioInfo, mix_to_mono, open_audio
from .bundle import Bundle
from .engines import ENGINES, load_engine
from .errors import AudioClfError, DecodeError, ParameterError, SourceUnavailableError
from .params import POOLINGS, ChannelMode, SilenceParams
from .segment import SegmentedStream

MIX = -1  # ``channel`` of rows from the mono mix


@dataclass
class RecordingOutcome:
    """Everything learnt about one recording.

    ``segments`` holds one row per segment: ``channel``, ``segment``,
    ``start_s``, ``end_s`` (seconds from the recording's start) and
    ``probs`` (float32, one per label, mean over the segment's windows).
    """

    recording: str
    status: str = "ok"
    error: str = ""
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    codec: str = ""
    source_size: int | None = None
    source_etag: str | None = None
    segments: list[tuple[int, int, float, float, np.ndarray]] = field(default_factory=list)
    covered_s: float = 0.0  # seconds inside segments, summed over channels
    analysed_channels: int = 1
    retryable: bool = False  # failed because storage failed, not because of the recording
    processed_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def silence_s(self) -> float | None:
        """Seconds outside any segment (channel-seconds in split mode); None for a recording that
        failed, whose header may give a duration but whose sound was never all heard."""
        if self.duration_s is None or self.status != "ok":
            return None
        return max(0.0, self.duration_s * self.analysed_channels - self.covered_s)

    def label_seconds(self, labels: tuple[str, ...]) -> dict[str, float | None]:
        """Seconds of audio per label (channel-seconds in split mode); None each for a recording that
        failed (it holds no segments, yet is not known to hold none of each label)."""
        if self.status != "ok":
            return dict.fromkeys(labels, None)
        out = dict.fromkeys(labels, 0.0)
        for _, _, start, end, probs in self.segments:
            out[labels[int(np.argmax(probs))]] += end - start
        return out


class Tally(BaseModel):
    """What a set of outcomes amounted to; tallies of several sets add up.

    The one summary the CLI, the Prefect tasks and the flows all keep.
    """

    recordings: int = 0
    failed: int = 0
    audio_s: float = 0.0
    segments: int = 0
    label_s: dict[str, float] = Field(default_factory=dict)
    label_segments: dict[str, int] = Field(default_factory=dict)
    failures: list[tuple[str, str]] = Field(default_factory=list)

    def add(self, out: RecordingOutcome, labels: tuple[str, ...]) -> None:
        """Count one outcome: a failure with its reason, or its audio and segments."""
        self.recordings += 1
        if out.status != "ok":
            self.failed += 1
            self.failures.append((out.recording, out.error))
            return
        self.audio_s += out.duration_s or 0.0
        self.segments += out.n_segments
        for lab, sec in out.label_seconds(labels).items():
            self.label_s[lab] = self.label_s.get(lab, 0.0) + sec
        for *_, probs in out.segments:
            lab = labels[int(np.argmax(probs))]
            self.label_segments[lab] = self.label_segments.get(lab, 0) + 1

    def merge(self, other: "Tally") -> None:
        """Add another tally's counts to this one."""
        self.recordings += other.recordings
        self.failed += other.failed
        self.audio_s += other.audio_s
        self.segments += other.segments
        self.failures.extend(other.failures)
        for lab, sec in other.label_s.items():
            self.label_s[lab] = self.label_s.get(lab, 0.0) + sec
        for lab, n in other.label_segments.items():
            self.label_segments[lab] = self.label_segments.get(lab, 0) + n


@dataclass
class _Segment:
    recording: str
    channel: int
    index: int
    start_s: float
    end_s: float
    windows: np.ndarray  # float32 (n_windows, frames, features)
    power: np.ndarray  # float64 (n_windows,): each window's mean power
    probs: np.ndarray | None = None


@dataclass
class _Start:
    recording: str


@dataclass
class _End:
    recording: str
    info: AudioInfo
    duration_s: float
    channels_analysed: int


@dataclass
class _Failed:
    recording: str
    reason: str
    info: AudioInfo | None = None
    retryable: bool = False
    size: int | None = None  # the file's identity when it failed before its header was read
    etag: str | None = None


# soxr's "HQ" preset for the one resample to the model's rate, as the training corpus was made.
# Streaming 44.1 kHz to 8 kHz it costs about 0.5 s per hour of audio on one core; "MQ" saves only
# ~13 % of that (measured on an idle machine). Batch and live share it, so their answers stay
# identical.
RESAMPLE_QUALITY = "HQ"


def pool_windows(probs: np.ndarray, power: np.ndarray | None, pooling: str) -> np.ndarray:
    """One segment's probabilities from its windows' (see :attr:`Manifest.pooling`).

    Parameters
    ----------
    probs : np.ndarray
        float32 ``(n_windows, n_labels)``.
    power : np.ndarray or None
        Each window's mean power (:meth:`FeatureExtractor.window_power`); needed for
        ``"energy"``.
    pooling : {"mean", "energy"}
        ``"mean"``: every window counts the same. ``"energy"``: each window counts in
        proportion to its power, so a syllable decides a segment that is mostly the room
        noise around it (the segmenter keeps noise above its threshold in the segment).

    Returns
    -------
    np.ndarray
        float32 ``(n_labels,)``.
    """
    if pooling not in POOLINGS:
        raise ParameterError(param="pooling", value=pooling, reason=f"use one of {', '.join(POOLINGS)}")
    if pooling == "mean" or len(probs) == 1:
        return probs.mean(axis=0)
    if power is None or len(power) != len(probs):
        raise ParameterError(f"energy pooling needs one power per window ({len(probs)} windows)")
    top = float(np.max(power))
    if not top > 0:  # digital silence throughout: nothing to weigh by
        return probs.mean(axis=0)
    w = (np.asarray(power, dtype=np.float64) / top).astype(np.float32)
    return (w @ probs) / w.sum()


def pooled_window_probs(
    predict: Callable[[np.ndarray], np.ndarray], windows: list[np.ndarray], powers: list[np.ndarray] | None = None,
    *, pooling: str = "mean",
) -> list[np.ndarray]:
    """Each segment's probabilities, pooled over its windows, all segments in one forward pass.

    Parameters
    ----------
    predict : callable
        float32 ``(n, frames, features)`` -> float32 ``(n, n_labels)``.
    windows : list of np.ndarray
        Per segment, float32 ``(n_windows, frames, features)``.
    powers : list of np.ndarray, optional
        Per segment, its windows' mean power (needed for ``pooling="energy"``).
    pooling : {"mean", "energy"}
        See :func:`pool_windows`.

    Returns
    -------
    list of np.ndarray
        Per segment, float32 ``(n_labels,)``.
    """
    if not windows:
        return []
    probs = predict(np.concatenate(windows))
    bounds = np.cumsum([0] + [len(w) for w in windows])
    if powers is None:
        powers = [None] * len(windows)
    return [pool_windows(probs[a:b], pw, pooling) for a, b, pw in zip(bounds[:-1], bounds[1:], powers)]


class Classifier:
    """Classifies recordings with one bundle.

    Parameters
    ----------
    bundle : Bundle
        The model and its contract.
    silence : SilenceParams, optional
        Overrides the bundle's silence defaults.
    channels : {"mix", "split"}
        Mix channels to mono (rows get ``channel=-1``) or classify each channel
        on its own (rows get the channel index).
    batch_windows : int
        Windows pooled before a forward pass (across segments and recordings).
    block_s : float
        Seconds of audio decoded at a time.
    resample_quality : str
        soxr quality preset ("HQ" by default; "MQ", "LQ", "VHQ").
    storage_options : mapping, optional
        fsspec options for remote recordings (endpoint, credentials).
    engine : {"auto", "litert", "keras"}
        Inference engine (see :mod:`audioclf_core.engines`); ``auto`` runs the
        bundle's LiteRT flatbuffer and never imports TensorFlow when it can.
    warn : callable, optional
        Called with one line when ``auto`` falls back to Keras.
    workers : int
        Recordings decoded, cut and turned into features at once, each in its own thread
        (the decoders, the resampler and numpy work largely outside the GIL: two threads on
        two cores took a warm 2 h archive from 5.2 to 3.7 s). Inference stays in the calling
        thread. Use 1 where something else already runs classifiers in parallel.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        silence: SilenceParams | None = None,
        channels: ChannelMode = "mix",
        batch_windows: int = 1024,
        block_s: float = 60.0,
        resample_quality: str = RESAMPLE_QUALITY,
        storage_options: Mapping | None = None,
        engine: str = "auto",
        warn: Callable[[str], None] | None = None,
        workers: int = 1,
    ) -> None:
        if channels not in ("mix", "split"):
            raise ParameterError(param="channels", value=channels, reason="use 'mix' or 'split'")
        if batch_windows < 1:
            raise ParameterError(param="batch_windows", value=batch_windows, reason="must be at least 1")
        if not 0 < block_s <= 3600:
            raise ParameterError(param="block_s", value=block_s, reason="must be in (0, 3600]")
        if not isinstance(workers, int) or workers < 1:
            raise ParameterError(param="workers", value=workers, reason="must be a whole number, at least 1")
        self.bundle = bundle
        self.silence = silence or bundle.manifest.silence
        self.channels = channels
        self.batch_windows = int(batch_windows)
        self.block_s = float(block_s)
        self.resample_quality = resample_quality
        self.storage_options = dict(storage_options or {})
        if engine not in ENGINES:
            raise ParameterError(param="engine", value=engine, reason=f"use one of {', '.join(ENGINES)}")
        self.engine = engine
        self._warn = warn
        self.workers = workers
        self._predictor = None
        self._predictor_lock = threading.Lock()
        _one_blas_thread()

    @property
    def params_sha256(self) -> str:
        """Hash of everything besides the model that changes the results."""
        return hash_params(self.silence, self.channels, self.bundle.pooling)

    def tables(self, outcomes: Iterable[RecordingOutcome]):
        """The result contract's two tables for these outcomes (see :func:`to_tables`)."""
        return to_tables(outcomes, self.bundle, channels=self.channels, params_sha256=self.params_sha256)

    @property
    def predictor(self):
        """The inference engine, loaded on first use."""
        with self._predictor_lock:  # threads share a classifier: load the model once
            if self._predictor is None:
                self._predictor = load_engine(self.bundle, engine=self.engine, warn=self._warn)
        return self._predictor

    # -- public -------------------------------------------------------------
    def classify(self, uris: Iterable[str]) -> Iterator[RecordingOutcome]:
        """Classify recordings; yield one outcome per URI, in input order.

        A URI given twice raises :class:`ParameterError` once a decoding thread reaches its
        second mention (its two outcomes would have one key in the results).
        """
        events = _fronts(self._front, uris, workers=self.workers, maxsize=8 * self.workers)
        pending: list[_Segment] = []
        n_pending = 0
        open_: dict[str, RecordingOutcome] = {}
        done: dict[str, bool] = {}
        order: deque[str] = deque()
        try:
            for ev in events:
                if isinstance(ev, _Start):
                    open_[ev.recording] = RecordingOutcome(ev.recording)
                    order.append(ev.recording)
                    continue
                if isinstance(ev, _Segment):
                    pending.append(ev)
                    n_pending += len(ev.windows)
                    if n_pending >= self.batch_windows:
                        self._infer(pending, open_)
                        pending, n_pending = [], 0
                    continue
                out = open_[ev.recording]
                _finish(out, ev)
                done[ev.recording] = True
                yield from _ready(order, open_, done, pending)
            self._infer(pending, open_)
            pending = []
            yield from _ready(order, open_, done, pending)
        finally:
            events.close()

    def classify_one(self, uri: str) -> RecordingOutcome:
        """Classify a single recording."""
        return next(iter(self.classify([uri])))

    def segment_probs(self, windows: list[np.ndarray], powers: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """:func:`pooled_window_probs` with this classifier's engine and the bundle's pooling:
        per segment (float32 ``(n_windows, frames, features)``, and its windows' power), its
        probabilities (``(n_labels,)``)."""
        return pooled_window_probs(self.predictor, windows, powers, pooling=self.bundle.pooling)

    # -- internals ----------------------------------------------------------
    def _infer(self, pending: list[_Segment], open_: dict[str, RecordingOutcome]) -> None:
        for seg, probs in zip(pending, self.segment_probs([s.windows for s in pending], [s.power for s in pending])):
            out = open_[seg.recording]
            if out.status == "ok":
                out.segments.append((seg.channel, seg.index, seg.start_s, seg.end_s, probs))
                out.covered_s += seg.end_s - seg.start_s

    def _front(self, uri: str) -> Iterator[_Segment | _End | _Failed]:
        """Decode one recording and yield its segments' windows, then its end."""
        info = None
        try:
            with open_audio(uri, storage_options=self.storage_options) as reader:
                info = reader.info
                yield from self._stream(uri, reader)
        except AudioClfError as exc:
            # refused at its header: the header's facts (rate, channels, promised length) still go in its row
            info = info or getattr(exc, "info", None)
            yield _Failed(uri, str(exc), info, retryable=isinstance(exc, SourceUnavailableError),
                          size=getattr(exc, "size", None), etag=getattr(exc, "etag", None))
        except MemoryError:
            raise
        except Exception as exc:  # a bad file must not stop the batch
            yield _Failed(uri, f"cannot process {uri}: {type(exc).__name__}: {exc}", info)

    def _stream(self, uri: str, reader) -> Iterator[_Segment | _End]:
        info: AudioInfo = reader.info
        sr = self.bundle.sample_rate
        split = self.channels == "split"
        n_out = info.channels if split else 1
        streams = [SegmentedStream(sr=sr, params=self.silence) for _ in range(n_out)]
        counters = [0] * n_out
        resampler = None
        if info.sample_rate != sr:
            resampler = soxr.ResampleStream(info.sample_rate, sr, n_out, dtype="float32", quality=self.resample_quality)
        block = max(1, int(self.block_s * info.sample_rate))
        n_frames = 0
        for x in reader.blocks(block):
            n_frames += len(x)
            if not split and x.shape[1] > 1:
                x = mix_to_mono(x)
            if resampler is not None:
                x = resampler.resample_chunk(np.ascontiguousarray(x), last=False)
            yield from self._segments(uri, streams, counters, x, flush=False)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, n_out), dtype=np.float32), last=True)
            yield from self._segments(uri, streams, counters, tail, flush=False)
        yield from self._segments(uri, streams, counters, None, flush=True)
        duration = n_frames / info.sample_rate
        heard = any(s.segmenter.sound_frames for s in streams)  # a silent recording is ok, however short
        if duration * 1000 < max(self.silence.min_segment_ms, 1.0) and n_frames and heard:
            raise DecodeError(
                f"cannot classify {uri}: too short ({duration:.3f} s; a segment needs at least "
                f"{self.silence.min_segment_ms:.0f} ms of sound)"
            )
        if n_frames == 0:
            raise DecodeError(f"cannot classify {uri}: no audio frames")
        yield _End(uri, info, duration, n_out)

    def _segments(self, uri, streams, counters, x, *, flush: bool) -> Iterator[_Segment]:
        sr = self.bundle.sample_rate
        fx = self.bundle.features
        win, hop = self.bundle.window_samples, self.bundle.hop_samples
        for ch, stream in enumerate(streams):
            found = stream.flush() if flush else stream.push(x[:, ch])
            for start, end, y in found:
                channel = ch if self.channels == "split" else MIX
                yield _Segment(uri, channel, counters[ch], start / sr, end / sr, fx.windows(y, window=win, hop=hop),
                               fx.window_power(y, window=win, hop=hop))
                counters[ch] += 1


def _one_blas_thread() -> None:
    """Keep numpy's BLAS to one thread in this process.

    The only BLAS call here is the small mel projection; a BLAS pool only
    fights TensorFlow's pool and the decode thread for the cores. On 2 cores
    the benchmark measured 349x real time with the default pool and 1,101x
    with one thread (the `classify` section of benchmarks/RESULTS.md).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _finish(out: RecordingOutcome, ev: _End | _Failed) -> None:
    info = ev.info
    if info is not None:
        out.sample_rate, out.channels, out.codec = info.sample_rate, info.channels, info.codec
        out.source_size, out.source_etag = info.size, info.etag
    if isinstance(ev, _Failed):
        if info is None:
            out.source_size, out.source_etag = ev.size, ev.etag
        out.status, out.error, out.retryable = "error", ev.reason, ev.retryable
        out.segments.clear()
        out.covered_s = 0.0
        out.duration_s = info.duration_s if info is not None else None
    else:
        out.duration_s = ev.duration_s
        out.analysed_channels = ev.channels_analysed


def _ready(order, open_, done, pending) -> Iterator[RecordingOutcome]:
    """Yield finished recordings from the front of ``order``."""
    waiting = {s.recording for s in pending}
    while order and done.get(order[0]) and order[0] not in waiting:
        uri = order.popleft()
        out = open_.pop(uri)
        done.pop(uri)
        out.segments.sort(key=lambda r: (r[0], r[1]))
        _end_within_duration(out)
        yield out


def _end_within_duration(out: RecordingOutcome) -> None:
    """End no segment after the recording does.

    The resampler rounds the model-rate length up, so a sound that runs to the end of a
    recording whose rate is not a multiple of the model's ends up to one model sample past it
    (22,050 Hz to 8 kHz: 1.2346032 s came out as 1.234625 s), and label seconds plus
    silence would exceed the duration.
    """
    d = out.duration_s
    if d is None or not any(end > d for _, _, _, end, _ in out.segments):
        return
    out.segments = [(ch, i, min(start, d), min(end, d), p) for ch, i, start, end, p in out.segments]
    out.covered_s = sum(end - start for _, _, start, end, _ in out.segments)


def _fronts(front: Callable[[str], Iterable], uris: Iterable[str], *, workers: int, maxsize: int) -> Iterator:
    """Run ``front(uri)`` for each URI in ``workers`` daemon threads, ``maxsize`` events ahead.

    Each thread takes the next URI, announces it with a :class:`_Start` event and then
    hands on that recording's events in their order; announcements come in input order,
    so the consumer knows the order of the outcomes before any event of a later recording
    arrives. A failure in a thread (or in ``uris``) re-raises in the consumer; closing the
    returned generator stops the threads at their next event.
    """
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    take = threading.Lock()  # one thread at a time takes a URI and announces it
    todo = iter(uris)
    seen: set[str] = set()
    done = object()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            while True:
                with take:
                    uri = next(todo, done)
                    if uri is done:
                        break
                    if uri in seen:
                        raise ParameterError(f"{uri} was given twice: classify each recording once")
                    seen.add(uri)
                    if not put(("item", _Start(uri))):
                        return
                for ev in front(uri):
                    if not put(("item", ev)):
                        return
        except BaseException as exc:  # hand every failure to the consumer
            put(("error", exc))
        put(("end", None))

    threads = [threading.Thread(target=work, name=f"audioclf-decode-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()

    def consume() -> Iterator:
        running = len(threads)
        try:
            while running:
                kind, item = q.get()
                if kind == "item":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    running -= 1
        finally:
            stop.set()
            # Unblock threads waiting on a full queue, then let them exit.
            while not q.empty():
                q.get_nowait()
            for t in threads:
                t.join(timeout=5)

    return consume()


def hash_params(silence: SilenceParams, channels: ChannelMode, pooling: str) -> str:
    """Hex SHA-256 of the parameters that, besides the model's weights, change results."""
    import hashlib
    import json

    spec = {"silence": silence.model_dump(mode="json"), "channels": channels, "pooling": pooling}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def to_tables(
    outcomes: Iterable[RecordingOutcome], bundle: Bundle, *, channels: ChannelMode, params_sha256: str | None = None
):
    """Turn outcomes into the result contract's two tables.

    ``params_sha256`` defaults to the hash of the bundle's own silence
    parameters: pass :attr:`Classifier.params_sha256` when they were overridden
    (:meth:`Classifier.tables` does).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        ``segments`` and ``recordings`` with the columns of
        :func:`audioclf_core.results.segment_columns` and
        :func:`audioclf_core.results.recording_columns`.
    """
    import pandas as pd

    from .results import recording_columns, segment_columns

    labels = bundle.labels
    if params_sha256 is None:
        params_sha256 = hash_params(bundle.manifest.silence, channels, bundle.pooling)
    model = {"model": bundle.name, "model_version": bundle.version, "model_sha256": bundle.sha256}
    seg_rows, rec_rows = [], []
    for out in outcomes:
        for channel, index, start, end, probs in out.segments:
            best = int(np.argmax(probs))
            row = {"recording": out.recording, "channel": channel, "segment": index, "start_s": start, "end_s": end,
                   "label": labels[best], "confidence": float(probs[best])}
            row.update({f"p_{lab}": float(p) for lab, p in zip(labels, probs)})
            seg_rows.append({**row, **model})
        rec = {"recording": out.recording, "status": out.status, "error": out.error or None, "duration_s": out.duration_s,
               "sample_rate": out.sample_rate, "channels": out.channels, "n_segments": out.n_segments}
        rec.update({f"{lab}_s": s for lab, s in out.label_seconds(labels).items()})
        rec.update({"silence_s": out.silence_s, "processed_at": out.processed_at, "channel_mode": channels,
                    "source_size": out.source_size, "source_etag": out.source_etag, "params_sha256": params_sha256,
                    **model})
        rec_rows.append(rec)
    segments = pd.DataFrame(seg_rows, columns=segment_columns(labels))
    recordings = pd.DataFrame(rec_rows, columns=recording_columns(labels))
    return segments, recordings
