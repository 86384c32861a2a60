"""``audioclf-live``: classify what a microphone hears, segment by segment, as it happens.

The sidecar is built on the core: the same streaming splitter, features and
model as ``audioclf classify``, so a recording replayed through it gives the
batch path's answer. PortAudio (python-sounddevice) feeds it blocks; the audio
callback only copies each block into a bounded queue, and one consumer thread
does everything else.

Modules:

- :mod:`live.devices`: input devices (list, resolve ``--device``, check rates);
- :mod:`live.sources`: the sound card or a replayed file, feeding the queue;
- :mod:`live.inference`: the core's inference engines, one window per call;
- :mod:`live.processing`: mix, resample, segment, classify (the consumer's work);
- :mod:`live.outputs`: JSONL events, Parquet result tables, the console view;
- :mod:`live.session`: :func:`run_live`, which ties them together;
- :mod:`live.app`: the Typer command line (its console script is :func:`main`); it fails and
  reads the segmenter's options as ``audioclf`` does, through :mod:`audioclf_cli.console`.

Prefect is never imported, and TensorFlow only when the Keras engine is used
or a bundle is exported to LiteRT for the first time, so the sidecar starts
in about a second.
"""

import os as _os

# The consumer works on one window at a time; numpy's and scipy's OpenBLAS
# would split each small product over every core and spin waiting for the
# others, which on a busy machine made a 1 s window's features take 8 ms
# instead of 0.25 ms (benchmarks/bench_live.py). It has to be set before numpy
# loads OpenBLAS, so here, the first thing the console script imports; an
# explicit setting wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> None:
    """``audioclf-live``: :func:`live.app.main`, imported inside the guard that keeps a Ctrl-C
    during the imports to one line (:func:`audioclf_cli.entry.guarded_main`)."""
    from audioclf_cli.entry import guarded_main

    guarded_main("live.app")
