"""Where classified segments go: JSONL events, the result tables, the console.

- :class:`JsonlSink` appends one JSON object per segment and flushes it, so a
  reader tailing the file sees whole lines only.
- :class:`ParquetSink` writes the batch platform's ``segments/`` and
  ``recordings/`` rows for the session (recording ``live://<device>/<start>``,
  channel -1) through :class:`~audioclf_core.results.ResultStore`, every
  ``every_s`` seconds on a writer thread and once more at the end. Every write
  is the whole session under one part name, so a later write replaces an
  earlier one and a crash loses at most ``every_s`` seconds of rows.
- :class:`LiveView` is the ``rich`` renderable of the console view.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from audioclf_core.bundle import Bundle
from audioclf_core.errors import OutputError
from audioclf_core.params import SilenceParams
from audioclf_core.storage import check_local_file

from .processing import SegmentEvent


def iso(t: datetime) -> str:
    """UTC time stamp with milliseconds and a ``Z``."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_record(ev: SegmentEvent, *, recording: str, started_at: datetime, labels: tuple[str, ...]) -> dict:
    """The JSON object of one segment."""
    return {
        "recording": recording,
        "segment": ev.index,
        "start_s": round(ev.start_s, 6),
        "end_s": round(ev.end_s, 6),
        "start_time": iso(started_at + timedelta(seconds=ev.start_s)),
        "end_time": iso(started_at + timedelta(seconds=ev.end_s)),
        "label": ev.label,
        "confidence": round(ev.confidence, 6),
        "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, ev.probs)},
        "latency_ms": round(ev.latency_ms, 3),
    }


class JsonlSink:
    """Appends one JSON line per segment to a local file (or a named pipe).

    A write that fails (a full disk, a reader that went away) raises
    :class:`OutputError` once and is remembered in :attr:`error`; later writes are
    refused the same way, and :meth:`close` never raises, so the session can stop
    and still write its other outputs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_local_file(path, what="events file")
        self._new = not self.path.exists()
        self.lines = 0
        self.error: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write events to {self.path}: {exc.strerror or exc}") from None

    def write(self, record: dict) -> None:
        if self.error is not None:
            raise OutputError(self.error)
        # One write call per line, then flush: a reader never sees half a line
        # from us, and a kill loses nothing already emitted.
        try:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._f.flush()
        except OSError as exc:
            self.error = f"cannot write events to {self.path} after {self.lines} lines: {exc.strerror or exc}"
            raise OutputError(self.error) from None
        self.lines += 1

    def close(self, *, discard_if_unused: bool = False) -> None:
        """Close; with ``discard_if_unused``, remove the file if this sink created it and wrote nothing."""
        try:
            self._f.close()
        except OSError as exc:  # the last flush: the error a write already met, or a new one
            if self.error is None:
                self.error = f"cannot write events to {self.path}: {exc.strerror or exc}"
            return
        if discard_if_unused and self._new and not self.lines:
            self.path.unlink(missing_ok=True)


class ParquetSink:
    """The session's rows in the result tables of an output location.

    Parameters
    ----------
    out : str
        Output folder or URL (as ``audioclf classify --out``).
    bundle : Bundle
        The model (labels and the model columns).
    silence : SilenceParams
        The splitter's parameters (``params_sha256``).
    part : str
        Part name of this session's files.
    every_s : float
        Seconds between periodic writes.
    storage_options : mapping, optional
        fsspec options (S3 endpoint, credentials).
    """

    def __init__(self, out: str, *, bundle: Bundle, silence: SilenceParams, part: str, every_s: float,
                 storage_options: Mapping | None = None) -> None:
        from audioclf_core.pipeline import hash_params
        from audioclf_core.results import ResultStore

        self.bundle = bundle
        self.part = part
        self.every_s = float(every_s)
        self.params_sha256 = hash_params(silence, "mix", bundle.pooling)
        self.store = ResultStore(out, storage_options=storage_options)
        self.store.check_writable(bundle.labels)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audioclf-live-parquet")
        self._pending: Future | None = None
        self._last = time.monotonic()
        self._error: BaseException | None = None
        self.writes = 0

    def _outcome(self, *, recording: str, segments: list, heard_s: float, sample_rate: int, channels: int):
        from audioclf_core.pipeline import MIX, RecordingOutcome

        out = RecordingOutcome(recording, duration_s=heard_s, sample_rate=sample_rate, channels=channels, codec="live")
        out.segments = [(MIX, ev.index, ev.start_s, ev.end_s, ev.probs) for ev in segments]
        out.covered_s = sum(ev.end_s - ev.start_s for ev in segments)
        return out

    def _write(self, outcome) -> None:
        from audioclf_core.pipeline import to_tables

        segments, recordings = to_tables([outcome], self.bundle, channels="mix", params_sha256=self.params_sha256)
        # This part is the only one that holds this session: no other part to clean.
        self.store.write(segments, recordings, labels=self.bundle.labels, part=self.part, replace=False)
        self.writes += 1

    def _done(self, fut: Future) -> None:
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s and (self._pending is None or self._pending.done())

    def write_async(self, **session) -> None:
        """Write the session so far on the writer thread (skipped while a write is running)."""
        if self._pending is not None and not self._pending.done():
            return
        self._last = time.monotonic()
        self._pending = self._pool.submit(self._write, self._outcome(**session))
        self._pending.add_done_callback(self._done)

    def write_final(self, **session) -> None:
        """Wait for a running write, then write the whole session and stop the writer."""
        if self._pending is not None:
            self._pending.exception()  # wait; its error (if any) is in self._error
        self._pool.shutdown(wait=True)
        self._write(self._outcome(**session))
        self.store.update_csv(asked=False)  # CSV copies a batch run left there stay current

    @property
    def error(self) -> BaseException | None:
        """The first failure of a periodic write, if any."""
        return self._error


def percentile_ms(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class LiveView:
    """The console view: recent segments, totals per label, counters.

    The consumer calls :meth:`add`; ``rich.live.Live`` renders :meth:`__rich__`
    on its own thread, so both go through a lock.
    """

    def __init__(self, *, title: str, labels: tuple[str, ...], stats: Callable[[], dict], recent: int = 12) -> None:
        self.title = title
        self.labels = labels
        self._stats = stats
        self._recent: deque[tuple[str, float, float, str, float, float]] = deque(maxlen=recent)
        self._count = dict.fromkeys(labels, 0)
        self._seconds = dict.fromkeys(labels, 0.0)
        self._lock = threading.Lock()

    def add(self, ev: SegmentEvent, *, wall: str) -> None:
        with self._lock:
            self._recent.append((wall, ev.start_s, ev.end_s, ev.label, ev.confidence, ev.latency_ms))
            self._count[ev.label] += 1
            self._seconds[ev.label] += ev.end_s - ev.start_s

    def __rich__(self) -> Group:
        with self._lock:
            recent = list(self._recent)
            count, seconds = dict(self._count), dict(self._seconds)
        s = self._stats()
        recent_t = Table(title="recent segments", title_justify="left", expand=False)
        for col, justify in (("time", "left"), ("stream s", "right"), ("length s", "right"), ("label", "left"),
                             ("confidence", "right"), ("latency ms", "right")):
            recent_t.add_column(col, justify=justify)
        for wall, a, b, label, conf, lat in recent:
            recent_t.add_row(wall[11:23], f"{a:.2f}", f"{b - a:.2f}", escape(label), f"{conf:.2f}", f"{lat:.1f}")
        totals = Table(title="totals", title_justify="left", expand=False)
        for col in ("label", "segments", "seconds", "share"):
            totals.add_column(col, justify="left" if col == "label" else "right")
        total_s = sum(seconds.values()) or 1.0
        for lab in self.labels:
            totals.add_row(escape(lab), str(count[lab]), f"{seconds[lab]:.1f}", f"{100 * seconds[lab] / total_s:.0f}%")
        warn = "bold red" if s["overflows"] or s["dropped_blocks"] else "green"
        lat = s["latency_p95_ms"]
        status = Text.assemble(
            (f"{self.title}   heard {s['heard_s']:.1f} s   segments {s['segments']}   ", ""),
            (f"overflows {s['overflows']}   dropped blocks {s['dropped_blocks']}", warn),
            (f"   queue {s['queue']}/{s['queue_max']}   latency p95 {'-' if lat is None else f'{lat:.1f} ms'}", ""),
        )
        return Group(status, recent_t, totals)
