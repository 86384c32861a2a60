"""Loading Keras models and running them on batches of windows.

TensorFlow is imported here, lazily, the first time a model is loaded.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from .errors import BundleError

# Quiet TensorFlow's C++ start-up banner unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def quiet_native_stderr(*, force: bool = False):
    """Silence fd 2 while TensorFlow's or LiteRT's C++ side starts.

    TensorFlow logs its oneDNN and CPU-feature banners before its logger reads
    ``TF_CPP_MIN_LOG_LEVEL``, and LiteRT announces its XNNPACK delegate, so
    only an fd-level redirect hides them. Python exceptions are unaffected;
    ``AUDIOCLF_TF_VERBOSE=1`` shows everything. Without ``force`` nothing is
    redirected once TensorFlow is imported (its banners are behind it).
    """
    if os.environ.get("AUDIOCLF_TF_VERBOSE") or (not force and "tensorflow" in sys.modules):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured, embedded)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def import_keras():
    """Import Keras (and TensorFlow) quietly and register audioclf's layers."""
    with quiet_native_stderr():
        import keras
        import tensorflow  # noqa: F401

        from . import layers as _layers  # noqa: F401  (registers custom layers)
    return keras


def load_keras_model(path: Path, *, input_shape: tuple[int, int], n_labels: int):
    """Load a ``.keras`` file in safe mode and check it fits the manifest.

    Parameters
    ----------
    input_shape : tuple of int
        ``(frames, features)`` the manifest's features produce per window.
    n_labels : int
        Number of labels in the manifest.
    """
    keras = import_keras()
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
        raise BundleError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    got_in = tuple(model.input_shape[1:])
    got_out = model.output_shape[-1]
    if got_in != tuple(input_shape):
        raise BundleError(
            f"{path}: model expects windows of shape {got_in}, but the manifest's features give {tuple(input_shape)}"
        )
    if got_out != n_labels:
        raise BundleError(f"{path}: model has {got_out} outputs, but the manifest lists {n_labels} labels")
    return model


class Predictor:
    """Runs a model on many windows in fixed-size batches.

    One traced TensorFlow function per input shape serves every call, so a
    call costs the model's arithmetic, not ``predict()``'s ~140 ms set-up.

    Parameters
    ----------
    model : keras.Model
        A loaded model.
    batch_size : int
        Windows per forward pass. 256 is as fast as 512 on 2 cores and keeps
        TensorFlow's activations 160 MiB smaller (peak RSS 851 vs 1,012 MiB
        on an hour of audio with the placeholder CNN).
    """

    def __init__(self, model, *, batch_size: int = 256) -> None:
        import_keras()
        import tensorflow as tf

        self.model = model
        self.batch_size = int(batch_size)
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of each window.

        Parameters
        ----------
        x : np.ndarray
            float32, shape ``(n, frames, features)``.

        Returns
        -------
        np.ndarray
            float32, shape ``(n, n_labels)``.
        """
        n_out = self.model.output_shape[-1]
        if len(x) == 0:
            return np.zeros((0, n_out), dtype=np.float32)
        out = [self._fn(x[i : i + self.batch_size]).numpy() for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)
