#!/usr/bin/env python
"""Silence segmentation alone: ``pydub.silence.detect_nonsilent`` against audioclf's splitter, on one hour.

Usage::

    .venv/bin/python benchmarks/bench_segment.py [--hours 1] [--model speech-music-noise]
        [--workdir /tmp/audioclf-bench] [--repeat 3] [--results benchmarks/RESULTS.md]

On ``--hours`` of 8 kHz call audio stitched from ``samples/`` (the same cached
file as ``bench_classify.py``'s, same seed), with the bundle's silence rule
(``min_silence_ms``, ``threshold_dbfs``):

- pydub: ``AudioSegment.from_file`` and ``detect_nonsilent(seg,
  min_silence_len, silence_thresh)`` (its default ``seek_step=1``: a window
  tested every millisecond), once: about 20-30 s per hour on 2 cores;
- audioclf: the file decoded to mono float32 (``open_audio``) and
  ``split_nonsilent`` with the same rule and no padding, segment limits off,
  best of ``--repeat``.

It prints load and split seconds, the real-time factors and the ratio, and the
boundary agreement (segments paired by overlap; differences of start and end
in ms). Target (from the issue): at least 300x faster, same boundaries (within
one 10 ms analysis frame). The table is written to the ``segmentation``
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from bench_classify import SAMPLES, best_time, ensure_call_audio, load_sources, match_segments
from report import RESULTS_MD, Table, begin, load_average, rt, writable_file, write_results

TARGET_SPEEDUP = 300.0


def pydub_pass(path: Path, *, min_silence_len: int, silence_thresh: float) -> tuple[float, float, np.ndarray]:
    """Load and ``detect_nonsilent``; seconds of each, and the ranges in ms, shape ``(m, 2)``."""
    from pydub import AudioSegment
    from pydub.silence import detect_nonsilent

    t0 = time.perf_counter()
    seg = AudioSegment.from_file(path)
    t1 = time.perf_counter()
    ranges = detect_nonsilent(seg, min_silence_len, silence_thresh)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.array(ranges, dtype=np.float64).reshape(-1, 2)


def load_mono(path: Path) -> tuple[np.ndarray, int]:
    """The whole file as mono float32 through audioclf's reader, and its rate."""
    from audioclf_core.audio_io import mix_to_mono, open_audio

    with open_audio(str(path)) as reader:
        sr = reader.info.sample_rate
        return np.concatenate([mix_to_mono(b)[:, 0] for b in reader.blocks(1 << 20)]), sr


def segmentation_tables(path: Path, *, model: str, repeat: int) -> list[Table]:
    from audioclf_core.bundle import load_bundle
    from audioclf_core.segment import split_nonsilent

    rule = load_bundle(model).manifest.silence
    params = rule.replace(keep_silence_ms=0.0, min_segment_ms=0.0, max_segment_s=3600.0, threshold_rel_db=None)
    pydub_args = dict(min_silence_len=int(round(rule.min_silence_ms)), silence_thresh=rule.threshold_dbfs)
    audio_s = sf.info(path).duration

    print(f"  pydub detect_nonsilent on {audio_s / 3600:.2f} h (about 25 s an hour) ...", flush=True)
    p_load, p_split, theirs = pydub_pass(path, **pydub_args)
    print(f"  audioclf split_nonsilent x{repeat} ...", flush=True)
    o_load, (y, sr) = best_time(lambda: load_mono(path), repeat)
    o_split, bounds = best_time(lambda: split_nonsilent(y, sr=sr, params=params), repeat)
    ours = bounds * 1000.0 / sr

    speed = Table(
        f"Segmentation of {audio_s / 3600:.2f} h of 8 kHz call audio, same rule ({path.name})",
        ["splitter", "load s", "split s", "split x RT", "load + split s", "x RT", "segments"],
        [
            ("pydub detect_nonsilent (seek_step=1)", p_load, p_split, rt(audio_s, p_split), p_load + p_split,
             rt(audio_s, p_load + p_split), len(theirs)),
            ("audioclf split_nonsilent", o_load, o_split, rt(audio_s, o_split), o_load + o_split,
             rt(audio_s, o_load + o_split), len(ours)),
            ("ratio pydub / audioclf", p_load / o_load, p_split / o_split, "", (p_load + p_split) / (o_load + o_split),
             "", ""),
        ],
    )
    speedup = p_split / o_split
    speed.notes += [
        f"Rule from the {model} bundle: min_silence_ms={rule.min_silence_ms:g}, threshold_dbfs={rule.threshold_dbfs:g}; "
        f"pydub: detect_nonsilent(seg, {pydub_args['min_silence_len']}, {pydub_args['silence_thresh']:g}); audioclf: "
        "split_nonsilent with keep_silence_ms=0, min_segment_ms=0, max_segment_s=3600 (detect_nonsilent pads nothing "
        "and keeps every sound whole).",
        "load: pydub AudioSegment.from_file; audioclf open_audio blocks mixed to mono float32.",
        f"pydub ran once; audioclf, best of {repeat}. Target: split >= {TARGET_SPEEDUP:.0f}x faster than pydub: "
        f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'} ({speedup:,.0f}x).",
    ]

    pairs = match_segments(theirs, ours)
    d_start = np.array([abs(theirs[i, 0] - ours[j, 0]) for i, j in pairs])
    d_end = np.array([abs(theirs[i, 1] - ours[j, 1]) for i, j in pairs])
    within = int(np.sum((d_start <= 10.0) & (d_end <= 10.0))) if pairs else 0

    def stat(fn, d: np.ndarray) -> float:
        return float(fn(d)) if d.size else float("nan")

    agree = Table(
        "Segmentation: boundary agreement, pydub detect_nonsilent vs audioclf (same hour, same rule)",
        ["pydub segments", "audioclf segments", "paired", "both ends within 10 ms", "max |d start| ms",
         "max |d end| ms", "median |d start| ms", "median |d end| ms"],
        [(len(theirs), len(ours), len(pairs), within, stat(np.max, d_start), stat(np.max, d_end),
          stat(np.median, d_start), stat(np.median, d_end))],
        ["Segments paired one to one by greatest overlap, in order. audioclf tests 10 ms frames where pydub tests "
         "every 1 ms, so boundaries agree within one frame (10 ms) when the rule is the same. "
         f"Same boundaries: {'yes' if len(theirs) == len(ours) == len(pairs) == within else 'NO'}."],
    )
    return [speed, agree]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=1.0, help="length of the test recording (default 1)")
    p.add_argument("--model", default="speech-music-noise", help="bundle whose silence rule is used")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "audioclf-bench",
                   help="cache for the generated audio, shared with bench_classify.py (default /tmp/audioclf-bench)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the stitching (bench_classify.py's default)")
    p.add_argument("--repeat", type=int, default=3, help="runs of audioclf's splitter; the fastest is reported")
    p.add_argument("--results", type=writable_file, default=RESULTS_MD,
                   help="Markdown file whose 'segmentation' section is rewritten (default benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    if args.hours <= 0 or args.repeat < 1:
        p.error("--hours must be positive and --repeat at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run = begin("bench_segment.py", argv)
    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = ensure_call_audio(args.workdir, hours=args.hours, keys=["8k"], seed=args.seed,
                             sources=load_sources(SAMPLES))["8k"]
    os.sync()
    tables = segmentation_tables(path, model=args.model, repeat=args.repeat)
    for t in tables:
        print(t.text(), "\n", flush=True)
    took = time.perf_counter() - started
    print(f"load average at end: {load_average()}; benchmark took {took / 60:.1f} min")
    write_results("segmentation", "Segmentation alone: pydub detect_nonsilent vs audioclf", tables, run=run,
                  took_s=took, path=args.results)
    print(f"wrote the segmentation section of {args.results}")


if __name__ == "__main__":
    main()
