"""Blocks lost because the consumer fell behind: stream time stays true and the loss is counted."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import live.session
from live.session import run_live
from live.sources import ReplaySource

RATE = 8000
BLOCK = 1600  # 0.2 s
DROP = 10  # blocks lost after the queue fills
TONES = [(0.8, 1.2), (5.0, 5.6)]  # seconds: one before the lost stretch (1.6-3.6 s), one after it
LENGTH_S = 7.0


class _FallsBehind(ReplaySource):
    """A replay whose consumer is late at the start: the queue fills, the next DROP blocks are lost.

    The blocks go through :meth:`BlockQueue.offer`, as a device callback's do, before the
    session's consumer runs, so which blocks are lost is known: the ones after the first
    ``maxsize``. The rest follow once the consumer has emptied the queue.
    """

    def start(self) -> None:
        blocks = [np.ascontiguousarray(x, dtype=np.float32) for x in self._reader.blocks(self.blocksize)]
        head = self.blocks.maxsize + DROP
        for x in blocks[:head]:
            self.blocks.offer(x, arrived=time.perf_counter())

        def rest() -> None:
            try:
                while self.blocks.qsize() and not self._stop.is_set():
                    time.sleep(0.005)
                for x in blocks[head:]:
                    if not self.blocks.put(x, arrived=time.perf_counter(), stop=self._stop):
                        return
            finally:
                self._ended.set()

        threading.Thread(target=rest, daemon=True).start()


@pytest.fixture
def tones(tmp_path):
    t = np.arange(int(LENGTH_S * RATE)) / RATE
    y = np.zeros_like(t, dtype=np.float32)
    for a, b in TONES:
        on = (t >= a) & (t < b)
        y[on] = 0.5 * np.sin(2 * np.pi * 440 * t[on])
    path = tmp_path / "tones.wav"
    sf.write(path, y, RATE, subtype="PCM_16")
    return path


def test_lost_blocks_become_silence_so_later_sounds_keep_their_stream_time(tones, tmp_path, monkeypatch, litert_cache):
    monkeypatch.setattr(live.session, "ReplaySource", _FallsBehind)
    events = tmp_path / "events.jsonl"
    summary = run_live(replay=str(tones), blocksize=BLOCK, queue_s=0.01, jsonl=events, cache_dir=litert_cache)
    assert summary.stop_reason == "end of recording" and summary.error is None

    queue_blocks = 8  # the smallest queue run_live makes
    assert summary.queue_size == queue_blocks
    lost_s = (queue_blocks * BLOCK / RATE, (queue_blocks + DROP) * BLOCK / RATE)
    assert lost_s[0] > TONES[0][1] and lost_s[1] < TONES[1][0]  # the fixture's loss falls between the tones

    # the loss is counted as dropped blocks, not as device overflows
    assert summary.dropped_blocks == DROP and summary.dropped_frames == DROP * BLOCK
    assert summary.overflows == 0
    assert summary.blocks == LENGTH_S * RATE / BLOCK  # every block delivered, lost ones included

    # the lost stretch is heard as silence: stream time runs on, and the tone after it keeps its time
    assert summary.heard_s == pytest.approx(LENGTH_S)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    spans = [(ev["start_s"], ev["end_s"]) for ev in lines]
    assert len(spans) == len(TONES), spans
    pad = 0.15  # the segmenter's padding and frame rounding
    for (a, b), (start, end) in zip(TONES, spans):
        assert a - pad <= start <= a + 0.02 and b - 0.02 <= end <= b + pad


class _SecondCtrlC(ReplaySource):
    """A replay that feeds blocks one at a time until the first sound has been classified, then
    queues the rest at once and sends Ctrl-C twice, as a user who will not wait for the queue."""

    stop_of_session = None  # the session's _Stop, caught by _KeepStop

    def start(self) -> None:
        blocks = [np.ascontiguousarray(x, dtype=np.float32) for x in self._reader.blocks(self.blocksize)]
        events = self.events_path

        def feed() -> None:
            try:
                i = 0
                while i < len(blocks) and not (events.exists() and events.read_text().count("\n")):
                    self.blocks.put(blocks[i], arrived=time.perf_counter(), stop=self._stop)
                    i += 1
                    while self.blocks.qsize():
                        time.sleep(0.002)
                    time.sleep(0.01)
                for x in blocks[i:]:
                    self.blocks.offer(x, arrived=time.perf_counter())
                stop = _SecondCtrlC.stop_of_session
                stop.set("SIGINT")
                stop.abandon.set()
            finally:
                self._ended.set()

        threading.Thread(target=feed, daemon=True).start()


def test_a_second_ctrl_c_gives_up_the_queue_and_still_writes_what_was_classified(tones, tmp_path, monkeypatch,
                                                                                 litert_cache):
    class _KeepStop(live.session._Stop):
        def __init__(self, event):
            super().__init__(event)
            _SecondCtrlC.stop_of_session = self

    monkeypatch.setattr(live.session, "ReplaySource", _SecondCtrlC)
    monkeypatch.setattr(live.session, "_Stop", _KeepStop)
    events, out, said = tmp_path / "events.jsonl", tmp_path / "out", []
    _SecondCtrlC.events_path = events
    summary = run_live(replay=str(tones), blocksize=BLOCK, jsonl=events, out=str(out), cache_dir=litert_cache,
                       log=said.append)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(lines) == 1 and TONES[0][0] - 0.15 <= lines[0]["start_s"] <= TONES[0][0]  # the first tone only
    assert summary.stop_reason == "SIGINT" and summary.error is None and summary.segments == 1
    assert summary.heard_s < TONES[1][0]  # the second tone was queued, never classified
    assert any(line.startswith("second Ctrl-C: the audio after ") for line in said), said
    import pandas as pd

    seg = pd.read_parquet(out / "segments")  # what was classified is written all the same
    assert seg[["start_s", "end_s"]].to_numpy().tolist() == [[lines[0]["start_s"], lines[0]["end_s"]]]


class _OutputGoesAway(ReplaySource):
    """A replay during which the output folder becomes a file (a full or unmounted disk)."""

    out_path = None

    def start(self) -> None:
        import shutil

        shutil.rmtree(self.out_path)
        self.out_path.write_text("not a folder any more")
        super().start()


def test_an_output_that_fails_is_said_at_once_and_at_the_end_with_the_summary(tones, tmp_path, monkeypatch,
                                                                               litert_cache):
    monkeypatch.setattr(live.session, "ReplaySource", _OutputGoesAway)
    out, events, summary_json, said = tmp_path / "out", tmp_path / "events.jsonl", tmp_path / "s.json", []
    out.mkdir()
    _OutputGoesAway.out_path = out
    summary = run_live(replay=str(tones), blocksize=BLOCK, realtime=True, flush_s=0.5, jsonl=events, out=str(out),
                       summary_json=summary_json, cache_dir=litert_cache, log=said.append)
    # no exception: the session ended, its events are whole, and the failure is its error
    assert summary.stop_reason == "end of recording" and summary.segments == len(TONES)
    assert len(events.read_text().splitlines()) == len(TONES)
    assert summary.error.startswith(f"cannot write results to {out}")
    assert json.loads(summary_json.read_text())["error"] == summary.error
    warned = [line for line in said if line.startswith(f"warning: writing to {out} failed")]
    assert len(warned) == 1 and "trying again every 0.5 s and at the end" in warned[0], said
