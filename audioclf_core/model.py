"""Loading Keras models and running them on batches of windows.

TensorFlow is imported here, lazily, the first time a model is loaded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import BundleError

# Quiet TensorFlow's C++ start-up banner unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# One redirect of fd 2 for the whole process, however many threads ask for it: each
# ``quiet_native_stderr`` block takes a share, the first one in redirects, the last one out
# restores. Two threads saving and restoring fd 2 on their own would interleave and could
# leave it pointing at /dev/null for good.
_QUIET_LOCK = threading.Lock()
_quiet: dict = {"depth": 0, "saved_fd": -1, "stderr": None}


def _quiet_enter() -> bool:
    """Take a share of the redirect; False when there is no real fd 2 behind ``sys.stderr``."""
    with _QUIET_LOCK:
        if _quiet["depth"]:
            _quiet["depth"] += 1
            return True
        try:
            if sys.stderr.fileno() != 2:
                return False
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False  # no real stderr (captured, embedded): nothing to protect
        sys.stderr.flush()
        saved = os.dup(2)
        old = sys.stderr
        # Python's own writes (messages, tracebacks) go to a duplicate of the real stderr.
        sys.stderr = open(saved, "w", buffering=1, encoding=old.encoding or "utf-8", errors="backslashreplace",
                          closefd=False)
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        _quiet.update(depth=1, saved_fd=saved, stderr=old)
        return True


def _repoint_log_handlers(old, new) -> None:
    """Stream handlers made inside the redirect hold its temporary ``sys.stderr``: give them the real one.

    TensorFlow's logger, for one, is created while TensorFlow imports, with a handler on the
    ``sys.stderr`` of that moment; once the temporary stream is closed, its warnings (retracing,
    deprecations) would end in "Logging error" tracebacks instead of showing.
    """
    loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                        if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and h.stream is old:
                h.setStream(new)


def _quiet_leave() -> None:
    with _QUIET_LOCK:
        _quiet["depth"] -= 1
        if _quiet["depth"]:
            return
        temp, sys.stderr = sys.stderr, _quiet["stderr"]
        temp.flush()
        _repoint_log_handlers(temp, sys.stderr)
        temp.close()
        os.dup2(_quiet["saved_fd"], 2)
        os.close(_quiet["saved_fd"])
        _quiet.update(saved_fd=-1, stderr=None)


@contextlib.contextmanager
def quiet_native_stderr(*, force: bool = False, verbose_env: str = "AUDIOCLF_TF_VERBOSE") -> Iterator[None]:
    """Send what C libraries write to fd 2 to /dev/null, keep Python's stderr.

    TensorFlow logs its oneDNN and CPU-feature banners before its logger reads
    ``TF_CPP_MIN_LOG_LEVEL``, LiteRT announces its XNNPACK delegate, and
    PortAudio and ALSA print traces, all straight to fd 2: only an fd-level
    redirect hides them. Python's ``sys.stderr`` points at a duplicate of the
    real stderr meanwhile, so our own messages and tracebacks still show. Safe to
    nest and to use from several threads at once.

    Parameters
    ----------
    force : bool
        Redirect even when TensorFlow is already imported (without it, nothing is
        redirected then: TensorFlow's banners are behind it).
    verbose_env : str
        An environment variable that, when set, shows everything.
    """
    if os.environ.get(verbose_env) or (not force and "tensorflow" in sys.modules) or not _quiet_enter():
        yield
        return
    try:
        yield
    finally:
        _quiet_leave()


def import_keras():
    """Import Keras (and, on its default backend, TensorFlow) quietly and register audioclf's layers.

    Keras's backend comes from ``KERAS_BACKEND`` as usual: training also runs on ``jax`` or
    ``torch`` (a GPU machine without TensorFlow), and the ``.keras`` files it writes load
    on the TensorFlow backend that serving uses.
    """
    with quiet_native_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
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
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        raise BundleError(f"cannot load {path}: not a .keras file (that is a zip archive; this one is cut short, "
                          "damaged or another kind of file)")
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


class _OneFunctionPerModel(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning.

    Each :class:`Predictor` traces its own function, one per model and input signature, and
    Keras's ``fit`` one training step per model, so neither retraces; TensorFlow counts the
    functions of one source line together and, from the fifth model a process scores or trains
    (``models join`` over five members, then the mean; ``train --search``'s trials, then the
    final run), warns of retracing that is not happening.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_ONE_FUNCTION_PER_MODEL = _OneFunctionPerModel()


def one_function_per_model() -> None:
    """Install :class:`_OneFunctionPerModel` on TensorFlow's logger (once, however many calls)."""
    logging.getLogger("tensorflow").addFilter(_ONE_FUNCTION_PER_MODEL)


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
        keras = import_keras()
        self.model = model
        self.batch_size = int(batch_size)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            one_function_per_model()
            spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
            fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
            self._fn = lambda x: fn(x).numpy()
        else:  # another backend (training on jax or torch): eager calls
            self._fn = lambda x: keras.ops.convert_to_numpy(model(x, training=False))

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
        out = [self._fn(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)
