"""The sidecar runs the core's engines one window at a time (engines themselves: tests/core/test_engines.py)."""

from __future__ import annotations

import numpy as np
import pytest

from audioclf_core.engines import LiteRTEngine
from live.inference import load_window_model


@pytest.mark.slow
def test_the_sidecar_gets_single_window_litert_that_matches_keras(bundle):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, *bundle.input_shape)).astype(np.float32)
    lite = load_window_model(bundle, engine="auto")
    assert isinstance(lite, LiteRTEngine) and lite.batch_size == 1
    keras = load_window_model(bundle, engine="keras")
    assert keras.name == "keras"
    np.testing.assert_allclose(lite(x), keras(x), atol=1e-4)


def test_an_unknown_engine_is_refused(bundle):
    from audioclf_core.errors import ParameterError

    with pytest.raises(ParameterError, match="engine='onnx'"):
        load_window_model(bundle, engine="onnx")
