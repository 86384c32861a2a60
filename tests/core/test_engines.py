"""Inference engines: LiteRT agrees with Keras, exports are checked and cached, no TensorFlow when not needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from audioclf_core.bundle import LITERT_FILE, MANIFEST, load_bundle
from audioclf_core.engines import (
    KerasEngine,
    LiteRTEngine,
    attach_litert,
    litert_cache_path,
    load_engine,
)
from audioclf_core.errors import BundleError, ParameterError

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("placeholder")


@pytest.fixture(scope="module")
def real_windows(bundle):
    """Model windows from two sample recordings (speech, music, noise, silence), plus 200 of seeded noise."""
    out = []
    for name in ("call-001.wav", "call-003.flac"):
        y, sr = sf.read(SAMPLES / name, dtype="float32")
        if y.ndim > 1:
            y = y.mean(axis=1)
        y = soxr.resample(y, sr, bundle.sample_rate).astype(np.float32)
        out.append(bundle.features.windows(y, window=bundle.window_samples, hop=bundle.hop_samples))
    rng = np.random.default_rng(7)
    out.append(rng.standard_normal((200, *bundle.input_shape)).astype(np.float32))
    return np.concatenate(out)


@pytest.fixture
def bare_copy(tmp_path, bundle):
    """A copy of the placeholder without its own flatbuffer (as a user's older bundle would be)."""
    dst = tmp_path / "bare"
    shutil.copytree(bundle.path, dst)
    (dst / LITERT_FILE).unlink()
    data = json.loads((dst / MANIFEST).read_text())
    del data["litert_sha256"]
    (dst / MANIFEST).write_text(json.dumps(data))
    return dst


def test_shipped_bundles_carry_a_checked_flatbuffer(bundle):
    assert bundle.litert_path is not None and bundle.litert_path.is_file()
    assert bundle.manifest.litert_sha256 and len(bundle.manifest.litert_sha256) == 64


def test_litert_matches_keras_for_full_batches_padded_tails_and_single_windows(bundle, real_windows):
    assert len(real_windows) > 300
    want = bundle.model.predict(real_windows, verbose=0, batch_size=256)  # the model as Keras runs it
    for batch_size in (1, 64, 256):
        got = LiteRTEngine(bundle.litert_path, input_shape=bundle.input_shape, n_labels=3, batch_size=batch_size)(real_windows)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4, batch_size
    # a tail that is not a power of two is padded, and the padding does not leak into the rows
    lite = LiteRTEngine(bundle.litert_path, input_shape=bundle.input_shape, n_labels=3, batch_size=256)
    for n in (1, 3, 37, 255, 257, 300):
        np.testing.assert_allclose(lite(real_windows[:n]), want[:n], atol=1e-4)
    assert np.abs(KerasEngine(bundle)(real_windows) - want).max() <= 1e-5


def test_each_thread_gets_its_own_interpreter(bundle, real_windows):
    lite = LiteRTEngine(bundle.litert_path, input_shape=bundle.input_shape, n_labels=3, batch_size=16)
    want = lite(real_windows)
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        for _ in range(5):
            results[k] = lite(real_windows)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        np.testing.assert_array_equal(got, want)
    # equal answers alone would not show it: a shared interpreter gives them too, until two threads collide
    seen = {}
    t = threading.Thread(target=lambda: seen.setdefault("other", lite._interpreter(16)[0]))
    t.start()
    t.join()
    assert seen["other"] is not lite._interpreter(16)[0]


def test_a_flatbuffer_that_does_not_fit_the_bundle_is_refused(bundle):
    with pytest.raises(BundleError, match="input shape"):
        LiteRTEngine(bundle.litert_path, input_shape=(97, 40), n_labels=3)
    with pytest.raises(BundleError, match="output shape"):
        LiteRTEngine(bundle.litert_path, input_shape=bundle.input_shape, n_labels=4)


def test_a_damaged_or_missing_flatbuffer_is_refused_on_load(tmp_path, bundle):
    dst = tmp_path / "b"
    shutil.copytree(bundle.path, dst)
    with open(dst / LITERT_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=f"{LITERT_FILE} does not match its manifest"):
        load_bundle(dst)
    (dst / LITERT_FILE).unlink()
    with pytest.raises(BundleError, match=f"manifest lists {LITERT_FILE} but the bundle has none"):
        load_bundle(dst)


@pytest.mark.slow
def test_bundles_without_a_flatbuffer_are_exported_once_cached_and_rebuilt_when_damaged(bare_copy, tmp_path, real_windows):
    bare = load_bundle(bare_copy)
    assert bare.litert_path is None
    path = litert_cache_path(bare, tmp_path / "cache")
    assert path.name == f"{bare.sha256}.tflite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a flatbuffer")
    model = load_engine(bare, engine="litert", cache_dir=tmp_path / "cache")
    assert model.name == "litert" and path.stat().st_size > 1000
    mtime = path.stat().st_mtime_ns
    again = load_engine(bare, engine="auto", cache_dir=tmp_path / "cache")
    assert again.name == "litert" and path.stat().st_mtime_ns == mtime  # used, not exported again
    np.testing.assert_array_equal(model(real_windows[:4]), again(real_windows[:4]))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


@pytest.mark.slow
def test_attach_litert_adds_a_flatbuffer_without_touching_the_weights(bare_copy, real_windows):
    before = load_bundle(bare_copy)
    after = attach_litert(bare_copy)
    assert after.sha256 == before.sha256 and after.version == before.version
    assert after.litert_path == bare_copy / LITERT_FILE
    mode = after.litert_path.stat().st_mode & 0o777
    assert mode == (bare_copy / "model.keras").stat().st_mode & 0o777, oct(mode)  # readable as the weights are
    assert attach_litert(bare_copy).manifest == after.manifest  # idempotent
    got = load_engine(after, engine="litert")(real_windows)
    np.testing.assert_allclose(got, KerasEngine(after)(real_windows), atol=1e-4)


def test_unknown_engines_are_refused(bundle):
    from audioclf_core.pipeline import Classifier

    with pytest.raises(ParameterError, match="engine='onnx'"):
        load_engine(bundle, engine="onnx")
    with pytest.raises(ParameterError, match="engine='onnx'"):
        Classifier(bundle, engine="onnx")
    with pytest.raises(ParameterError, match="power of two"):
        LiteRTEngine(bundle.litert_path, input_shape=bundle.input_shape, n_labels=3, batch_size=100)


def test_classifying_with_litert_never_imports_tensorflow_and_matches_keras(tmp_path):
    """In a fresh process: the LiteRT engine leaves TensorFlow unimported, and both engines agree."""
    code = f"""
import json, sys
from audioclf_core.bundle import load_bundle
from audioclf_core.pipeline import Classifier
b = load_bundle("placeholder")
out = {{}}
for engine in ("litert", "keras"):
    o = Classifier(b, engine=engine).classify_one({str(SAMPLES / "call-001.wav")!r})
    probs = [list(map(float, seg[-1])) for seg in o.segments]
    out[engine] = {{"tf_loaded": "tensorflow" in sys.modules, "labels": [max(range(3), key=p.__getitem__) for p in probs],
                   "probs": probs}}
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["litert"]["tf_loaded"] is False
    assert out["keras"]["tf_loaded"] is True
    assert out["litert"]["labels"] == out["keras"]["labels"] and len(out["litert"]["labels"]) > 0
    np.testing.assert_allclose(out["litert"]["probs"], out["keras"]["probs"], atol=1e-4)
    assert "XNNPACK" not in r.stderr  # LiteRT's delegate banner is kept off the terminal


def test_the_fd2_redirect_hides_c_output_keeps_python_stderr_and_survives_overlapping_threads():
    """Threads enter and leave the redirect out of order; afterwards fd 2 is the real stderr again."""
    code = r"""
import os, sys, threading
from audioclf_core.model import quiet_native_stderr
a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
def a():
    with quiet_native_stderr(force=True):
        a_in.set(); b_in.wait(); os.write(2, b"hidden-a\n")
    a_out.set()
def b():
    a_in.wait()
    with quiet_native_stderr(force=True):
        b_in.set(); a_out.wait()
        os.write(2, b"hidden-b\n")
        print("python-visible", file=sys.stderr)
ts = [threading.Thread(target=f) for f in (a, b)]
[t.start() for t in ts]; [t.join() for t in ts]
with quiet_native_stderr(force=True):
    with quiet_native_stderr(force=True):
        os.write(2, b"hidden-nested\n")
    os.write(2, b"hidden-outer\n")
os.write(2, b"fd2-restored\n")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "hidden" not in r.stderr
    assert "python-visible" in r.stderr and "fd2-restored" in r.stderr



def test_loggers_made_inside_the_redirect_still_write_after_it():
    """TensorFlow's logger gets its handler while TensorFlow imports, inside the redirect: its
    warnings after the block must show, not end in "Logging error" tracebacks on a closed stream."""
    code = r"""
import logging, sys
from audioclf_core.model import import_keras, quiet_native_stderr
with quiet_native_stderr(force=True):
    logging.getLogger("made-inside").addHandler(logging.StreamHandler(sys.stderr))
logging.getLogger("made-inside").warning("plain-after")
import_keras()
import tensorflow as tf
tf.get_logger().warning("tf-after")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Logging error" not in r.stderr and "closed file" not in r.stderr, r.stderr
    assert "plain-after" in r.stderr and "tf-after" in r.stderr


def test_scoring_many_models_in_one_process_warns_of_no_retracing():
    """``models join`` scores each member and then their mean: every model gets its own traced
    function, which TensorFlow would call retracing from the fifth on; other TensorFlow warnings
    still show, and each Predictor still answers for its own model."""
    code = r"""
import numpy as np
from audioclf_core.model import Predictor, import_keras
keras = import_keras()
import tensorflow as tf
x = np.ones((3, 4, 5), np.float32)
for k in range(7):
    m = keras.Sequential([keras.Input((4, 5)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    m.layers[-1].set_weights([np.zeros((20, 2), np.float32), np.array([0.0, float(k)], np.float32)])
    p = Predictor(m)(x)
    want = np.exp([0.0, k]) / np.exp([0.0, k]).sum()
    assert np.allclose(p, want, atol=1e-6), (k, p[0], want)
tf.get_logger().warning("other-tf-warning")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "retracing" not in r.stderr, r.stderr
    assert "other-tf-warning" in r.stderr


def _on_jax(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["speech-music-noise", "digits"])
def test_bundles_answer_the_same_on_the_jax_backend(tmp_path, name):
    """A bundle is backend-neutral (digits' parent 1.2.1 was trained on jax, its fine-tunes on
    TensorFlow): in a fresh process on Keras's jax backend it gives TensorFlow's probabilities, and
    TensorFlow is never imported there."""
    from audioclf_core.model import Predictor

    b = load_bundle(name)
    x = np.random.default_rng(3).standard_normal((37, *b.input_shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = _on_jax(f"""
import sys, numpy as np, keras
from audioclf_core.bundle import load_bundle
from audioclf_core.model import Predictor
np.save("p.npy", Predictor(load_bundle({name!r}).model, batch_size=16)(np.load("x.npy")))
print(keras.backend.backend(), "tensorflow" in sys.modules)
""", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["jax", "False"]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), Predictor(b.model)(x), atol=1e-5)


@pytest.mark.slow
def test_a_bundle_trained_on_jax_loads_and_answers_the_same_on_tensorflow(tmp_path):
    """Train a tiny bundle on jax (as on a GPU machine without TensorFlow); here, on TensorFlow,
    it loads, records its backend, and predicts what it predicted there."""
    data = REPO / "tests" / "data"
    r = _on_jax(f"""
import numpy as np, pandas as pd, soundfile as sf
from dataclasses import replace
from audioclf_core.training import PRESETS, train
labels = pd.read_csv({str(data / "labels.csv")!r})
rows = [{{"path": {str(data)!r} + "/" + f, "label": lab, "group": f.split("_")[1], "synthetic": 0}}
        for f, lab in zip(labels["file"], labels["label"])]
preset = replace(PRESETS["smn"], labels=(), noise_label=None)  # the clips' own labels: speech, music
res = train(pd.DataFrame(rows), out="bundle", arch="resnet", preset=preset, arch_kwargs={{"width": 4}}, epochs=1,
            batch_size=16, max_windows_per_epoch=32, test_fraction=0.0, val_fraction=0.0, seed=1, verbose=0, workers=1)
y, _ = sf.read({str(data / "speech_en_transfer.wav")!r}, dtype="float32")
x = res.bundle.features.windows(y, window=res.bundle.window_samples, hop=res.bundle.hop_samples)
np.save("x.npy", x)
np.save("p.npy", res.bundle.model.predict_on_batch(x))
""", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    from audioclf_core.model import Predictor

    b = load_bundle(tmp_path / "bundle")
    assert b.manifest.provenance["training"]["keras_backend"] == "jax"
    assert b.litert_path is None  # no converter without TensorFlow: the engine exports one when first asked
    x = np.load(tmp_path / "x.npy")
    want = np.load(tmp_path / "p.npy")
    assert want.shape == (len(x), 2) and np.allclose(want.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(Predictor(b.model)(x), want, atol=1e-5)
    np.testing.assert_allclose(load_engine(b, engine="litert", cache_dir=tmp_path / "cache")(x), want, atol=1e-4)


def test_an_export_that_disagrees_with_keras_is_refused_and_auto_falls_back(bare_copy, tmp_path, monkeypatch):
    """The converter is trusted only as far as its answers match Keras on probe windows."""
    from audioclf_core import engines

    bare = load_bundle(bare_copy)
    real_call = LiteRTEngine.__call__
    monkeypatch.setattr(LiteRTEngine, "__call__", lambda self, x: real_call(self, x) + 1e-3)  # a subtly wrong export
    target = tmp_path / "cache" / "x.tflite"
    with pytest.raises(BundleError, match="differs from the Keras model"):
        engines.export_litert(bare, target)
    assert list(target.parent.iterdir()) == []  # neither the file nor its temporary
    with pytest.raises(BundleError, match="differs from the Keras model"):
        load_engine(bare, engine="litert", cache_dir=tmp_path / "cache")
    said = []
    fallback = load_engine(bare, engine="auto", cache_dir=tmp_path / "cache", warn=said.append)
    assert fallback.name == "keras" and len(said) == 1 and "using the Keras engine" in said[0]
