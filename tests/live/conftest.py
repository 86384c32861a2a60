"""Fixtures of the live sidecar's tests: a real PulseAudio server, a cached LiteRT
export and the batch path's answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import NAMES, SAMPLES
from .pulse import PulseServer, available


@pytest.fixture(scope="session")
def pulse(tmp_path_factory) -> PulseServer:
    """A PulseAudio daemon with a null sink, for the whole session."""
    why = available()
    if why:
        pytest.skip(why)
    server = PulseServer(tmp_path_factory.mktemp("pulse")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bundle():
    """The bundle the sidecar runs when no --model is given."""
    from audioclf_core.bundle import DEFAULT_MODEL, load_bundle

    return load_bundle(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def litert_cache(tmp_path_factory, bundle) -> Path:
    """A cache folder that stays empty: the shipped bundle carries its own checked flatbuffer."""
    from live.inference import load_window_model

    cache = tmp_path_factory.mktemp("cache")
    assert load_window_model(bundle, engine="litert", cache_dir=cache).name == "litert"
    assert bundle.litert_path is not None and not any(cache.iterdir())
    return cache


@pytest.fixture(scope="session")
def batch(bundle):
    """The batch path's outcome for each sample recording."""
    from audioclf_core.pipeline import Classifier

    clf = Classifier(bundle)
    outcomes = {Path(o.recording).name: o for o in clf.classify([str(SAMPLES / n) for n in NAMES])}
    assert all(o.status == "ok" for o in outcomes.values())
    return outcomes


@pytest.fixture
def env(litert_cache, tmp_path) -> dict[str, str]:
    """Environment for a sidecar process: the cached export, and no sound server."""
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "AUDIOCLF_CACHE_DIR": str(litert_cache), "HOME": str(home),
            "XDG_RUNTIME_DIR": str(home), "PULSE_SERVER": f"unix:{tmp_path}/no-such-server"}
