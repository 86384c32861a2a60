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
