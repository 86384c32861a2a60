"""The console view shows recent segments, totals per label and the loss counters."""

from __future__ import annotations

import re

import numpy as np
import pytest
from rich.console import Console

from live.outputs import LiveView
from live.processing import SegmentEvent


def test_the_view_shows_segments_totals_and_counters():
    stats = {"heard_s": 12.5, "segments": 2, "overflows": 3, "dropped_blocks": 1, "queue": 0, "queue_max": 500,
             "latency_p95_ms": 9.9}
    view = LiveView(title="pulse", labels=("speech", "music", "noise"), stats=lambda: stats)
    probs = np.array([0.7, 0.2, 0.1], dtype=np.float32)
    first = SegmentEvent(0, 1600, 40000, 16000, probs, "speech", 1.0, 1.0042)
    assert first.latency_ms == pytest.approx(4.2) and (first.start_s, first.end_s) == (0.1, 2.5)
    view.add(first, wall="2026-11-22T10:00:00.100Z")
    view.add(SegmentEvent(1, 48000, 64000, 16000, probs[[1, 0, 2]], "music", 2.0, 2.001), wall="2026-11-22T10:00:03.000Z")
    console = Console(record=True, width=120)
    console.print(view)
    text = console.export_text()
    assert "overflows 3" in text and "dropped blocks 1" in text
    assert "10:00:00.100" in text and "2.40" in text and "0.70" in text and "4.2" in text  # a row: time, length, confidence, latency
    assert re.search(r"music\W+1\W+1\.0\W+29%", text) and re.search(r"noise\W+0\W+0\.0\W+0%", text), text
