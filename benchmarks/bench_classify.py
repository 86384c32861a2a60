#!/usr/bin/env python
"""Benchmark ``audioclf classify``: end to end, stage by stage, against pydub, and memory.

Usage::

    .venv/bin/python benchmarks/bench_classify.py [--hours 1] [--long-hours 10]
        [--workdir /tmp/audioclf-bench] [--skip-long] [--repeat 3]

Sections (one table each, printed, and written as Markdown to the ``classify``
section of ``benchmarks/RESULTS.md``):

1. Test audio: hours of call audio stitched from ``samples/`` (seeded), written
   as 8 kHz PCM16 WAV, 16 kHz FLAC and 44.1 kHz stereo WAV, cached in the
   workdir.
2. End to end: ``audioclf classify FILE --out DIR -q`` in a fresh process (wall
   time with start-up and model load), and the steady state (a fresh
   process that loads and warms the model first, then times one recording);
   then the steady state with one BLAS thread against numpy's default pool.
3. Stage breakdown: each stage of the pipeline run one after the other in this
   process, so every stage's cost is visible on its own.
4. Reference, in the same run: pydub's ``split_on_silence`` against
   ``split_nonsilent``, and a pydub + librosa + ``model.predict``-per-chunk
   recipe against ``Classifier.classify_one``, as ratios.
5. Memory: peak RSS of the CLI on the short file against a ``--long-hours`` file.

The house rule is ratios against a reference measured in the same run, never
absolute seconds compared across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import soundfile as sf
import soxr

from report import RESULTS_MD, Table, begin, load_average, memory_verdict, writable_file, write_results

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
BASE_SR = 8000  # the call audio is built at telephone rate, then upsampled
STEREO_RIGHT_DB = -1.5  # right channel of the wide-band file: same call, a little quieter
GAIN_DB = (-6.0, 3.0)  # per-recording gain range when stitching
EXCERPT_S = 600.0  # the reference section's excerpt: 10 minutes
# Output formats of the generated audio: key -> (rate, channels, container, subtype, suffix).
FORMATS = {
    "8k": (8000, 1, "WAV", "PCM_16", "8k.wav"),
    "16k": (16000, 1, "FLAC", "PCM_16", "16k.flac"),
    "44k": (44100, 2, "WAV", "PCM_16", "44k-stereo.wav"),
}
# pydub's split_on_silence settings that published projects use, and the same rule in audioclf's terms.
PYDUB_SPLIT = dict(min_silence_len=500, silence_thresh=-50, keep_silence=100)
AUDIOCLF_SPLIT = dict(min_silence_ms=500, threshold_dbfs=-50, keep_silence_ms=100, min_segment_ms=0, max_segment_s=3600)


class Stopwatch:
    """Accumulates wall seconds and process CPU seconds per named stage.

    CPU time counts every thread of the process (TensorFlow's and OpenBLAS's
    pools included), and it is what other load on the machine distorts least.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[stage] += time.perf_counter() - t0
            self.cpu[stage] += time.process_time() - c0


# --------------------------------------------------------------------------------------
# Test audio
# --------------------------------------------------------------------------------------


def load_sources(samples: Path) -> list[tuple[str, np.ndarray]]:
    """The sample recordings as mono float32 at ``BASE_SR``.

    Stereo recordings are mixed down (the pipeline mixes them too); the 16 kHz
    FLAC is brought down to telephone rate so every source is a call leg.
    """
    out = []
    for path in sorted(samples.glob("call-00*")):
        if path.suffix not in (".wav", ".flac"):
            continue
        y, sr = sf.read(path, dtype="float32", always_2d=True)
        y = y.mean(axis=1, dtype=np.float32)
        if sr != BASE_SR:
            y = soxr.resample(y, sr, BASE_SR, quality="HQ").astype(np.float32)
        out.append((path.name, y))
    if not out:
        raise SystemExit(f"no call-00* recordings in {samples}")
    return out


def call_audio_paths(workdir: Path, hours: float, keys: Sequence[str]) -> dict[str, Path]:
    """Where the generated files of one length live."""
    return {k: workdir / f"call-{hours:g}h-{FORMATS[k][4]}" for k in keys}


def ensure_call_audio(
    workdir: Path, *, hours: float, keys: Sequence[str], seed: int, sources: list[tuple[str, np.ndarray]]
) -> dict[str, Path]:
    """Generate (or reuse) ``hours`` of stitched call audio in the formats ``keys``.

    A JSON marker written after the files are complete records how they were
    made; the files are reused only when it matches, so an interrupted run is
    never mistaken for a cache hit.
    """
    paths = call_audio_paths(workdir, hours, keys)
    marker = workdir / f"call-{hours:g}h.json"
    recipe = {"hours": hours, "seed": seed, "gain_db": GAIN_DB, "stereo_right_db": STEREO_RIGHT_DB,
              "sources": [(name, int(y.size)) for name, y in sources]}
    recipe = json.loads(json.dumps(recipe))  # tuples become lists, as they come back from the marker
    with contextlib.suppress(OSError, ValueError):
        done = json.loads(marker.read_text())
        if done.get("recipe") == recipe and all(p.is_file() and k in done.get("keys", []) for k, p in paths.items()):
            return paths
    t0 = time.perf_counter()
    write_call_audio(paths, hours=hours, seed=seed, sources=sources)
    keys_done = sorted(set(keys))
    marker.write_text(json.dumps({"recipe": recipe, "keys": keys_done}))
    print(f"  generated {hours:g} h ({', '.join(keys)}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def write_call_audio(
    paths: dict[str, Path], *, hours: float, seed: int, sources: list[tuple[str, np.ndarray]],
    formats: Mapping[str, tuple] = FORMATS,
) -> None:
    """Stitch randomly chosen recordings with random gains into ``hours`` of audio.

    One recording (tens of seconds) is in memory at a time: each is scaled,
    pushed through a streaming resampler per output rate and appended to every
    output file, so generating ten hours costs no more memory than one.
    ``formats`` maps each key of ``paths`` to ``(rate, channels, container,
    subtype, suffix)`` as :data:`FORMATS` does.
    """
    rng = np.random.default_rng(seed)
    total = int(round(hours * 3600 * BASE_SR))
    right = np.float32(10 ** (STEREO_RIGHT_DB / 20))
    with contextlib.ExitStack() as stack:
        outs = []
        for key, path in paths.items():
            sr, channels, container, subtype, _ = formats[key]
            tmp = path.with_name(path.name + ".part")
            f = stack.enter_context(
                sf.SoundFile(tmp, "w", samplerate=sr, channels=channels, format=container, subtype=subtype)
            )
            rs = None if sr == BASE_SR else soxr.ResampleStream(BASE_SR, sr, 1, dtype="float32", quality="HQ")
            # libsndfile's MP3 encoder mangles int16 input (it comes back as noise); give it floats.
            quantise = _clip_float if container == "MP3" else _pcm16
            outs.append((f, rs, channels, quantise, tmp, path))
        written = 0
        while written < total:
            _, y = sources[int(rng.integers(len(sources)))]
            gain = np.float32(10 ** (rng.uniform(*GAIN_DB) / 20))
            block = y[: total - written] * gain
            written += block.size
            last = written >= total
            for f, rs, channels, quantise, _, _ in outs:
                x = block if rs is None else rs.resample_chunk(block, last=last)
                if channels == 2:
                    x = np.stack([x, x * right], axis=1)
                f.write(quantise(x))
    for *_, tmp, path in outs:
        os.replace(tmp, path)


def _pcm16(x: np.ndarray) -> np.ndarray:
    """Quantise to int16 ourselves: libsndfile wraps, not clips, out-of-range floats."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def _clip_float(x: np.ndarray) -> np.ndarray:
    """Full-scale float32, clipped as :func:`_pcm16` clips, for encoders that take floats."""
    return np.clip(x, -1.0, 32767 / 32768).astype(np.float32)


def ensure_excerpt(src: Path, dst: Path, *, seconds: float) -> Path:
    """The first ``seconds`` of ``src`` as its own file (same format), copied in blocks."""
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:  # else src was regenerated since
        return dst
    info = sf.info(src)
    n = min(info.frames, int(seconds * info.samplerate))
    tmp = dst.with_name(dst.name + ".part")
    with sf.SoundFile(src) as fin, sf.SoundFile(tmp, "w", samplerate=info.samplerate, channels=info.channels,
                                                 format=info.format, subtype=info.subtype) as fout:
        left = n
        while left:
            block = fin.read(min(left, 1 << 20), dtype="int16")
            fout.write(block)
            left -= len(block)
    os.replace(tmp, dst)
    return dst


def audio_table(files: dict[str, Path]) -> Table:
    """What was generated: format, length and size."""
    t = Table("Test audio (stitched from samples/, seeded)", ["file", "format", "hours", "size MB"])
    for path in files.values():
        info = sf.info(path)
        t.rows.append((path.name, f"{info.samplerate} Hz {info.channels} ch {info.format} {info.subtype}",
                       info.duration / 3600, path.stat().st_size / 1e6))
    return t


# --------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    wall_s: float
    cpu_s: float  # user + system seconds of the child: less sensitive than wall time to other load
    maxrss_mb: float  # MiB
    stdout: str


def run_child(cmd: Sequence[str], *, env: dict[str, str] | None = None) -> ChildRun:
    """Run a command to completion; its wall time and its own peak RSS.

    The peak comes from ``/usr/bin/time -f %M``, not from this process's
    rusage: Linux folds the RSS of the image a child had before ``exec`` into
    its ``ru_maxrss``, and a child forked (or vforked) from this benchmark,
    which holds TensorFlow and hours of test audio by the later sections,
    would report this benchmark's size instead of its own. ``time`` is small,
    so the child it starts is measured alone. Output goes to temporary files
    so that a chatty child cannot fill a pipe.
    """
    timer = shutil.which("time", path="/usr/bin:/bin")
    if timer is None:
        raise SystemExit("GNU time (/usr/bin/time) is needed to measure peak RSS: apt-get install time")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    with tempfile.NamedTemporaryFile("r") as rss, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.run([timer, "-f", "%M %U %S", "-o", rss.name, *cmd], stdout=out, stderr=err, env=env,
                              cwd=REPO)
        wall = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        measured = rss.read().split()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    # The last line of time's output holds the numbers; earlier lines would be its own messages.
    maxrss_kb, user_s, sys_s = int(measured[-3]), float(measured[-2]), float(measured[-1])
    return ChildRun(wall, user_s + sys_s, maxrss_kb / 1024, stdout)


def best_of(runs: Sequence[ChildRun]) -> ChildRun:
    """Shortest wall time and highest peak RSS over repeated runs.

    The minimum is the run least disturbed by other work on the machine; the
    peak memory is what a deployment must provide, so it takes the maximum.
    """
    return ChildRun(min(r.wall_s for r in runs), min(r.cpu_s for r in runs), max(r.maxrss_mb for r in runs),
                    runs[0].stdout)


def audioclf_cli() -> str:
    """The ``audioclf`` console script of the interpreter running this benchmark."""
    here = Path(sys.executable).with_name("audioclf")
    return str(here) if here.exists() else (shutil.which("audioclf") or "audioclf")


def run_cli(path: Path, out: Path) -> ChildRun:
    """``audioclf classify PATH --out OUT -q`` in a fresh process, into an empty OUT."""
    shutil.rmtree(out, ignore_errors=True)
    return run_child([audioclf_cli(), "classify", str(path), "--out", str(out), "-q"])


def run_steady(path: Path, out: Path, *, blas_threads: int | None = None) -> dict:
    """The steady-state worker (``--steady-worker``) in a fresh process.

    ``blas_threads`` overrides the BLAS pool size the classifier chose for itself.
    """
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--steady-worker", str(path), str(out)]
    if blas_threads is not None:
        cmd += ["--worker-blas-threads", str(blas_threads)]
    run = run_child(cmd)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["maxrss_mb"] = run.maxrss_mb
    return result


def best_steady(runs: Sequence[dict]) -> dict:
    """The fastest steady-state run, with the highest peak RSS of all of them."""
    best = dict(min(runs, key=lambda r: r["total_s"]))
    best["maxrss_mb"] = max(r["maxrss_mb"] for r in runs)
    best["slowest_s"] = max(r["total_s"] for r in runs)
    return best


def steady_worker(path: str, out: str, *, blas_threads: int | None = None) -> None:
    """Load the default bundle, warm the model on a sample, then time one recording.

    With ``blas_threads``, numpy's BLAS pool is set to that many threads after
    the classifier is built (it limits the pool itself), to measure that choice.

    Prints one JSON line: the seconds spent classifying and writing, the audio
    length and the segment count.
    """
    from audioclf_core.bundle import DEFAULT_MODEL, load_bundle
    from audioclf_core.pipeline import Classifier, to_tables
    from audioclf_core.results import ResultStore

    bundle = load_bundle(DEFAULT_MODEL)
    clf = Classifier(bundle)
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads, user_api="blas")
    clf.classify_one(str(SAMPLES / "call-001.wav"))  # loads the engine and runs it once
    t0 = time.perf_counter()
    outcome = clf.classify_one(path)
    t1 = time.perf_counter()
    segments, recordings = to_tables([outcome], bundle, channels=clf.channels)
    ResultStore(out).write(segments, recordings, labels=bundle.labels)
    t2 = time.perf_counter()
    if outcome.status != "ok":
        raise SystemExit(outcome.error)
    print(json.dumps({"classify_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0,
                      "audio_s": outcome.duration_s, "segments": outcome.n_segments}))


# --------------------------------------------------------------------------------------
# Section 2: end to end
# --------------------------------------------------------------------------------------


def end_to_end(files: dict[str, Path], workdir: Path, *, repeat: int) -> tuple[Table, dict[str, dict]]:
    """CLI wall time and steady-state throughput for each generated file, best of ``repeat``."""
    t = Table(
        "End to end: audioclf classify FILE --out DIR -q (fresh process each)",
        ["file", "audio h", "CLI wall s", "CLI CPU s", "CLI x RT", "CLI peak RSS MiB", "steady s", "steady x RT",
         "steady slowest s", "steady peak RSS MiB", "start-up s", "segments"],
    )
    results = {}
    for key, path in files.items():
        audio_s = sf.info(path).duration
        print(f"  {path.name}: CLI x{repeat} ...", flush=True)
        cli_runs = [run_cli(path, workdir / "out" / f"cli-{key}") for _ in range(repeat)]
        cli = best_of(cli_runs)
        print(f"  {path.name}: steady state x{repeat} ...", flush=True)
        steady = best_steady([run_steady(path, workdir / "out" / f"steady-{key}") for _ in range(repeat)])
        results[key] = {"audio_s": audio_s, "cli": cli, "steady": steady}
        t.rows.append((path.name, audio_s / 3600, cli.wall_s, cli.cpu_s, f"{audio_s / cli.wall_s:,.0f}x", cli.maxrss_mb,
                       steady["total_s"], f"{audio_s / steady['total_s']:,.0f}x", steady["slowest_s"],
                       steady["maxrss_mb"], cli.wall_s - steady["total_s"], steady["segments"]))
    t.notes += [
        "x RT = audio seconds per wall second (real-time factor; higher is faster).",
        "CLI wall: process start, imports, model load (LiteRT by default), classify, Parquet write. CLI CPU s: "
        "user + system seconds of that process (all its threads; can exceed wall on several cores).",
        "steady: a fresh process loads the model and classifies samples/call-001.wav first (engine "
        "load and first run), then times Classifier.classify_one(FILE) + to_tables + ResultStore.write.",
        "start-up s = CLI wall - steady s: what one CLI invocation pays before and around the work.",
        "peak RSS: /usr/bin/time -f %M of that child alone; the steady process also holds the warm-up's state.",
        f"Best of {repeat} runs: shortest wall time, highest peak RSS; 'steady slowest s' shows the spread.",
    ]
    return t, results


def blas_table(path: Path, workdir: Path, *, repeat: int) -> Table:
    """Steady state with one BLAS thread (what the classifier sets) against numpy's default pool.

    The features' mel projection is a BLAS matrix product. OpenBLAS and
    TensorFlow each keep a pool of spinning worker threads, and on a machine
    with few cores the two pools starve each other and the decode thread.
    Runs alternate, so that a burst of other load hits both settings alike.
    """
    cores = len(os.sched_getaffinity(0))
    audio_s = sf.info(path).duration
    settings = {"1 BLAS thread (as the Classifier sets)": 1, f"{cores} BLAS threads (numpy's default)": cores}
    times: dict[str, list[float]] = {label: [] for label in settings}
    print(f"  1 vs {cores} BLAS threads, alternating, x{repeat} ...", flush=True)
    for _ in range(repeat):
        for label, n in settings.items():
            times[label].append(run_steady(path, workdir / "out" / "blas", blas_threads=n)["total_s"])
    t = Table(f"BLAS threads: steady state of {path.name}", ["setting", "runs", "fastest s", "median s",
                                                             "slowest s", "x RT (median)"])
    for label, ts in times.items():
        median = float(np.median(ts))
        t.rows.append((label, repeat, min(ts), median, max(ts), f"{audio_s / median:,.0f}x"))
    ratio = float(np.median(times[f"{cores} BLAS threads (numpy's default)"]) / np.median(
        times["1 BLAS thread (as the Classifier sets)"]))
    t.rows.append(("ratio default / one (median)", "", "", ratio, "", ""))
    t.notes += [
        f"{cores} cores, load average {load_average()} when this section ended. With numpy's default pool, "
        "OpenBLAS's spinning workers and TensorFlow's compete for the cores with the decode thread; the "
        "more other work the machine has, the larger the gap and the spread.",
    ]
    return t


# --------------------------------------------------------------------------------------
# Section 3: stage breakdown
# --------------------------------------------------------------------------------------

STAGES = ("decode", "mix + resample", "segment", "features", "inference", "write")


def stage_breakdown(path: Path, clf, out: Path) -> tuple[Stopwatch, int, int]:
    """Run the pipeline's stages one after another on one thread, timing each.

    The steps are the pipeline's own (``Classifier._stream``/``_segments``/
    ``_infer``), done with the public pieces: decode blocks of ``block_s``,
    mix to mono, one streaming resampler, ``SegmentedStream``, the bundle's
    ``windows`` and ``window_power``, ``segment_probs`` on pools of ``batch_windows``
    windows, then ``to_tables`` + ``ResultStore.write``.

    Returns
    -------
    (Stopwatch, int, int)
        Wall and CPU seconds per stage, number of segments, number of model windows.
    """
    from audioclf_core.audio_io import mix_to_mono, open_audio
    from audioclf_core.pipeline import MIX, RecordingOutcome, to_tables
    from audioclf_core.results import ResultStore
    from audioclf_core.segment import SegmentedStream

    bundle = clf.bundle
    sr = bundle.sample_rate
    fx, win, hop = bundle.features, bundle.window_samples, bundle.hop_samples
    sw = Stopwatch()
    rows: list[tuple] = []
    pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    n_windows = 0

    def infer() -> None:
        with sw("inference"):
            probs = clf.segment_probs([w for _, _, w, _ in pending], [pw for _, _, _, pw in pending])
        for (a, b, _, _), p in zip(pending, probs):
            rows.append((MIX, len(rows), a / sr, b / sr, p))
        pending.clear()

    def featurise(found) -> None:
        nonlocal n_windows
        for a, b, y in found:
            with sw("features"):
                w = fx.windows(y, window=win, hop=hop)
                pw = fx.window_power(y, window=win, hop=hop)
            pending.append((a, b, w, pw))
            n_windows += len(w)
            if sum(len(p[2]) for p in pending) >= clf.batch_windows:
                infer()

    shutil.rmtree(out, ignore_errors=True)
    with open_audio(str(path)) as reader:
        info = reader.info
        rs = None
        if info.sample_rate != sr:
            rs = soxr.ResampleStream(info.sample_rate, sr, 1, dtype="float32", quality=clf.resample_quality)
        stream = SegmentedStream(sr=sr, params=clf.silence)
        blocks = iter(reader.blocks(max(1, int(clf.block_s * info.sample_rate))))
        n_frames = 0
        while True:
            with sw("decode"):
                x = next(blocks, None)
            if x is None:
                break
            n_frames += len(x)
            with sw("mix + resample"):
                if x.shape[1] > 1:
                    x = mix_to_mono(x)
                if rs is not None:
                    x = rs.resample_chunk(np.ascontiguousarray(x), last=False)
            with sw("segment"):
                found = stream.push(x[:, 0])
            featurise(found)
        if rs is not None:
            with sw("mix + resample"):
                tail = rs.resample_chunk(np.zeros((0, 1), dtype=np.float32), last=True)
            with sw("segment"):
                found = stream.push(tail[:, 0])
            featurise(found)
        with sw("segment"):
            found = stream.flush()
        featurise(found)
    if pending:
        infer()
    with sw("write"):
        outcome = RecordingOutcome(str(path), duration_s=n_frames / info.sample_rate, sample_rate=info.sample_rate,
                                   channels=info.channels, codec=info.codec, segments=rows,
                                   covered_s=sum(r[3] - r[2] for r in rows))
        segments, recordings = to_tables([outcome], bundle, channels="mix")
        ResultStore(str(out)).write(segments, recordings, labels=bundle.labels)
    return sw, len(rows), n_windows


def stage_table(files: dict[str, Path], clf, workdir: Path, e2e: dict[str, dict], *, repeat: int) -> Table:
    """Stage breakdown for the given files, side by side; each stage's best of ``repeat``."""
    headers = ["stage"]
    for path in files.values():
        headers += [f"{path.name} s", "CPU s", "x RT", "share"]
    t = Table("Stage breakdown (one thread, stages in sequence, model warm)", headers)
    per_file = []
    for key, path in files.items():
        print(f"  {path.name} x{repeat} ...", flush=True)
        runs = [stage_breakdown(path, clf, workdir / "out" / f"stages-{key}") for _ in range(repeat)]
        wall = {stage: min(sw.wall.get(stage, 0.0) for sw, _, _ in runs) for stage in STAGES}
        cpu = {stage: min(sw.cpu.get(stage, 0.0) for sw, _, _ in runs) for stage in STAGES}
        # The real pipeline in this same process and state, so that it compares with the stages directly.
        out = workdir / "out" / f"pipeline-{key}"
        pipe = [timed_classify(path, clf, out) for _ in range(repeat)]
        wall["pipeline"], cpu["pipeline"] = min(r[0] for r in pipe), min(r[2] for r in pipe)
        steady = e2e.get(key, {}).get("steady", {})
        wall["steady"], cpu["steady"] = steady.get("total_s", float("nan")), float("nan")
        per_file.append((sf.info(path).duration, wall, cpu, runs[0][1], runs[0][2]))

    def add(label: str, names: Sequence[str]) -> None:
        row: list[object] = [label]
        for audio_s, wall, cpu, _, _ in per_file:
            w, c = sum(wall[n] for n in names), sum(cpu[n] for n in names)
            total = sum(wall[n] for n in STAGES)
            row += [w, c, f"{audio_s / w:,.0f}x" if w else "–", f"{100 * w / total:.0f}%"]
        t.rows.append(row)

    for stage in STAGES:
        add(stage, [stage])
    add("front end (decode..features)", STAGES[:4])
    add("sum of stages", STAGES)
    add("pipeline, this process (2 threads)", ["pipeline"])
    add("pipeline, steady subprocess", ["steady"])
    counts = ", ".join(f"{p.name}: {n_seg} segments, {n_win} windows"
                       for p, (_, _, _, n_seg, n_win) in zip(files.values(), per_file))
    t.notes += [
        "Each stage row is that stage's own cost (decode = AudioReader.blocks only; the next rows add the "
        "mono mix + soxr resample, SegmentedStream, bundle.features.windows, Predictor via "
        "Classifier.segment_probs on pools of batch_windows, to_tables + ResultStore.write).",
        "s = wall seconds; CPU s = CPU seconds of this whole process meanwhile (all threads: TensorFlow's "
        "and OpenBLAS's pools too; spinning idle workers count); share = % of the sum of stages' wall time.",
        "The pipeline overlaps the front end (a background thread) with inference (the caller's thread), so "
        "ideally it takes less than the sum: 'pipeline, this process' is Classifier.classify_one + to_tables + "
        "write with the same warm classifier, right after the stages; 'steady subprocess' is the end-to-end "
        "section's steady-state figure.",
        "'One thread' means no overlap between stages; TensorFlow's intra-op pool still uses every core "
        "during inference. Files are in the page cache, so decode is CPU, not disk.",
        f"Each figure: the shortest of {repeat} runs.",
        counts,
    ]
    return t


# --------------------------------------------------------------------------------------
# Section 4: reference (pydub)
# --------------------------------------------------------------------------------------


def pydub_ranges_ms(seg, *, min_silence_len: int, silence_thresh: float, keep_silence: int) -> np.ndarray:
    """The ``[start, end)`` ms of the chunks ``split_on_silence`` returns.

    ``split_on_silence`` returns audio, not offsets; this is its own range
    arithmetic (padding, halving overlaps, clamping) on ``detect_nonsilent``.
    """
    from pydub.silence import detect_nonsilent

    ranges = [[s - keep_silence, e + keep_silence] for s, e in detect_nonsilent(seg, min_silence_len, silence_thresh)]
    for a, b in zip(ranges, ranges[1:]):
        if b[0] < a[1]:
            a[1] = b[0] = (a[1] + b[0]) // 2
    return np.array([[max(s, 0), min(e, len(seg))] for s, e in ranges], dtype=np.int64).reshape(-1, 2)


def match_segments(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Pair segments of two sorted ``[start, end)`` lists one to one by greatest overlap, in order."""
    pairs, j = [], 0
    for i, (s, e) in enumerate(a.tolist()):
        best, best_overlap, k = None, 0, j
        while k < len(b) and b[k, 0] < e:
            overlap = min(e, b[k, 1]) - max(s, b[k, 0])
            if overlap > best_overlap:
                best, best_overlap = k, overlap
            k += 1
        if best is not None:
            pairs.append((i, best))
            j = best + 1
    return pairs


def best_time(fn, repeat: int):
    """Shortest wall time of ``repeat`` calls of ``fn()``, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def splitter_reference(excerpt: Path, *, repeat: int) -> tuple[Table, Table]:
    """pydub ``split_on_silence`` vs audioclf ``split_nonsilent``: speed and boundary agreement."""
    from pydub import AudioSegment
    from pydub.silence import split_on_silence

    from audioclf_core.audio_io import mix_to_mono, open_audio
    from audioclf_core.params import SilenceParams
    from audioclf_core.segment import split_nonsilent

    def load_ours() -> np.ndarray:
        with open_audio(str(excerpt)) as reader:
            return np.concatenate([mix_to_mono(b)[:, 0] for b in reader.blocks(1 << 20)])

    audio_s, sr = sf.info(excerpt).duration, sf.info(excerpt).samplerate
    params = SilenceParams(**AUDIOCLF_SPLIT)
    pydub_load, seg = best_time(lambda: AudioSegment.from_file(excerpt), repeat)
    pydub_split, chunks = best_time(lambda: split_on_silence(seg, **PYDUB_SPLIT), repeat)
    ours_load, y = best_time(load_ours, repeat)
    ours_split, bounds = best_time(lambda: split_nonsilent(y, sr=sr, params=params), repeat)

    # Boundaries, untimed: pydub's chunks carry no offsets, so recompute its ranges.
    theirs = pydub_ranges_ms(seg, **PYDUB_SPLIT)
    if len(theirs) != len(chunks):
        raise SystemExit(f"pydub range reconstruction gave {len(theirs)} chunks, split_on_silence {len(chunks)}")
    ours = bounds * 1000.0 / sr
    pairs = match_segments(theirs.astype(np.float64), ours)
    d_start = np.array([abs(theirs[i, 0] - ours[j, 0]) for i, j in pairs])
    d_end = np.array([abs(theirs[i, 1] - ours[j, 1]) for i, j in pairs])

    speed = Table(
        f"Reference: silence splitting of a {audio_s / 60:.0f}-minute 8 kHz excerpt",
        ["splitter", "load s", "split s", "total s", "split x RT", "segments"],
        [
            ("pydub split_on_silence (seek_step=1)", pydub_load, pydub_split, pydub_load + pydub_split,
             f"{audio_s / pydub_split:,.0f}x", len(chunks)),
            ("audioclf split_nonsilent", ours_load, ours_split, ours_load + ours_split,
             f"{audio_s / ours_split:,.0f}x", len(bounds)),
            ("ratio pydub / audioclf", pydub_load / ours_load, pydub_split / ours_split,
             (pydub_load + pydub_split) / (ours_load + ours_split), "", ""),
        ],
        [
            "pydub: AudioSegment.from_file, split_on_silence("
            f"{', '.join(f'{k}={v}' for k, v in PYDUB_SPLIT.items())}).",
            f"audioclf: open_audio blocks -> mono float32, split_nonsilent(SilenceParams("
            f"{', '.join(f'{k}={v}' for k, v in AUDIOCLF_SPLIT.items())})).",
            f"Each time: the shortest of {repeat} runs.",
        ],
    )
    agree = Table(
        "Reference: boundary agreement (pydub vs audioclf, same excerpt)",
        ["pydub segments", "audioclf segments", "matched", "max |d start| ms", "max |d end| ms",
         "median |d start| ms", "median |d end| ms"],
        [(len(theirs), len(ours), len(pairs),
          float(d_start.max()) if pairs else float("nan"), float(d_end.max()) if pairs else float("nan"),
          float(np.median(d_start)) if pairs else float("nan"), float(np.median(d_end)) if pairs else float("nan"))],
        ["Segments paired one to one by greatest overlap. audioclf tests 10 ms frames where pydub tests every "
         "1 ms, so boundaries are expected to agree within one frame (10 ms)."],
    )
    return speed, agree


def pydub_recipe(excerpt: Path, model: str) -> tuple[float, float, int, int]:
    """The reference recipe (``reference_recipe.py``: pydub, librosa features to the bundle's
    contract, one ``model.predict`` per chunk) on one file, timed without its start-up.

    Returns
    -------
    (float, float, int, int)
        Seconds of its stages, seconds of its start-up (imports, model load, librosa's and
        predict's first calls), chunks (= predict calls), windows.
    """
    from reference_recipe import STAGES, run_recipe

    res = run_recipe([excerpt], model=model, out_csv=None)
    return sum(res.wall_s[s] for s in STAGES), res.wall_s["start-up"], res.chunks, res.windows


def timed_classify(path: Path, clf, out: Path) -> tuple[float, int, float]:
    """``classify_one`` + ``to_tables`` + ``ResultStore.write`` with a warm classifier.

    Returns wall seconds, segments, and CPU seconds of the process meanwhile.
    """
    from audioclf_core.pipeline import to_tables
    from audioclf_core.results import ResultStore

    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    outcome = clf.classify_one(str(path))
    segments, recordings = to_tables([outcome], clf.bundle, channels=clf.channels)
    ResultStore(str(out)).write(segments, recordings, labels=clf.bundle.labels)
    return time.perf_counter() - t0, outcome.n_segments, time.process_time() - c0


def recipe_reference(excerpt: Path, clf, workdir: Path, *, repeat: int) -> Table:
    """A whole pass the reference recipe's way against ``Classifier.classify_one`` on the same excerpt
    (best of ``repeat``, both warm)."""
    audio_s = sf.info(excerpt).duration
    theirs = [pydub_recipe(excerpt, clf.bundle.path.as_posix()) for _ in range(repeat)]
    theirs_s, (_, start_up_s, n_chunks, n_win) = min(r[0] for r in theirs), theirs[0]
    ours = [timed_classify(excerpt, clf, workdir / "out" / "reference-classify") for _ in range(repeat)]
    ours_s, n_seg = min(r[0] for r in ours), ours[0][1]
    return Table(
        f"Reference: whole pass over the {audio_s / 60:.0f}-minute excerpt (in process, warm)",
        ["pipeline", "s", "x RT", "segments", "model calls"],
        [
            ("reference recipe: pydub + librosa + model.predict per chunk", theirs_s, f"{audio_s / theirs_s:,.0f}x",
             n_chunks, f"{n_chunks} predict ({n_win} windows)"),
            ("audioclf classify_one + to_tables + write", ours_s, f"{audio_s / ours_s:,.0f}x", n_seg,
             "batched (batch_windows=1024)"),
            ("ratio reference recipe / audioclf", theirs_s / ours_s, "", "", ""),
        ],
        [
            "Reference recipe (benchmarks/reference_recipe.py, the one bench_throughput.py runs): pydub decodes and "
            "converts to mono at the bundle's rate, cuts at silences with split_on_silence's rule and the bundle's "
            "silence parameters, librosa computes each chunk's features to the bundle's contract, and each chunk "
            "gets one model.predict with the bundle's Keras model. Its rows go to memory, not to a CSV.",
            f"Both warm: the recipe's start-up (imports, model load, librosa's and predict's first calls; "
            f"{start_up_s:.1f} s in the first pass) is left out, and audioclf's classifier was warmed on a sample. "
            f"Shortest of {repeat} runs each.",
            "audioclf also drops sounds under 100 ms and cuts sounds at 30 s (the bundle's min and max segment), "
            "hence a different segment count from the recipe's chunks.",
        ],
    )


# --------------------------------------------------------------------------------------
# Section 5: memory
# --------------------------------------------------------------------------------------


def memory_table(short: Path, short_run: ChildRun, long: Path, workdir: Path) -> Table:
    """Peak RSS of the CLI on a 44-second sample, the short file and the long one."""
    baseline = SAMPLES / "call-001.wav"
    print(f"  {baseline.name}: CLI ...", flush=True)
    base_run = run_cli(baseline, workdir / "out" / "cli-baseline")
    print(f"  {long.name}: CLI ...", flush=True)
    long_run = run_cli(long, workdir / "out" / "cli-long")
    rows = []
    for path, run in ((baseline, base_run), (short, short_run), (long, long_run)):
        audio_s = sf.info(path).duration
        rows.append((path.name, audio_s / 3600, path.stat().st_size / 1e6, run.wall_s,
                     f"{audio_s / run.wall_s:,.0f}x", run.maxrss_mb))
    rows.append(("ratio long / short", rows[2][1] / rows[1][1], rows[2][2] / rows[1][2], rows[2][3] / rows[1][3],
                 "", long_run.maxrss_mb / short_run.maxrss_mb))
    return Table(
        "Memory: peak RSS of audioclf classify, short vs long recording",
        ["file", "audio h", "size MB", "wall s", "x RT", "peak RSS MiB"],
        rows,
        [memory_verdict(peak_mib=max(r.maxrss_mb for r in (base_run, short_run, long_run)), short_mib=short_run.maxrss_mb,
                        long_mib=long_run.maxrss_mb, short_h=rows[1][1], long_h=rows[2][1]),
         f"{baseline.name} (44 s) shows the floor: interpreter, libraries and the model on the default engine (LiteRT). The short run "
         "is the end-to-end section's CLI run (highest of its runs); the others run once."],
    )


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=1.0, help="length of the main test recordings (default 1)")
    p.add_argument("--long-hours", type=float, default=10.0, help="length of the memory check's recording (default 10)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "audioclf-bench",
                   help="where generated audio is cached and outputs go (default /tmp/audioclf-bench)")
    p.add_argument("--skip-long", action="store_true", help="skip the long-recording memory check")
    p.add_argument("--seed", type=int, default=20240611, help="seed for choosing recordings and gains")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per timing; the shortest is reported, which filters out other load (default 3)")
    p.add_argument("--results", type=writable_file, default=RESULTS_MD,
                   help="Markdown file whose 'classify' section is rewritten (default benchmarks/RESULTS.md)")
    # Internal: the steady-state measurement runs this script again in a fresh process.
    p.add_argument("--steady-worker", nargs=2, metavar=("FILE", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--worker-blas-threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.hours <= 0 or args.long_hours <= 0:
        p.error("--hours and --long-hours must be positive")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def section(title: str) -> None:
    print(f"\n### {title}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.steady_worker:
        steady_worker(*args.steady_worker, blas_threads=args.worker_blas_threads)
        return
    run = begin("bench_classify.py", argv)
    started = time.perf_counter()
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    tables: list[Table] = []

    def show(t: Table) -> None:
        tables.append(t)
        print(t.text(), "\n", flush=True)


    section("1. test audio")
    sources = load_sources(SAMPLES)
    files = ensure_call_audio(workdir, hours=args.hours, keys=list(FORMATS), seed=args.seed, sources=sources)
    excerpt = ensure_excerpt(files["8k"], workdir / f"call-{EXCERPT_S / 60:g}min-of-{args.hours:g}h-8k.wav",
                             seconds=EXCERPT_S)
    listed = dict(files)
    long = None
    if not args.skip_long:
        long = ensure_call_audio(workdir, hours=args.long_hours, keys=["8k"], seed=args.seed, sources=sources)["8k"]
        listed["long"] = long
    listed["excerpt"] = excerpt
    show(audio_table(listed))
    # Fresh files are still being written back to disk; let that finish before anything is timed.
    os.sync()

    section("2. end to end")
    t, e2e = end_to_end(files, workdir, repeat=args.repeat)
    show(t)
    show(blas_table(files["8k"], workdir, repeat=max(args.repeat, 3)))

    # Everything below runs in this process with one warm classifier, as a long-lived worker would.
    from audioclf_core.bundle import DEFAULT_MODEL, load_bundle
    from audioclf_core.pipeline import Classifier

    clf = Classifier(load_bundle(DEFAULT_MODEL))
    clf.classify_one(str(SAMPLES / "call-001.wav"))

    section("3. stage breakdown")
    show(stage_table({k: files[k] for k in ("8k", "44k")}, clf, workdir, e2e, repeat=args.repeat))

    section("4. reference: pydub")
    for t in splitter_reference(excerpt, repeat=args.repeat):
        show(t)
    show(recipe_reference(excerpt, clf, workdir, repeat=args.repeat))

    if long is not None:
        section("5. memory")
        show(memory_table(files["8k"], e2e["8k"]["cli"], long, workdir))

    total_s = time.perf_counter() - started
    print(f"load average at end: {load_average()}")
    print(f"benchmark took {total_s / 60:.1f} min")
    write_results("classify", "audioclf classify in detail: end to end, stages, BLAS threads, pydub excerpt",
                  tables, run=run, took_s=total_s, path=args.results)
    print(f"wrote the classify section of {args.results}")


if __name__ == "__main__":
    main()
