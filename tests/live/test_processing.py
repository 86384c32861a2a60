"""The consumer's work in-process: speculation never changes the answer."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from live.inference import load_window_model
from live.processing import LiveProcessor

from .helpers import SAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("block", [160, 4096])
def test_windows_classified_ahead_give_the_same_answer(bundle, litert_cache, block):
    model = load_window_model(bundle, engine="litert", cache_dir=litert_cache)
    y, sr = sf.read(SAMPLES / "call-001.wav", dtype="float32", always_2d=True)
    # Long sounds too: max_segment_s=3 cuts the 9 s of hold music into pieces.
    params = bundle.manifest.silence.replace(max_segment_s=3.0)
    results = {}
    for speculate in (True, False):
        proc = LiveProcessor(bundle, model=model, input_rate=sr, silence=params, speculate=speculate)
        events = []
        for i in range(0, len(y), block):
            events += proc.push(y[i : i + block], arrived=0.0)
            proc.work_ahead()
        events += proc.flush(arrived=0.0)
        results[speculate] = (events, proc)
    ahead, plain = results[True][0], results[False][0]
    assert [(e.start, e.end) for e in ahead] == [(e.start, e.end) for e in plain]
    np.testing.assert_allclose(np.array([e.probs for e in ahead]), np.array([e.probs for e in plain]), atol=1e-6)
    spec = results[True][1]
    # Most windows were classified before their segment closed, including the pieces after a cut.
    assert spec.windows_ahead > 2 * spec.windows_at_close
    assert results[False][1].windows_ahead == 0
    assert any(b.start == a.end for a, b in zip(ahead, ahead[1:])), "no max_segment_s cut in the test audio"
