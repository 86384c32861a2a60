"""Single-window inference for the sidecar: the core's engines at batch size 1.

The live path classifies a window as soon as its audio is in, so what matters
is the cost of one small call, not throughput: the engine runs windows one at
a time. See :mod:`audioclf_core.engines` for the engines themselves (LiteRT,
from the bundle's own flatbuffer or a checked, cached export; or Keras' traced
call); ``benchmarks/bench_live.py`` measures both per window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from audioclf_core.bundle import Bundle
from audioclf_core.engines import ENGINES, WindowModel, load_engine

__all__ = ["ENGINES", "WindowModel", "load_window_model"]


def load_window_model(bundle: Bundle, *, engine: str = "auto", cache_dir: str | Path | None = None,
                      warn: Callable[[str], None] | None = None) -> WindowModel:
    """The engine for ``bundle``, one window per call (see :func:`audioclf_core.engines.load_engine`)."""
    return load_engine(bundle, engine=engine, batch_size=1, cache_dir=cache_dir, warn=warn)
