"""The LiteRT export (and the Keras traced call) give the Keras model's probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from live.inference import KerasWindowModel, LiteRTWindowModel, litert_path, load_window_model

from .helpers import SAMPLES


@pytest.fixture(scope="module")
def real_windows(bundle):
    """Model windows from every sample recording (speech, music, noise, silence), plus seeded noise."""
    out = []
    for name in ("call-001.wav", "call-003.flac"):
        y, sr = sf.read(SAMPLES / name, dtype="float32")
        y = soxr.resample(y, sr, bundle.sample_rate).astype(np.float32)
        out.append(bundle.features.windows(y, window=bundle.window_samples, hop=bundle.hop_samples))
    rng = np.random.default_rng(7)
    out.append(rng.standard_normal((8, *bundle.input_shape)).astype(np.float32))
    return np.concatenate(out)


@pytest.mark.slow
def test_litert_matches_keras_within_1e_4(bundle, litert_cache, real_windows):
    keras_probs = bundle.model.predict(real_windows, verbose=0, batch_size=256)  # the model as Keras runs it
    lite = load_window_model(bundle, engine="litert", cache_dir=litert_cache)
    assert isinstance(lite, LiteRTWindowModel)
    got = lite(real_windows)
    assert got.shape == keras_probs.shape == (len(real_windows), len(bundle.labels))
    assert np.abs(got - keras_probs).max() <= 1e-4
    direct = KerasWindowModel(bundle)(real_windows)
    assert np.abs(direct - keras_probs).max() <= 1e-5


@pytest.mark.slow
def test_the_export_is_cached_by_the_weights_hash_and_rebuilt_when_damaged(bundle, tmp_path, real_windows):
    path = litert_path(bundle, tmp_path)
    assert path.parent == tmp_path / "litert" and path.name == f"{bundle.sha256}.tflite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a flatbuffer")
    model = load_window_model(bundle, engine="litert", cache_dir=tmp_path)
    assert path.stat().st_size > 1000
    mtime = path.stat().st_mtime_ns
    again = load_window_model(bundle, engine="auto", cache_dir=tmp_path)
    assert again.name == "litert" and path.stat().st_mtime_ns == mtime  # used, not exported again
    np.testing.assert_array_equal(model(real_windows[:4]), again(real_windows[:4]))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_an_unknown_engine_is_refused(bundle):
    from audioclf_core.errors import ParameterError

    with pytest.raises(ParameterError, match="engine='onnx'"):
        load_window_model(bundle, engine="onnx")
