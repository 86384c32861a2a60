#!/usr/bin/env python
"""The reference recipe: how a user would classify a folder of calls without audioclf.

Usage::

    .venv/bin/python benchmarks/reference_recipe.py FOLDER_OR_FILES... --model speech-music-noise \\
        --out rows.csv [--timings-json stages.json]

This is the recipe that published audio-classification projects use, written
here from pydub's and librosa's documented APIs, and given the same job as
``audioclf classify`` so that the two can be timed against each other. For
each file:

1. pydub decodes it (``AudioSegment.from_file``: its own WAV reader for PCM,
   ffmpeg for everything else) and converts it to mono at the bundle's sample
   rate (``set_channels(1).set_frame_rate(sr)``). The issue names 16 kHz; the
   shipped trained bundles are 8 kHz, so the recipe converts to the bundle's
   ``sample_rate``, which is what the model needs.
2. pydub cuts it at silences with the bundle's silence parameters
   (``min_silence_len``, ``silence_thresh``, ``keep_silence``): the chunks of
   ``pydub.silence.split_on_silence``. That function returns audio but not
   where it was, and a CSV of results needs the times, so the recipe calls
   ``detect_nonsilent`` and applies ``split_on_silence``'s own ``keep_silence``
   rule (pad each range, split overlaps in the middle, clamp to the file):
   pydub 0.25.1's ``split_on_silence`` is exactly that, so the chunks and the
   cost are the same (``--check-split`` checks it on every file).
3. Each chunk gets its own features from librosa, to the bundle's feature
   contract: log-mel (or MFCC, or a magnitude spectrogram, as the manifest
   says) from ``librosa.feature.melspectrogram`` without centre padding,
   periodic Hann window of ``win_length`` in ``n_fft``, Slaney mel, then
   ``power_to_db(ref=1, amin=1e-10, top_db=None)``. The chunk's frames are cut
   into the model's windows (``window_s``, every ``hop_s``, plus one window
   that ends at the chunk's end; a chunk shorter than a window is zero-padded
   on both sides), and each window is normalised to zero mean and unit
   variance.
4. Each chunk gets its own ``model.predict`` call on its windows, with the
   bundle's Keras model (loaded with ``audioclf_core.bundle.load_bundle``, so
   its weights are hash-checked). A chunk's probabilities are the mean of its
   windows'.
5. One row per chunk goes to a CSV: file, chunk, start and end seconds, label,
   confidence and one probability per label.

Importable: :func:`run_recipe` returns the rows and wall seconds per stage
(``decode``, ``resample``, ``segment``, ``features``, ``inference``, ``write``,
and ``start-up`` for imports and the model load), which
``bench_throughput.py`` reports next to audioclf's own stages.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from report import writable_file

from audioclf_core.errors import AudioClfError

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".gsm"}
STAGES = ("decode", "resample", "segment", "features", "inference", "write")
_EPS = 1e-6  # added to a window's standard deviation, as the bundle's normalisation does


@dataclass
class RecipeResult:
    """What a pass of the recipe produced and what each stage cost."""

    rows: list[dict] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    audio_s: float = 0.0  # decoded audio, seconds
    files: int = 0
    chunks: int = 0
    windows: int = 0

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.wall_s[stage] += time.perf_counter() - t0

    def summary(self) -> dict:
        """Counts and seconds per stage, JSON-ready."""
        return {"files": self.files, "audio_s": self.audio_s, "chunks": self.chunks, "windows": self.windows,
                "predict_calls": self.chunks, "wall_s": dict(self.wall_s)}


def list_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given, and audio files found under folders, sorted."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise SystemExit(f"error: {item}: no such file or folder")
    if not out:
        raise SystemExit(f"error: no audio files in {' '.join(inputs)}")
    return out


def chunk_ranges_ms(seg, *, min_silence_len: int, silence_thresh: float, keep_silence: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ms of the chunks ``split_on_silence`` would return.

    ``detect_nonsilent`` with ``split_on_silence``'s ``keep_silence`` rule:
    pad each sound, give overlapping pads half each, clamp to the audio.
    """
    from pydub.silence import detect_nonsilent

    ranges = [[s - keep_silence, e + keep_silence] for s, e in detect_nonsilent(seg, min_silence_len, silence_thresh)]
    for a, b in zip(ranges, ranges[1:]):
        if b[0] < a[1]:
            a[1] = b[0] = (a[1] + b[0]) // 2
    return [(max(s, 0), min(e, len(seg))) for s, e in ranges]


def check_same_chunks(seg, **silence) -> bool:
    """True when :func:`chunk_ranges_ms` cuts ``seg`` exactly as ``split_on_silence`` does."""
    from pydub.silence import split_on_silence

    ours = [seg[s:e] for s, e in chunk_ranges_ms(seg, **silence)]
    theirs = split_on_silence(seg, **silence)
    return len(ours) == len(theirs) and all(a.raw_data == b.raw_data for a, b in zip(ours, theirs))


def to_float(seg) -> np.ndarray:
    """A mono pydub segment's samples as float32 in [-1, 1), shape ``(n,)``."""
    y = np.array(seg.get_array_of_samples(), dtype=np.float32)
    return y / float(1 << (8 * seg.sample_width - 1))


def frame_features(y: np.ndarray, *, sr: int, fp) -> np.ndarray:
    """librosa features of every frame of ``y`` to the bundle's contract, shape ``(frames, features)``."""
    import librosa

    stft_args = dict(n_fft=fp.n_fft, hop_length=fp.hop_length, win_length=fp.win_length, window="hann",
                     center=False)
    if fp.kind == "spectrogram":
        return np.abs(librosa.stft(y, **stft_args)).T
    power = librosa.feature.melspectrogram(y=y, sr=sr, power=2.0, n_mels=fp.n_mels, fmin=fp.fmin, fmax=fp.fmax,
                                           htk=False, norm="slaney", **stft_args)
    logmel = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
    if fp.kind == "mfcc":
        return librosa.feature.mfcc(S=logmel, n_mfcc=fp.n_mfcc, dct_type=2, norm="ortho").T
    return logmel.T


def chunk_windows(y: np.ndarray, *, sr: int, fp, window: int, hop: int, normalize: bool) -> np.ndarray:
    """One chunk's model windows, shape ``(n_windows, frames_per_window, features)``, float32."""
    if y.size < window:
        left = (window - y.size) // 2
        y = np.pad(y, (left, window - y.size - left))
    per_window = 1 + (window - fp.n_fft) // fp.hop_length
    step = hop // fp.hop_length
    n_win = 1 + (y.size - window) // hop
    covered = (n_win - 1) * hop + window
    frames = frame_features(y[:covered], sr=sr, fp=fp)
    x = np.stack([frames[i * step : i * step + per_window] for i in range(n_win)])
    if covered < y.size:  # one more window, ending at the chunk's end
        x = np.concatenate([x, frame_features(y[-window:], sr=sr, fp=fp)[None]])
    x = x.astype(np.float32)
    if normalize:
        x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + _EPS)
    return x


def run_recipe(paths: Sequence[Path], *, model: str, out_csv: Path | None, check_split: bool = False) -> RecipeResult:
    """Classify ``paths`` the reference way; rows and wall seconds per stage.

    Parameters
    ----------
    paths : sequence of Path
        Audio files, processed one after the other.
    model : str
        A shipped bundle's name, or a bundle folder or archive.
    out_csv : Path, optional
        Where the rows go; None keeps them in memory only.
    check_split : bool
        Also run ``split_on_silence`` on every file and stop if its chunks
        differ from the recipe's (untimed, but it doubles the wall time).
    """
    res = RecipeResult()
    with res.timed("start-up"):
        import librosa
        from pydub import AudioSegment

        from audioclf_core.bundle import load_bundle

        bundle = load_bundle(model)
        keras_model = bundle.model
        m = bundle.manifest
        fp, sr, labels = m.features, bundle.sample_rate, bundle.labels
        window, hop = bundle.window_samples, bundle.hop_samples
        silence = dict(min_silence_len=int(round(m.silence.min_silence_ms)), silence_thresh=m.silence.threshold_dbfs,
                       keep_silence=int(round(m.silence.keep_silence_ms)))
        # First calls compile (librosa's numba kernels) or build (predict's function): once per process.
        librosa.feature.melspectrogram(y=np.zeros(window, dtype=np.float32), sr=sr, n_fft=fp.n_fft, center=False)
        keras_model.predict(np.zeros((1, *bundle.input_shape), dtype=np.float32), verbose=0)

    for path in paths:
        with res.timed("decode"):
            seg = AudioSegment.from_file(path)
        with res.timed("resample"):
            seg = seg.set_channels(1).set_frame_rate(sr)
        res.files += 1
        res.audio_s += len(seg) / 1000.0
        with res.timed("segment"):
            ranges = chunk_ranges_ms(seg, **silence)
            chunks = [seg[s:e] for s, e in ranges]
        if check_split and not check_same_chunks(seg, **silence):
            raise SystemExit(f"error: {path}: the recipe's chunks differ from split_on_silence's")
        for i, ((start, end), chunk) in enumerate(zip(ranges, chunks)):
            with res.timed("features"):
                x = chunk_windows(to_float(chunk), sr=sr, fp=fp, window=window, hop=hop,
                                  normalize=fp.normalize == "window")
            with res.timed("inference"):
                probs = keras_model.predict(x, verbose=0).mean(axis=0)
            best = int(np.argmax(probs))
            res.rows.append({"file": str(Path(path).resolve()), "chunk": i, "start_s": start / 1000.0,
                             "end_s": end / 1000.0, "label": labels[best], "confidence": float(probs[best]),
                             **{f"p_{name}": float(p) for name, p in zip(labels, probs)}})
            res.chunks += 1
            res.windows += len(x)
    if out_csv is not None:
        with res.timed("write"):
            fields = ["file", "chunk", "start_s", "end_s", "label", "confidence"] + [f"p_{n}" for n in labels]
            with open(out_csv, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(res.rows)
    return res


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    p.add_argument("--model", default="speech-music-noise", help="shipped bundle name or bundle path")
    p.add_argument("--out", type=writable_file, required=True, help="CSV file for the rows")
    p.add_argument("--timings-json", type=writable_file, help="also write counts and seconds per stage here")
    p.add_argument("--check-split", action="store_true",
                   help="check every file's chunks against split_on_silence's (for checking, not timing)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        res = run_recipe(list_inputs(args.inputs), model=args.model, out_csv=args.out, check_split=args.check_split)
    except AudioClfError as exc:  # a bad --model: one line, as audioclf prints it
        p.exit(1, f"error: {exc}\n")
    summary = res.summary() | {"total_s": time.perf_counter() - t0}
    if args.timings_json:
        args.timings_json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"{res.files} files, {res.audio_s / 3600:.2f} h of audio, {res.chunks} chunks, {res.windows} windows "
          f"in {summary['total_s']:.1f} s; rows in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
