#!/usr/bin/env python
"""Memory: peak RSS of ``audioclf classify`` on one long recording and on a folder of many short ones.

Usage::

    .venv/bin/python benchmarks/bench_memory.py [--long-hours 10] [--short-files 1000]
        [--model speech-music-noise] [--workdir /tmp/audioclf-bench] [--results benchmarks/RESULTS.md]

Each run is ``audioclf classify INPUT --out DIR --model MODEL -q`` in a fresh
process, its peak RSS read by ``/usr/bin/time -f %M`` (see
``bench_classify.run_child`` for why not ``ru_maxrss``). Inputs:

- one 44-second sample (``samples/call-001.wav``): the floor, what the
  interpreter, the libraries and the model (LiteRT by default; TensorFlow with
  ``--engine keras``) take;
- ``--long-hours`` (default 10) of 8 kHz call audio in one file, and a tenth
  of that (at most 1 hour: the reference of the flatness check), stitched from
  ``samples/`` (the cached files of ``bench_classify.py``);
- a folder of ``--short-files`` (default 1,000) recordings of 10 to 60 s,
  stitched the same way (seeded), in turn 8 kHz PCM WAV, 8 kHz µ-law WAV and
  16 kHz FLAC, in day folders.

Target (from the issue): at most 1 GB, flat in the recording's length (and in
the number of recordings). The table is written to the ``memory`` section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from bench_classify import SAMPLES, ChildRun, audioclf_cli, ensure_call_audio, load_sources, run_child, write_call_audio
from report import RESULTS_MD, Table, begin, load_average, memory_verdict, rt, writable_file, write_results

SHORT_FORMATS = {
    "8k-pcm": (8000, 1, "WAV", "PCM_16", "8k.wav"),
    "8k-ulaw": (8000, 1, "WAV", "ULAW", "8k-ulaw.wav"),
    "16k-flac": (16000, 1, "FLAC", "PCM_16", "16k.flac"),
}
SHORT_S = (10.0, 60.0)


def ensure_short_folder(workdir: Path, *, n: int, seed: int) -> Path:
    """``n`` short recordings (cached; a marker written last records the recipe)."""
    root = workdir / f"short-{n}-seed{seed}"
    sources = load_sources(SAMPLES)
    recipe = {"n": n, "seed": seed, "formats": SHORT_FORMATS, "seconds": SHORT_S,
              "sources": [(name, int(y.size)) for name, y in sources]}
    recipe = json.loads(json.dumps(recipe))
    marker = root / "folder.json"
    try:
        if json.loads(marker.read_text()) == recipe:
            return root
    except (OSError, ValueError):
        pass
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    keys = list(SHORT_FORMATS)
    t0 = time.perf_counter()
    for i in range(n):
        key = keys[i % len(keys)]
        path = root / "2026" / "11" / f"{1 + i % 28:02d}" / f"call-{i:05d}-{SHORT_FORMATS[key][4]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_call_audio({key: path}, hours=float(rng.uniform(*SHORT_S)) / 3600, seed=seed * 100_000 + i,
                         sources=sources, formats=SHORT_FORMATS)
    marker.write_text(json.dumps(recipe))
    print(f"  generated {n} short recordings in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def folder_audio(root: Path) -> tuple[int, float, float]:
    """Files, audio seconds and megabytes of the audio files under ``root``."""
    files = [p for p in root.rglob("*") if p.suffix in (".wav", ".flac")]
    return len(files), sum(sf.info(str(p)).duration for p in files), sum(p.stat().st_size for p in files) / 1e6


def run_cli(target: Path, out: Path, *, model: str) -> ChildRun:
    shutil.rmtree(out, ignore_errors=True)
    return run_child([audioclf_cli(), "classify", str(target), "--out", str(out), "--model", model, "-q"])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--long-hours", type=float, default=10.0, help="length of the long recording (default 10)")
    p.add_argument("--short-files", type=int, default=1000, help="recordings in the folder of short ones (default 1000)")
    p.add_argument("--model", default="speech-music-noise", help="bundle to classify with (default speech-music-noise)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "audioclf-bench",
                   help="cache for generated audio, shared with bench_classify.py (default /tmp/audioclf-bench)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the stitching (bench_classify.py's default)")
    p.add_argument("--results", type=writable_file, default=RESULTS_MD,
                   help="Markdown file whose 'memory' section is rewritten (default benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    if args.long_hours <= 0 or args.short_files < 1:
        p.error("--long-hours must be positive and --short-files at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run = begin("bench_memory.py", argv)
    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)

    sources = load_sources(SAMPLES)
    inputs: list[tuple[str, Path]] = [("one sample (the floor)", SAMPLES / "call-001.wav")]
    # Flatness compares the long recording with one a tenth as long (1 h at the default 10 h).
    lengths = [min(1.0, args.long_hours / 10), args.long_hours]
    for hours in lengths:
        path = ensure_call_audio(args.workdir, hours=hours, keys=["8k"], seed=args.seed, sources=sources)["8k"]
        inputs.append((f"one recording of {hours:g} h", path))
    folder = ensure_short_folder(args.workdir, n=args.short_files, seed=args.seed)
    inputs.append((f"folder of {args.short_files:,} short recordings", folder))
    os.sync()

    t = Table(f"Memory: peak RSS of audioclf classify (bundle {args.model}), fresh process each",
              ["input", "files", "audio h", "size MB", "wall s", "x RT", "peak RSS MiB", "over the floor MiB"])
    floor = None
    for name, target in inputs:
        print(f"  {name} ...", flush=True)
        r = run_cli(target, args.workdir / "out" / "memory", model=args.model)
        n, audio_s, mb = folder_audio(target) if target.is_dir() else (1, sf.info(str(target)).duration,
                                                                       target.stat().st_size / 1e6)
        floor = r.maxrss_mb if floor is None else floor
        t.rows.append((name, n, audio_s / 3600, mb, r.wall_s, rt(audio_s, r.wall_s), r.maxrss_mb,
                       r.maxrss_mb - floor))
    t.notes += [
        memory_verdict(peak_mib=max(row[6] for row in t.rows), short_mib=t.rows[1][6], long_mib=t.rows[2][6],
                       short_h=lengths[0], long_h=lengths[1]),
        "peak RSS: /usr/bin/time -f %M of the classify process alone. The floor is the interpreter, the "
        "libraries and the model on the default engine (LiteRT: TensorFlow is not imported); 'over the floor' is what "
        "the input itself costs.",
        f"Short recordings: {SHORT_S[0]:g}-{SHORT_S[1]:g} s each, in turn 8 kHz PCM WAV, 8 kHz µ-law WAV and 16 kHz "
        "FLAC, stitched from samples/ (seeded).",
    ]
    print(t.text(), "\n", flush=True)
    took = time.perf_counter() - started
    print(f"load average at end: {load_average()}; benchmark took {took / 60:.1f} min")
    write_results("memory", "Memory: one long recording and a folder of short ones", [t], run=run, took_s=took,
                  path=args.results)
    print(f"wrote the memory section of {args.results}")


if __name__ == "__main__":
    main()
