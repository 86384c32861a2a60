"""Single-window inference without ``predict()``'s per-call set-up.

The live path classifies a window at a time (each as soon as its audio is
in), so what matters is the cost of one small call, not throughput. Two
engines give the Keras model's probabilities:

``litert``
    The bundle's model exported once to LiteRT (``model.export(format="litert")``)
    and run by ``ai_edge_litert``'s interpreter on one thread. The export is
    checked against Keras (probabilities within 1e-4) before it is cached under
    ``<cache>/litert/<bundle sha256>.tflite``: the bundle's own folder may be
    read-only, and the weights' hash names exactly what was exported. With the
    file cached, TensorFlow is never imported, so the sidecar starts fast.
``keras``
    The core's :class:`~audioclf_core.model.Predictor`: one traced TensorFlow
    function per input shape, a direct model call without ``predict()``.

``benchmarks/bench_live.py`` measures both; ``auto`` (the default) picks
LiteRT, which was several times faster per window and starts without
TensorFlow, and falls back to Keras if the export fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from audioclf_core.bundle import Bundle
from audioclf_core.errors import BundleError, ParameterError

ENGINES = ("auto", "litert", "keras")
EXPORT_ATOL = 1e-4  # largest difference from Keras an export may show
_PROBE_WINDOWS = 16


class WindowModel(Protocol):
    """Class probabilities of model windows."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: float32 ``(n, frames, features)`` -> float32 ``(n, n_labels)``."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/audioclf``, else ``~/.cache/audioclf``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audioclf"


def litert_path(bundle: Bundle, cache_dir: str | Path | None = None) -> Path:
    """Where the LiteRT export of ``bundle`` is cached: keyed by its weights' SHA-256."""
    return Path(cache_dir or default_cache_dir()) / "litert" / f"{bundle.sha256}.tflite"


class KerasWindowModel:
    """The Keras model through the core's traced :class:`~audioclf_core.model.Predictor`."""

    name = "keras"

    def __init__(self, bundle: Bundle) -> None:
        from audioclf_core.model import Predictor

        self._predict = Predictor(bundle.model, batch_size=64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._predict(np.ascontiguousarray(x, dtype=np.float32))


class LiteRTWindowModel:
    """A LiteRT flatbuffer run one window at a time.

    The interpreter keeps a batch of one, so no call re-allocates tensors;
    several windows are run one after the other.

    Parameters
    ----------
    path : Path
        The ``.tflite`` file.
    input_shape : tuple of int
        ``(frames, features)`` of one window, from the bundle.
    n_labels : int
        Outputs per window.
    num_threads : int
        Interpreter threads; one leaves the other cores to the audio.
    """

    name = "litert"

    def __init__(self, path: Path, *, input_shape: tuple[int, int], n_labels: int, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._it = Interpreter(model_path=str(path), num_threads=num_threads)
            inp = self._it.get_input_details()
            out = self._it.get_output_details()
            if len(inp) != 1 or len(out) != 1:
                raise ValueError(f"expected one input and one output, found {len(inp)} and {len(out)}")
            if tuple(inp[0]["shape_signature"][1:]) != tuple(input_shape):
                raise ValueError(f"input shape {tuple(inp[0]['shape_signature'][1:])}, bundle says {tuple(input_shape)}")
            self._in, self._out = inp[0]["index"], out[0]["index"]
            self._it.resize_tensor_input(self._in, [1, *input_shape])
            self._it.allocate_tensors()
            if tuple(self._it.get_output_details()[0]["shape"]) != (1, n_labels):
                raise ValueError(f"output shape {tuple(self._it.get_output_details()[0]['shape'])}, expected (1, {n_labels})")
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"cannot use LiteRT model {path}: {' '.join(str(exc).split())}") from None
        self.n_labels = n_labels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((len(x), self.n_labels), dtype=np.float32)
        for i in range(len(x)):
            self._it.set_tensor(self._in, x[i : i + 1])
            self._it.invoke()
            out[i] = self._it.get_tensor(self._out)[0]
        return out


def _probe(bundle: Bundle) -> np.ndarray:
    """Fixed windows to compare engines on: features of seeded noise at several levels."""
    rng = np.random.default_rng(20240611)
    n = bundle.window_samples
    gains = np.geomspace(1e-4, 0.5, _PROBE_WINDOWS).astype(np.float32)
    y = (rng.standard_normal((_PROBE_WINDOWS, n)).astype(np.float32) * gains[:, None])
    return np.concatenate([bundle.features.windows(row, window=n, hop=bundle.hop_samples) for row in y])


def export_litert(bundle: Bundle, path: str | Path, *, atol: float = EXPORT_ATOL) -> Path:
    """Export the bundle's Keras model to LiteRT at ``path``, checked against Keras.

    Writes to a temporary file beside ``path`` and moves it into place only
    after the LiteRT model's probabilities on probe windows agree with Keras'
    within ``atol``, so a cached file is always a checked one.

    Raises
    ------
    BundleError
        The export fails, or its answers differ from Keras by more than ``atol``.
    """
    from audioclf_core.model import Predictor

    from .devices import native_stderr_silenced

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".tflite", dir=path.parent)
    os.close(fd)
    try:
        model = bundle.model  # imports TensorFlow
        try:
            with native_stderr_silenced():  # the converter's MLIR chatter
                model.export(tmp, format="litert", verbose=False)
        except Exception as exc:  # the converter raises many types
            raise BundleError(f"cannot export {bundle.name} to LiteRT: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        x = _probe(bundle)
        want = Predictor(model)(x)
        got = LiteRTWindowModel(Path(tmp), input_shape=bundle.input_shape, n_labels=len(bundle.labels))(x)
        diff = float(np.abs(got - want).max())
        if not diff <= atol:
            raise BundleError(f"LiteRT export of {bundle.name} differs from the Keras model by {diff:.2e} (> {atol:g})")
        os.replace(tmp, path)
        return path
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_window_model(bundle: Bundle, *, engine: str = "auto", cache_dir: str | Path | None = None,
                      warn=None) -> WindowModel:
    """The inference engine for ``bundle``, exported and cached first if need be.

    Parameters
    ----------
    engine : {"auto", "litert", "keras"}
        ``auto``: LiteRT, falling back to Keras (with a warning) if the export
        fails.
    cache_dir : path, optional
        Cache root (default :func:`default_cache_dir`).
    warn : callable, optional
        Called with one line when ``auto`` falls back.
    """
    if engine not in ENGINES:
        raise ParameterError(f"engine={engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "keras":
        return KerasWindowModel(bundle)
    path = litert_path(bundle, cache_dir)
    try:
        if path.is_file():
            try:
                return LiteRTWindowModel(path, input_shape=bundle.input_shape, n_labels=len(bundle.labels))
            except BundleError:
                pass  # a damaged cache entry: export again
        try:
            export_litert(bundle, path)
        except OSError as exc:  # cache not writable: export to a private temporary folder
            tmp = Path(tempfile.mkdtemp(prefix="audioclf-litert-")) / path.name
            if warn is not None:
                warn(f"cannot cache the LiteRT model in {path.parent} ({exc.strerror or exc}); using {tmp}")
            export_litert(bundle, tmp)
            path = tmp
        return LiteRTWindowModel(path, input_shape=bundle.input_shape, n_labels=len(bundle.labels))
    except BundleError as exc:
        if engine == "litert":
            raise
        if warn is not None:
            warn(f"{exc}; using the Keras engine")
        return KerasWindowModel(bundle)
