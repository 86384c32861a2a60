"""Orchestration overhead: the Prefect flow against `audioclf classify` on the same files.

    .venv/bin/python benchmarks/bench_flow.py [--recordings 200] [--model speech-music-noise]
        [--workdir /tmp/audioclf-bench-flow] [--results benchmarks/RESULTS.md]

Builds a folder of N recordings (copies of the sample calls under distinct
names, so each is its own recording), then runs, each in a fresh process:
- `audioclf classify DIR` (the reference: no orchestration),
- `audioclf run DIR` (classify-archive flow, thread task runner, ephemeral API),
- `audioclf run DIR --dask` (the same flow on a 2-process Dask LocalCluster),
- `audioclf run DIR` again over the finished output (everything skipped).
It prints wall times, audio hours per wall hour and the ratios to the
reference, and writes the table to the `orchestration` section of
benchmarks/RESULTS.md. Target (from the issue): the flow within 1.15x the wall
time of `audioclf classify`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from report import RESULTS_MD, Run, Table, busy_warning, command_line, write_results

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_FLOW = 1.15


def build_archive(folder: Path, n: int) -> float:
    """N recordings from the samples, in date folders; returns total audio seconds."""
    samples = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in {".wav", ".flac"})
    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i in range(n):
        src = samples[i % len(samples)]
        dst = folder / f"2026/11/{1 + i % 28:02d}" / f"call-{i:04d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copyfile(src, dst)
        total += sf.info(str(dst)).duration
    return total


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of one command (fails loudly)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=200)
    ap.add_argument("--model", default="speech-music-noise", help="bundle for every run (default speech-music-noise)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/audioclf-bench-flow"))
    ap.add_argument("--results", type=Path, default=RESULTS_MD,
                    help="Markdown file whose 'orchestration' section is rewritten (default benchmarks/RESULTS.md)")
    args = ap.parse_args(argv)
    run = Run(command_line("bench_flow.py", sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    if warning := busy_warning():
        print(warning, flush=True)
    archive = args.workdir / f"archive-{args.recordings}"
    audio_s = build_archive(archive, args.recordings)
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PREFECT_LOGGING_LEVEL": "WARNING"}
    model = ["--model", args.model]
    runs = [
        ("audioclf classify (reference)", ["classify", str(archive), "--out", "{out}/classify", "-q", *model]),
        ("flow, threads (2 workers)", ["run", str(archive), "--out", "{out}/threads", "-q", *model]),
        ("flow, Dask LocalCluster (2 processes)", ["run", str(archive), "--out", "{out}/dask", "--dask", "-q", *model]),
        ("flow again, all done (threads)", ["run", str(archive), "--out", "{out}/threads", "-q", *model]),
    ]
    out = args.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    rows = []
    for name, argv_ in runs:
        wall = timed([str(BIN / "audioclf"), *[a.replace("{out}", str(out)) for a in argv_]], env)
        rows.append((name, wall))
        print(f"{name:40s} {wall:7.1f} s", flush=True)
    ref = rows[0][1]
    table = Table(
        f"Flow vs audioclf classify: {args.recordings} recordings, {audio_s / 3600:.2f} h of audio, bundle {args.model}",
        ["run", "wall s", "audio h per wall h", "wall / classify"],
        [(name, wall, "–" if "all done" in name else f"{audio_s / wall:,.0f}", f"{wall / ref:.2f}")
         for name, wall in rows],
        [
            "Each command in a fresh process, so each pays TensorFlow's start-up once; the flows also start "
            "Prefect's ephemeral API. The last run finds every recording done: the fixed cost of a run.",
            f"Target: a flow <= {TARGET_FLOW}x the wall time of classify: threads "
            f"{'met' if rows[1][1] / ref <= TARGET_FLOW else 'NOT met'} ({rows[1][1] / ref:.2f}x), Dask "
            f"{'met' if rows[2][1] / ref <= TARGET_FLOW else 'NOT met'} ({rows[2][1] / ref:.2f}x).",
        ],
    )
    print("\n" + table.text())
    write_results("orchestration", "Orchestration overhead: the flow vs audioclf classify", [table], run=run,
                  took_s=time.perf_counter() - started, path=args.results)
    print(f"wrote the orchestration section of {args.results}")


if __name__ == "__main__":
    main()
