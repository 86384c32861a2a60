"""One live session: open the source, consume its blocks, emit segments, stop cleanly.

Threads:

- the **audio callback** (PortAudio's thread, or the replay thread) stamps each
  block, copies it into a bounded queue and counts overflows and dropped
  blocks; nothing else;
- the **consumer** takes blocks off the queue and does all the work: mixing,
  resampling, segmenting, features, inference, JSONL and the view;
- a **writer** thread writes the Parquet tables every ``flush_s`` seconds, so a
  slow store never delays a label;
- the **caller's thread** waits for a stop (SIGINT, SIGTERM, the end of a
  replay, ``duration_s``, or the device going away), then stops the source,
  lets the consumer drain the queue and close the segment in progress, and
  writes everything heard.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import quote

import numpy as np

from audioclf_core.bundle import DEFAULT_MODEL, Bundle, load_bundle
from audioclf_core.errors import AudioClfError, OutputError, ParameterError
from audioclf_core.storage import check_local_file

from .outputs import JsonlSink, LiveView, ParquetSink, event_record, iso, percentile_ms
from .processing import LiveProcessor, SegmentEvent
from .sources import BlockQueue, DeviceSource, ReplaySource

DEFAULT_BLOCK_S = 0.02  # 20 ms blocks unless the user sets --blocksize
MAX_BLOCK_S = 1.0  # a block is classified only once whole: longer ones delay every label by as much
FIRST_BLOCK_TIMEOUT_S = 5.0  # a device that delivers nothing this long after opening is broken
STALL_TIMEOUT_S = 3.0  # ... or that stops delivering for this long


@dataclass
class LiveSummary:
    """What a session heard and did; printed at exit and written by ``--summary-json``."""

    recording: str = ""
    source: str = ""
    uri_name: str = ""
    sample_rate: int = 0
    channels: int = 0
    blocksize: int = 0
    model: str = ""
    engine: str = ""
    started_at: str = ""
    heard_s: float = 0.0
    wall_s: float = 0.0
    segments: int = 0
    label_segments: dict[str, int] = field(default_factory=dict)
    label_s: dict[str, float] = field(default_factory=dict)
    blocks: int = 0
    overflows: int = 0
    dropped_blocks: int = 0
    dropped_frames: int = 0
    queue_peak: int = 0
    queue_size: int = 0
    windows_ahead: int = 0
    windows_at_close: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    parquet_writes: int = 0
    stop_reason: str = ""
    error: str | None = None

    def latency_ms(self, q: float) -> float | None:
        """A percentile (0-100) of the segments' latencies."""
        return percentile_ms(self.latencies_ms, q)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("latencies_ms")
        d.update(latency_p50_ms=self.latency_ms(50), latency_p95_ms=self.latency_ms(95),
                 latency_max_ms=max(self.latencies_ms) if self.latencies_ms else None, latencies_ms=self.latencies_ms)
        return d

    def line(self) -> str:
        """One line for the end of a run: what was heard, latency and the loss counters."""
        lat = "-" if not self.latencies_ms else (
            f"{self.latency_ms(50):.1f}/{self.latency_ms(95):.1f}/{max(self.latencies_ms):.1f} ms")
        return (f"heard {self.heard_s:.1f} s in {self.wall_s:.1f} s: {self.segments} segments; "
                f"latency p50/p95/max {lat}; overflows {self.overflows}; dropped blocks {self.dropped_blocks}")


class _Stop:
    """Why the session stops: the first reason given wins."""

    def __init__(self, event: threading.Event | None) -> None:
        self.event = event or threading.Event()
        self.reason = ""
        self.error: str | None = None
        # A second Ctrl-C: stop classifying what is still queued, write what was classified.
        self.abandon = threading.Event()

    def set(self, reason: str, error: str | None = None) -> None:
        if not self.event.is_set():
            self.reason, self.error = reason, error
            self.event.set()
        elif error and self.error is None:
            self.error = error

    def is_set(self) -> bool:
        return self.event.is_set()


def run_live(
    *,
    device: str | int | None = None,
    replay: str | None = None,
    realtime: bool = True,
    model: str | None = None,
    jsonl: str | Path | None = None,
    out: str | None = None,
    samplerate: int | None = None,
    channels: int | None = None,
    blocksize: int | None = None,
    engine: str = "auto",
    cache_dir: str | Path | None = None,
    silence: Mapping[str, float] | None = None,
    flush_s: float = 60.0,
    duration_s: float | None = None,
    queue_s: float = 10.0,
    storage_options: Mapping | None = None,
    summary_json: str | Path | None = None,
    view_console=None,
    log: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    speculate: bool = True,
) -> LiveSummary:
    """Classify a live input (or a replayed recording) until stopped.

    Parameters
    ----------
    device : str or int, optional
        Input device index or name (default: the system's default input).
    replay : str, optional
        Feed this recording through the same path instead of a device.
    realtime : bool
        With ``replay``: pace it at its own rate (and drop blocks when the
        consumer falls behind, as a device would), or feed it as fast as it is
        processed.
    model : str, optional
        Bundle name, folder, archive or URL (default: the shipped default).
    jsonl : path, optional
        Append one JSON event per segment here.
    out : str, optional
        Output folder or URL for the result tables (``segments/``, ``recordings/``).
    samplerate, channels : int, optional
        Open the device at this rate / channel count instead of its own.
    blocksize : int, optional
        Frames per block (default 20 ms; 0 lets PortAudio choose).
    engine : {"auto", "litert", "keras"}
        Inference engine (see :mod:`audioclf_core.engines`).
    cache_dir : path, optional
        Where the LiteRT export is cached.
    silence : mapping, optional
        Overrides of the bundle's silence parameters (``min_silence_ms``...).
    flush_s : float
        Seconds between Parquet writes.
    duration_s : float, optional
        Stop after this many seconds of audio.
    queue_s : float
        Audio the queue holds before blocks are dropped, seconds.
    storage_options : mapping, optional
        fsspec options for ``model``, ``replay`` and ``out``.
    summary_json : path, optional
        Write the :class:`LiveSummary` here as JSON at the end.
    view_console : rich.console.Console, optional
        Show the live view on this console.
    log : callable, optional
        Receives one-line messages (warnings, "listening ...").
    stop : threading.Event, optional
        Set it to stop the session (SIGINT and SIGTERM do too, when this runs
        on the main thread).
    speculate : bool
        Classify windows of an open segment before it closes (lower latency,
        same answer).

    Returns
    -------
    LiveSummary
        ``error`` is set when the source failed (the device went away): what
        was heard up to then has been written all the same.

    Raises
    ------
    AudioClfError
        A request that cannot start: bad parameters, no such device, an
        unsupported rate, a bad bundle, an unwritable output.
    """
    say = log or (lambda _msg: None)
    t_start = time.perf_counter()
    if replay is not None and device is not None:
        raise ParameterError("give --device or --replay, not both")
    if replay is None and not realtime:
        raise ParameterError("--fast applies to --replay: a device delivers audio at its own pace")
    if replay is not None and (samplerate is not None or channels is not None):
        raise ParameterError("--samplerate and --channels apply to devices; a replay uses the recording's own")
    if not (isinstance(flush_s, (int, float)) and flush_s > 0):
        raise ParameterError(param="flush_s", value=flush_s, reason="must be positive")
    if duration_s is not None and not (duration_s > 0 and math.isfinite(duration_s)):
        raise ParameterError(param="duration_s", value=duration_s, reason="must be a positive number of seconds (none: until stopped)")
    if not queue_s > 0:
        raise ParameterError(param="queue_s", value=queue_s, reason="must be positive")
    from .inference import ENGINES

    if engine not in ENGINES:
        raise ParameterError(param="engine", value=engine, reason=f"use one of {', '.join(ENGINES)}")
    if blocksize is not None and (isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 0):
        raise ParameterError(param="blocksize", value=blocksize, reason="must be a whole number of frames (0: PortAudio decides)")

    bundle = load_bundle(model or DEFAULT_MODEL, storage_options=storage_options)
    params = bundle.manifest.silence.replace(**dict(silence or {}))

    # The source is opened (not started) before anything is created, so a bad
    # device or recording leaves no files behind.
    if replay is not None:
        source = ReplaySource(replay, blocksize=blocksize or 0, realtime=realtime, storage_options=storage_options)
        source_name = f"replay/{Path(str(replay).rstrip('/')).name}"
        uri_name = "replay/" + quote(Path(str(replay).rstrip("/")).name, safe="")
    else:
        from .devices import check_input_settings, resolve_input_device

        dev = resolve_input_device(device)
        samplerate = dev.native_rate if samplerate is None else samplerate
        channels = dev.default_channels if channels is None else channels
        check_input_settings(dev, samplerate=samplerate, channels=channels)
        if blocksize is None:
            blocksize = max(1, round(DEFAULT_BLOCK_S * samplerate))
        source = DeviceSource(dev, samplerate=samplerate, channels=channels, blocksize=blocksize)
        source_name = dev.name
        uri_name = quote(dev.name, safe="")
    rate = source.samplerate
    if source.blocksize > MAX_BLOCK_S * rate:
        if replay is not None:
            source.close()
        raise ParameterError(param="blocksize", value=source.blocksize,
                             reason=f"that is {source.blocksize / rate:g} s of audio at {rate} Hz: give at most "
                                    f"{MAX_BLOCK_S:g} s ({int(MAX_BLOCK_S * rate)} frames), or 0 to let PortAudio choose")
    # The queue holds queue_s of audio, at least 8 blocks (PortAudio's own block choice counts as 20 ms).
    source.blocks = BlockQueue(max(8, math.ceil(queue_s * rate / (source.blocksize or DEFAULT_BLOCK_S * rate))))

    from .devices import native_stderr_silenced
    from .inference import load_window_model

    sink = session = None
    try:
        # Outputs are checked before the model loads (its first export takes a while).
        if summary_json is not None:
            check_local_file(summary_json, what="summary file")
        parquet = None
        if out is not None:
            parquet = ParquetSink(out, bundle=bundle, silence=params, part="", every_s=flush_s,
                                  storage_options=storage_options)
        sink = JsonlSink(jsonl) if jsonl is not None else None
        if not bundle.manifest.trained:
            say(f"warning: model {bundle.name!r} is untrained: its labels are placeholders")
        with native_stderr_silenced():  # LiteRT announces its CPU delegate on fd 2
            window_model = load_window_model(bundle, engine=engine, cache_dir=cache_dir, warn=say)
            proc = LiveProcessor(bundle, model=window_model, input_rate=rate, silence=params, speculate=speculate)
            proc.warm_up()
        summary = LiveSummary(source=source_name, uri_name=uri_name, sample_rate=rate, channels=source.channels,
                              blocksize=source.blocksize, model=f"{bundle.name} {bundle.version}",
                              engine=window_model.name)
        session = _Session(bundle=bundle, proc=proc, source=source, summary=summary, jsonl=sink, parquet=parquet,
                           duration_s=duration_s, stop=_Stop(stop), view_console=view_console, say=say)
        session.run(t_start=t_start)
    finally:
        if sink is not None:
            sink.close(discard_if_unused=session is None or not session.started)
        if replay is not None:
            source.close()
    if sink is not None and sink.error is not None and summary.error is None:
        summary.error = sink.error
    if summary_json is not None:
        path = Path(summary_json).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary.as_dict(), indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write the summary file {path}: {exc.strerror or exc}") from None
    return summary


class _Session:
    """The running parts of one session (see the module notes for the threads)."""

    def __init__(self, *, bundle: Bundle, proc: LiveProcessor, source, summary: LiveSummary,
                 jsonl: JsonlSink | None, parquet: ParquetSink | None, duration_s: float | None, stop: _Stop,
                 view_console, say) -> None:
        self.bundle = bundle
        self.proc = proc
        self.source = source
        self.blocks: BlockQueue = source.blocks
        self.summary = summary
        self.jsonl = jsonl
        self.parquet = parquet
        self.duration_frames = None if duration_s is None else int(round(duration_s * source.samplerate))
        self.stop = stop
        self.say = say
        self.events: list[SegmentEvent] = []
        self.started_at: datetime | None = None
        self.recording = ""
        self._expected = 0  # next stream frame the consumer expects
        self._consumer_error: BaseException | None = None
        self._parquet_warned = False
        self.abandoned = False
        self.started = False
        self._first_block = threading.Event()
        self.view = None
        if view_console is not None:
            self.view = LiveView(title=f"{summary.source} · {summary.model} ({summary.engine})",
                                 labels=bundle.labels, stats=self._stats)
        self.view_console = view_console
        self.label_n = dict.fromkeys(bundle.labels, 0)
        self.label_s = dict.fromkeys(bundle.labels, 0.0)

    # -- caller's thread ----------------------------------------------------
    def run(self, *, t_start: float) -> None:
        if self.source.kind == "device":
            from .devices import native_stderr_silenced

            # PortAudio writes traces to fd 2 from its own thread when a device
            # goes away; the user gets our one line instead.
            with native_stderr_silenced():
                self._run(t_start=t_start)
        else:
            self._run(t_start=t_start)

    def _run(self, *, t_start: float) -> None:
        restore = _catch_signals(self.stop)
        live = None
        consumer = threading.Thread(target=self._consume, name="audioclf-live-consumer", daemon=True)
        try:
            self._begin(datetime.now(timezone.utc))  # until the first block says better
            self.source.start()  # raises DeviceError before anything is written
            self.started = True
            consumer.start()
            if self._wait_first_block(consumer):
                s = self.summary
                self.say(f"listening: {s.source} at {s.sample_rate} Hz, {s.channels} ch, blocks of {s.blocksize} "
                         f"frames; model {s.model} ({s.engine}); Ctrl-C to stop")
            if self.view is not None:
                from rich.live import Live

                live = Live(self.view, console=self.view_console, refresh_per_second=4, transient=False)
                live.start()
            self._watch(consumer)
        finally:
            try:
                self.source.stop()
                if self.started:
                    self._close_queue(consumer)
                    consumer.join()
            finally:
                if live is not None:
                    live.stop()
                restore()
        self.summary.wall_s = time.perf_counter() - t_start
        self.summary.stop_reason = self.stop.reason
        self.summary.error = self.stop.error
        if self._consumer_error is not None:
            raise self._consumer_error

    def _wait_first_block(self, consumer: threading.Thread) -> bool:
        """Wait until audio flows (devices take a moment to start); False if the session stops first."""
        deadline = time.monotonic() + FIRST_BLOCK_TIMEOUT_S
        while not self._first_block.wait(0.05):
            if self.stop.is_set() or not consumer.is_alive() or self.source.ended:
                return False
            if time.monotonic() > deadline:
                self.stop.set("error", f"input device {self.summary.source!r} delivered no audio in "
                                       f"{FIRST_BLOCK_TIMEOUT_S:.0f} s")
                return False
        return True

    def _watch(self, consumer: threading.Thread) -> None:
        """Wait for a reason to stop; check that the source is alive meanwhile."""
        seen, seen_at = 0, time.monotonic()
        while not self.stop.event.wait(0.05):
            if not consumer.is_alive():
                self.stop.set("error")
                return
            if self.source.ended:
                failure = self.source.failure
                self.stop.set("error" if failure else "end of recording", failure)
                return
            if self.source.kind == "device":
                n, now = self.blocks.counters.blocks, time.monotonic()
                if n != seen:
                    seen, seen_at = n, now
                elif now - seen_at > STALL_TIMEOUT_S:
                    self.stop.set("error", f"input device {self.summary.source!r} stopped delivering audio "
                                           f"{now - seen_at:.1f} s ago (unplugged, or its sound server went away)")

    def _close_queue(self, consumer: threading.Thread) -> None:
        while consumer.is_alive():
            try:
                self.blocks.close(timeout=0.1)
                return
            except queue.Full:
                continue

    # -- consumer thread ----------------------------------------------------
    def _begin(self, started_at: datetime) -> None:
        self.started_at = started_at
        self.recording = f"live://{self.summary.uri_name}/{iso(started_at)}"
        self.summary.recording = self.recording
        self.summary.started_at = iso(started_at)
        if self.parquet is not None:
            digest = hashlib.sha256(self.recording.encode()).hexdigest()[:8]
            self.parquet.part = f"live-{started_at:%Y%m%dT%H%M%S}-{digest}"

    def _consume(self) -> None:
        first = True
        try:
            while True:
                block = self.blocks.get()
                if block is None:
                    break
                if self.stop.abandon.is_set():
                    self.abandoned = True
                    break
                if first:
                    # Stream time 0 is the first frame of the first block.
                    first = False
                    wall_age = time.perf_counter() - block.arrived + len(block.data) / self.source.samplerate
                    self._begin(datetime.now(timezone.utc) - timedelta(seconds=wall_age))
                    self._first_block.set()
                if block.offset > self._expected:
                    # Blocks were dropped: keep stream time true with silence in their place.
                    gap = np.zeros((block.offset - self._expected, block.data.shape[1]), dtype=np.float32)
                    self._emit(self.proc.push(gap, arrived=block.arrived))
                self._expected = block.offset + len(block.data)
                self._emit(self.proc.push(block.data, arrived=block.arrived))
                self.proc.work_ahead()
                self.summary.queue_peak = max(self.summary.queue_peak, self.blocks.qsize() + 1)
                if self.duration_frames is not None and self.proc.frames_in >= self.duration_frames:
                    self.stop.set("duration")
                if self.parquet is not None:
                    if self.parquet.error is not None and not self._parquet_warned:
                        self._parquet_warned = True
                        self.say(f"warning: writing to {self.parquet.store.out} failed ({self.parquet.error}); "
                                 f"trying again every {self.parquet.every_s:g} s and at the end")
                    if self.parquet.due():
                        self.parquet.write_async(**self._session_rows())
            if self.abandoned:
                self.say(f"second Ctrl-C: the audio after {self.proc.frames_in / self.source.samplerate:.1f} s was "
                         "not classified; what was is written")
            else:
                self._emit(self.proc.flush(arrived=time.perf_counter()))
        except BaseException as exc:  # handed to the caller's thread
            self._consumer_error = exc
            self.stop.set("error", str(exc) if isinstance(exc, AudioClfError) else f"{type(exc).__name__}: {exc}")
        finally:
            self._finish()

    def _emit(self, events: list[SegmentEvent]) -> None:
        for ev in events:
            self.events.append(ev)
            self.summary.latencies_ms.append(ev.latency_ms)
            self.label_n[ev.label] += 1
            self.label_s[ev.label] += ev.end_s - ev.start_s
            record = event_record(ev, recording=self.recording, started_at=self.started_at, labels=self.bundle.labels)
            if self.jsonl is not None and self.jsonl.error is None:
                try:
                    self.jsonl.write(record)
                except OutputError as exc:  # the events stop; the session stops and writes the rest
                    self.stop.set("error", str(exc))
            if self.view is not None:
                self.view.add(ev, wall=record["start_time"])

    def _session_rows(self) -> dict:
        return dict(recording=self.recording, segments=list(self.events), heard_s=self.proc.frames_in / self.source.samplerate,
                    sample_rate=self.source.samplerate, channels=self.source.channels)

    def _finish(self) -> None:
        c, s = self.blocks.counters, self.summary
        s.heard_s = self.proc.frames_in / self.source.samplerate
        s.segments = len(self.events)
        s.label_segments, s.label_s = dict(self.label_n), {k: round(v, 3) for k, v in self.label_s.items()}
        s.blocks, s.overflows, s.dropped_blocks, s.dropped_frames = c.blocks, c.overflows, c.dropped_blocks, c.dropped_frames
        s.queue_size = self.blocks.maxsize
        s.windows_ahead, s.windows_at_close = self.proc.windows_ahead, self.proc.windows_at_close
        if self.parquet is not None:
            try:
                self.parquet.write_final(**self._session_rows())
                s.parquet_writes = self.parquet.writes
                if self.parquet.error is not None:
                    self.say(f"warning: a periodic write to {self.parquet.store.out} failed ({self.parquet.error}); "
                             "the final write succeeded")
            except AudioClfError as exc:  # the end line and the summary are still written
                self.stop.set("error", str(exc))

    def _stats(self) -> dict:
        c = self.blocks.counters
        return {
            "heard_s": self.proc.frames_in / self.source.samplerate, "segments": len(self.events),
            "overflows": c.overflows, "dropped_blocks": c.dropped_blocks, "queue": self.blocks.qsize(),
            "queue_max": self.blocks.maxsize, "latency_p95_ms": percentile_ms(self.summary.latencies_ms[-500:], 95),
        }


def _catch_signals(stop: _Stop) -> Callable[[], None]:
    """SIGINT and SIGTERM stop the session cleanly; a second SIGINT gives up classifying the
    audio still queued (what was classified is still written), a third gives up writing.

    Only the main thread can install handlers; elsewhere the caller stops the
    session through its ``stop`` event.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
    previous = {sig: signal.getsignal(sig) for sig in names}

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT and stop.reason in names.values():
            if not stop.abandon.is_set():
                stop.abandon.set()
                return
            raise KeyboardInterrupt  # a third: give up the final writes too
        stop.set(names.get(signum, str(signum)))

    for sig in names:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore
