"""SIGINT and SIGTERM stop cleanly: the sound in progress is classified and everything heard is written."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pandas as pd
import pytest

from .helpers import SAMPLES, LiveProcess, read_jsonl

EVENT_KEYS = {"recording", "segment", "start_s", "end_s", "start_time", "end_time", "label", "confidence",
              "probabilities", "latency_ms"}
STOP_AT_S = 7.0  # call-001: segments end at 1.6 and 4.1 s; the third runs from 5.29 to 13.02 s


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_segment_flushes_everything_heard(sig, env, tmp_path, batch, bundle):
    events, out, summary = tmp_path / "x.jsonl", tmp_path / "y", tmp_path / "s.json"
    live = LiveProcess(["run", "--replay", str(SAMPLES / "call-001.wav"), "--realtime", "--jsonl", str(events),
                        "--out", str(out), "--flush-s", "2", "--summary-json", str(summary), "-q"], env=env)
    live.wait_for("listening")  # printed once the first block is in: stream time ~0
    time.sleep(STOP_AT_S)
    # The periodic writes already hold the segments that have ended, in one part that each write replaces.
    before = pd.read_parquet(out / "segments")
    assert before.segment.tolist()[:2] == [0, 1] and len(list((out / "segments").glob("part-*.parquet"))) == 1
    # and a reader tailing the JSON lines already has those two, whole (each line is flushed as it is written)
    assert [ev["segment"] for ev in read_jsonl(events)] == [0, 1]
    live.signal(sig)
    rc, stderr = live.finish(timeout=30)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert "overflows 0; dropped blocks 0" in stderr  # the counters are reported at exit

    lines = read_jsonl(events)
    assert all(set(ev) == EVENT_KEYS for ev in lines)
    want = [(s, e) for _, _, s, e, _ in batch["call-001.wav"].segments]
    assert len(lines) == 3, lines
    # The two segments that ended on their own are the batch path's...
    for ev, (s, e) in zip(lines[:2], want[:2]):
        assert abs(ev["start_s"] - s) <= 0.01 and abs(ev["end_s"] - e) <= 0.01
    # ...and the one in progress was cut where the stop came, not lost.
    cut = lines[2]
    assert abs(cut["start_s"] - want[2][0]) <= 0.01
    assert STOP_AT_S - 1.0 < cut["end_s"] < want[2][1]

    seg = pd.read_parquet(out / "segments").sort_values("segment")
    rec = pd.read_parquet(out / "recordings")
    assert seg.segment.tolist() == [0, 1, 2]
    np.testing.assert_allclose(seg[["start_s", "end_s"]].to_numpy(),
                               [(ev["start_s"], ev["end_s"]) for ev in lines], atol=1e-6)
    assert seg.label.tolist() == [ev["label"] for ev in lines]
    assert rec.n_segments.tolist() == [3] and rec.status.tolist() == ["ok"]
    assert cut["end_s"] <= rec.duration_s.iloc[0] < STOP_AT_S + 2.0

    s = json.loads(summary.read_text())
    assert s["stop_reason"] == sig.name and s["error"] is None and s["segments"] == 3


def test_ctrl_c_stops_then_gives_up_the_queue_then_gives_up_writing():
    """The handler's three steps, with real signals on this (the main) thread."""
    import os

    from live.session import _catch_signals, _Stop

    stop = _Stop(None)
    restore = _catch_signals(stop)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set() and stop.reason == "SIGINT" and not stop.abandon.is_set()
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pytest.fail("a second Ctrl-C must give up the queue, not the writes")
        assert stop.abandon.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
