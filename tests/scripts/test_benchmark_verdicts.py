"""The benchmarks' verdicts judge what their targets say (the measurements themselves are not tested)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from report import MEMORY_LIMIT_MIB, memory_verdict  # noqa: E402


@pytest.mark.parametrize(
    ("peak", "short", "long_", "met", "words"),
    [
        (300.0, 250.0, 300.0, True, ("within", ": flat")),
        (300.0, 100.0, 300.0, False, ("within", "NOT flat")),  # under 1 GB but growing with the audio
        (MEMORY_LIMIT_MIB + 1, 900.0, 960.0, False, ("OVER", ": flat")),  # flat but over 1 GB
    ],
)
def test_the_memory_verdict_needs_both_halves_of_the_target(peak, short, long_, met, words):
    text = memory_verdict(peak_mib=peak, short_mib=short, long_mib=long_, short_h=1.0, long_h=10.0)
    assert (": met (" in text) is met and ("NOT met" in text) is (not met), text
    for word in words:
        assert word in text, text
    assert f"{long_ / short:.2f}" in text and "10 h / 1 h" in text
