"""Inference engines: the bundle's model run by LiteRT or by TensorFlow.

Both engines take float32 windows ``(n, frames, features)`` and return class
probabilities ``(n, n_labels)``; they agree within :data:`EXPORT_ATOL`.

``litert``
    The Keras model converted to a LiteRT flatbuffer and run by
    ``ai_edge_litert``'s interpreter (XNNPACK kernels). TensorFlow is never
    imported, which saves its ~4 s start-up and ~600 MiB of memory per process,
    and a small CNN runs several times faster per window. The flatbuffer comes
    from the bundle itself (``model.tflite``, hashed in the manifest as
    ``litert_sha256``) or, for bundles without one, from an export made once
    and cached under ``<cache>/litert/<bundle sha256>.tflite``: every export is
    checked against Keras before it is used.
``keras``
    :class:`~audioclf_core.model.Predictor`: the Keras model as one traced
    TensorFlow function.

``auto`` (the default) picks LiteRT and falls back to Keras, with a warning,
when no flatbuffer can be had.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from .bundle import LITERT_FILE, Bundle
from .errors import BundleError, ParameterError

ENGINES = ("auto", "litert", "keras")
EXPORT_ATOL = 1e-4  # largest difference from Keras an export may show
_PROBE_WINDOWS = 16


class WindowModel(Protocol):
    """Class probabilities of model windows."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: float32 ``(n, frames, features)`` -> float32 ``(n, n_labels)``."""


def default_cache_dir() -> Path:
    """``$AUDIOCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/audioclf``, else ``~/.cache/audioclf``."""
    if os.environ.get("AUDIOCLF_CACHE_DIR"):
        return Path(os.environ["AUDIOCLF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audioclf"


def litert_cache_path(bundle: Bundle, cache_dir: str | Path | None = None) -> Path:
    """Where an export of ``bundle`` is cached: keyed by its weights' SHA-256."""
    return Path(cache_dir or default_cache_dir()) / "litert" / f"{bundle.sha256}.tflite"


class KerasEngine:
    """The Keras model through the traced :class:`~audioclf_core.model.Predictor`."""

    name = "keras"

    def __init__(self, bundle: Bundle, *, batch_size: int = 256) -> None:
        from .model import Predictor

        self._predict = Predictor(bundle.model, batch_size=batch_size)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._predict(np.ascontiguousarray(x, dtype=np.float32))


class LiteRTEngine:
    """A LiteRT flatbuffer run on batches of windows.

    A full batch runs on an interpreter sized ``batch_size``; a shorter tail is
    zero-padded to the next power of two, so at most ``log2(batch_size) + 1``
    interpreters exist per thread and none is ever re-allocated. Interpreters
    are not thread-safe: each calling thread gets its own.

    Parameters
    ----------
    path : Path
        The ``.tflite`` file.
    input_shape : tuple of int
        ``(frames, features)`` of one window, from the bundle.
    n_labels : int
        Outputs per window.
    batch_size : int
        Largest batch (a power of two). 1 runs windows one at a time, the
        cheapest for a live stream that has one window ready at a time.
    num_threads : int
        Interpreter threads.
    """

    name = "litert"

    def __init__(self, path: Path, *, input_shape: tuple[int, int], n_labels: int, batch_size: int = 256,
                 num_threads: int = 1) -> None:
        if batch_size < 1 or batch_size & (batch_size - 1):
            raise ParameterError(param="batch_size", value=batch_size, reason="must be a power of two")
        self.path = Path(path)
        self.input_shape = tuple(input_shape)
        self.n_labels = int(n_labels)
        self.batch_size = int(batch_size)
        self.num_threads = int(num_threads)
        try:
            self._content = self.path.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read LiteRT model {path}: {exc.strerror or exc}") from None
        self._local = threading.local()
        self._interpreter(1)  # validates the file against the bundle now, not at the first call

    def _interpreter(self, n: int):
        mine = getattr(self._local, "interpreters", None)
        if mine is None:
            mine = self._local.interpreters = {}
        got = mine.get(n)
        if got is not None:
            return got
        from ai_edge_litert.interpreter import Interpreter

        from .model import quiet_native_stderr

        try:
            with quiet_native_stderr(force=True):  # the XNNPACK delegate's banner (at creation or first run)
                it = Interpreter(model_content=self._content, num_threads=self.num_threads)
                inp, out = it.get_input_details(), it.get_output_details()
                if len(inp) != 1 or len(out) != 1:
                    raise ValueError(f"expected one input and one output, found {len(inp)} and {len(out)}")
                if tuple(inp[0]["shape_signature"][1:]) != self.input_shape:
                    raise ValueError(f"input shape {tuple(inp[0]['shape_signature'][1:])}, bundle says {self.input_shape}")
                it.resize_tensor_input(inp[0]["index"], [n, *self.input_shape])
                it.allocate_tensors()
                # output details keep the converted batch size until a first run: check a real output
                it.set_tensor(inp[0]["index"], np.zeros((n, *self.input_shape), dtype=np.float32))
                it.invoke()
                shape = tuple(it.get_tensor(out[0]["index"]).shape)
                if shape != (n, self.n_labels):
                    raise ValueError(f"output shape {shape}, expected ({n}, {self.n_labels})")
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"cannot use LiteRT model {self.path}: {' '.join(str(exc).split())}") from None
        got = mine[n] = (it, inp[0]["index"], out[0]["index"])
        return got

    def _run(self, x: np.ndarray) -> np.ndarray:
        it, i_in, i_out = self._interpreter(len(x))
        it.set_tensor(i_in, x)
        it.invoke()
        return it.get_tensor(i_out)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        out = np.empty((n, self.n_labels), dtype=np.float32)
        b = self.batch_size
        at = 0
        while n - at >= b:
            out[at : at + b] = self._run(x[at : at + b])
            at += b
        k = n - at
        if k:
            size = 1 << (k - 1).bit_length()  # next power of two >= k
            if size == k:
                out[at:] = self._run(x[at:])
            else:
                pad = np.zeros((size, *x.shape[1:]), dtype=np.float32)
                pad[:k] = x[at:]
                out[at:] = self._run(pad)[:k]
        return out


def probe_windows(bundle: Bundle) -> np.ndarray:
    """Fixed windows to compare engines on: features of seeded noise at several levels."""
    rng = np.random.default_rng(20240611)
    n = bundle.window_samples
    gains = np.geomspace(1e-4, 0.5, _PROBE_WINDOWS).astype(np.float32)
    y = rng.standard_normal((_PROBE_WINDOWS, n)).astype(np.float32) * gains[:, None]
    return np.concatenate([bundle.features.windows(row, window=n, hop=bundle.hop_samples) for row in y])


def export_litert(bundle: Bundle, path: str | Path, *, atol: float = EXPORT_ATOL) -> Path:
    """Export the bundle's Keras model to LiteRT at ``path``, checked against Keras.

    Writes a temporary file beside ``path`` and moves it into place only after
    its probabilities on probe windows agree with Keras within ``atol``, so a
    file in place is always a checked one. Imports TensorFlow.

    Raises
    ------
    BundleError
        The export fails, or its answers differ from Keras by more than ``atol``.
    """
    from .model import Predictor, quiet_native_stderr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".tflite", dir=path.parent)
    os.close(fd)
    try:
        model = bundle.model  # imports TensorFlow
        try:
            with quiet_native_stderr(force=True):  # the converter's MLIR chatter
                model.export(tmp, format="litert", verbose=False)
        except Exception as exc:  # the converter raises many types
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise BundleError(f"cannot export {bundle.name} to LiteRT: {type(exc).__name__}: {first}") from None
        x = probe_windows(bundle)
        want = Predictor(model)(x)
        got = LiteRTEngine(Path(tmp), input_shape=bundle.input_shape, n_labels=len(bundle.labels))(x)
        diff = float(np.abs(got - want).max())
        if not diff <= atol:
            raise BundleError(f"LiteRT export of {bundle.name} differs from the Keras model by {diff:.2e} (> {atol:g})")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it owner-only; a bundle is read by other users (workers)
        os.replace(tmp, path)
        return path
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def litert_file(bundle: Bundle, *, cache_dir: str | Path | None = None,
                warn: Callable[[str], None] | None = None) -> Path:
    """A checked LiteRT flatbuffer for ``bundle``: its own, a cached one, or a new export.

    Raises
    ------
    BundleError
        No flatbuffer can be had (the export fails or disagrees with Keras).
    """
    own = bundle.litert_path
    if own is not None:
        return own
    path = litert_cache_path(bundle, cache_dir)
    if path.is_file():
        return path
    try:
        return export_litert(bundle, path)
    except OSError as exc:  # cache not writable: export to a private temporary folder
        tmp = Path(tempfile.mkdtemp(prefix="audioclf-litert-")) / path.name
        if warn is not None:
            warn(f"cannot cache the LiteRT model in {path.parent} ({exc.strerror or exc}); using {tmp}")
        return export_litert(bundle, tmp)


def load_engine(bundle: Bundle, *, engine: str = "auto", batch_size: int = 256, num_threads: int = 1,
                cache_dir: str | Path | None = None, warn: Callable[[str], None] | None = None) -> WindowModel:
    """The inference engine for ``bundle``.

    Parameters
    ----------
    engine : {"auto", "litert", "keras"}
        ``auto``: LiteRT, falling back to Keras (with a warning) when no
        flatbuffer can be had.
    batch_size : int
        Windows per forward pass (a power of two for LiteRT).
    num_threads : int
        LiteRT interpreter threads.
    cache_dir : path, optional
        Cache root for exports (default :func:`default_cache_dir`).
    warn : callable, optional
        Called with one line on a fall-back or a cache problem.
    """
    if engine not in ENGINES:
        raise ParameterError(param="engine", value=engine, reason=f"use one of {', '.join(ENGINES)}")
    if engine == "keras":
        return KerasEngine(bundle, batch_size=batch_size)
    kw = dict(input_shape=bundle.input_shape, n_labels=len(bundle.labels), batch_size=batch_size, num_threads=num_threads)
    try:
        path = litert_file(bundle, cache_dir=cache_dir, warn=warn)
        try:
            return LiteRTEngine(path, **kw)
        except BundleError:
            if path == bundle.litert_path:
                raise
            # a damaged cache entry: export again
            return LiteRTEngine(export_litert(bundle, path), **kw)
    except BundleError as exc:
        if engine == "litert":
            raise
        if warn is not None:
            warn(f"{exc}; using the Keras engine")
        return KerasEngine(bundle, batch_size=batch_size)


def attach_litert(folder: str | Path) -> Bundle:
    """Add a checked ``model.tflite`` to a bundle folder and record its hash in the manifest.

    The weights are untouched: the flatbuffer is derived from them, so a bundle
    keeps its name, version and ``sha256``. Idempotent.
    """
    from .bundle import file_sha256, load_bundle, write_manifest

    folder = Path(folder)
    bundle = load_bundle(folder)
    if bundle.litert_path is not None:
        return bundle
    path = export_litert(bundle, folder / LITERT_FILE)
    manifest = bundle.manifest.model_copy(update={"litert_sha256": file_sha256(path)})
    write_manifest(folder, manifest)
    return load_bundle(folder)
