#!/usr/bin/env python3
"""Build the demo call recordings and the unit-test fixtures from real, CC-BY-SA audio.

Two modes share one code path so that both data sets can be rebuilt bit for bit:

* ``python scripts/make_samples.py [--out samples]`` writes telephone-style demo
  recordings (mono PCM16 WAV, a 2-channel WAV, a 16 kHz FLAC and a mu-law WAV),
  ``truth.json`` with the exact placement of every part, and ``SOURCES.md``.
* ``python scripts/make_samples.py --fixtures tests/data`` writes short, labelled
  real clips (speech prompts and hold-music excerpts), ``labels.csv`` and
  ``SOURCES.md``.

Speech comes from the Asterisk core prompts (Allison Smith, English; June Wallack,
Canadian French), hold music from the Asterisk "opsound" music-on-hold set; both are
CC-BY-SA-3.0. Everything labelled ``noise`` is synthesised here (coloured noise, mains
hum, ringback and DTMF tones) and marked ``synthetic`` in ``truth.json``.

The Debian packages are installed with ``apt-get`` when their folders are missing and
the script runs as root; otherwise it stops and prints the command to run.

Only numpy, soundfile, soxr, scipy and the standard library are used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from audioclf_core.errors import OutputError
from audioclf_core.storage import check_local_folder

# --------------------------------------------------------------------------------------
# Debian install locations and package facts (checked on Debian 12).
# --------------------------------------------------------------------------------------
ALLISON_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
JUNE_DIR = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
MOH_DIR = Path("/usr/share/asterisk/moh")

PKG_EN = "asterisk-core-sounds-en-wav"
PKG_FR = "asterisk-core-sounds-fr-wav"
PKG_MOH = "asterisk-moh-opsound-wav"
PACKAGE_DIRS = {PKG_EN: ALLISON_DIR, PKG_FR: JUNE_DIR, PKG_MOH: MOH_DIR}

LICENCE = "CC-BY-SA-3.0"
LICENCE_URL = "https://creativecommons.org/licenses/by-sa/3.0/"
UPSTREAM_URL = "http://downloads.asterisk.org/pub/telephony/sounds/"

# Who made what, copied from /usr/share/doc/<package>/copyright (attribution is the
# one thing CC-BY-SA insists on, so it is kept next to the data it credits).
VOICES = {
    "allison": {
        "package": PKG_EN,
        "dir": ALLISON_DIR,
        "name": "Allison Smith",
        "credit": "Recorded by Allison Smith (http://www.theivrvoice.com), (C) 2003-2010; "
        "financial contributions by Digium, Inc. (http://www.digium.com)",
        "language": "en-US",
    },
    "june": {
        "package": PKG_FR,
        "dir": JUNE_DIR,
        "name": "June Wallack",
        "credit": "Recorded by June Wallack (http://www.junewallack.com), (C) 2006-2008; translated "
        "into French by Clod Patry, Kristopher Lalletti and June Wallack; financial contributions "
        "by Digium, Inc., Unlimitel and BGM Informatique",
        "language": "fr-CA",
    },
}
# track stem -> (short credit, full credit)
MOH_TRACKS = {
    "macroform-cold_day": ("Macroform, \"Cold Day\"", "Paul Shuler (Macroform), (C) 2009, http://macroform.bandcamp.com/"),
    "macroform-robot_dity": ("Macroform, \"Robot Dity\"", "Paul Shuler (Macroform), (C) 2009, http://macroform.bandcamp.com/"),
    "macroform-the_simplicity": (
        "Macroform, \"The Simplicity\"",
        "Paul Shuler (Macroform), (C) 2009, http://macroform.bandcamp.com/",
    ),
    "manolo_camp-morning_coffee": (
        "Manolo Camp, \"Morning Coffee\"",
        "Manolo Camp, (C) 2009, http://ccmixter.org/people/ManoloCamp",
    ),
    "reno_project-system": ("Reno Project, \"System\"", "Reno Project, (C) 2008, http://www.jamendo.com/en/album/23661"),
}

# --------------------------------------------------------------------------------------
# Levels and timing. The splitter the demo is made for cuts at >= 500 ms below -50 dBFS;
# gaps are drawn from 0.8-1.5 s and kept far below that threshold so it always finds them.
# --------------------------------------------------------------------------------------
FRAME_S = 0.010  # 10 ms RMS frames for trimming and checking
TRIM_DBFS = -60.0  # a frame louder than this counts as "sound" when trimming sources
SPLIT_DBFS = -50.0  # silence threshold of the splitter the demo targets
MIN_SILENCE_S = 0.5  # minimum silence of that splitter
GAP_RANGE_S = (0.8, 1.5)
EDGE_S = 0.5  # silence before the first and after the last part
PEAK_MAX_DBFS = -1.0  # headroom so PCM16 / mu-law never clip
SOURCE_RATE = 8000  # every package file is 8 kHz mono PCM16
DEFAULT_SEED = 20240611

FIXTURE_SPEECH = ["queue-thereare", "transfer", "vm-nobodyavail", "digits/1", "digits/5", "digits/9"]
FIXTURE_MUSIC = [("macroform-the_simplicity", 4.0), ("reno_project-system", 4.0)]


# --------------------------------------------------------------------------------------
# Small signal helpers
# --------------------------------------------------------------------------------------
def db(x: float) -> float:
    """Amplitude ratio to decibels, floored so silence gives a finite number."""
    return float(20.0 * np.log10(max(float(x), 1e-12)))


def from_db(d: float) -> float:
    """Decibels to amplitude ratio."""
    return float(10.0 ** (d / 20.0))


def frame_dbfs(x: np.ndarray, sr: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of consecutive frames in dBFS (full scale = 1.0).

    Parameters
    ----------
    x : np.ndarray
        Mono signal, float in [-1, 1].
    sr : int
        Sample rate in Hz.
    frame_s : float
        Frame length in seconds; a last partial frame is zero-padded.

    Returns
    -------
    np.ndarray
        One level per frame, -240 dBFS for digital silence.
    """
    n = int(round(sr * frame_s))
    k = -(-len(x) // n)
    padded = np.zeros(k * n)
    padded[: len(x)] = x
    rms = np.sqrt(np.mean(padded.reshape(k, n) ** 2, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-12))


def trim_bounds(x: np.ndarray, sr: int, threshold_dbfs: float = TRIM_DBFS) -> tuple[int, int]:
    """Sample range from the first to the last frame louder than ``threshold_dbfs``.

    Frame-aligned on purpose: the truth boundaries then say exactly which 10 ms frames
    carry sound, which is what a frame-based splitter sees.

    Returns
    -------
    tuple of int
        ``(start, end)`` with ``end`` exclusive; ``(0, 0)`` when nothing is louder.
    """
    n = int(round(sr * FRAME_S))
    loud = np.nonzero(frame_dbfs(x, sr) > threshold_dbfs)[0]
    if len(loud) == 0:
        return 0, 0
    return int(loud[0] * n), int(min(len(x), (loud[-1] + 1) * n))


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a boolean array."""
    if not mask.any():
        return 0
    padded = np.concatenate([[0], mask.astype(np.int8), [0]])
    edges = np.diff(padded)
    return int((np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]).max())


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with soxr (very high quality), a no-op when the rates match."""
    if sr_in == sr_out:
        return x.astype(np.float64, copy=True)
    return soxr.resample(x, sr_in, sr_out, quality="VHQ").astype(np.float64)


def fade(x: np.ndarray, sr: int, seconds: float = 0.02) -> np.ndarray:
    """Raised-cosine fade in and out, so excerpts cut mid-note do not click."""
    n = min(int(sr * seconds), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    y = x.copy()
    y[:n] *= ramp
    y[len(y) - n :] *= ramp[::-1]
    return y


def highpass(x: np.ndarray, sr: int, cutoff: float = 60.0) -> np.ndarray:
    """Remove sub-audio drift (brown noise wanders) that would bias frame RMS."""
    sos = signal.butter(2, cutoff, btype="highpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Quantise float [-1, 1) to int16 ourselves so digital silence stays exactly 0.

    Uses the same 32768 scale soundfile reads with, so a 0 dB copy is bit-exact.
    """
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------------------
# Source access
# --------------------------------------------------------------------------------------
def ensure_packages(packages: list[str], allow_install: bool) -> None:
    """Install the Debian packages whose folders are missing, or explain how to.

    Parameters
    ----------
    packages : list of str
        Package names, keys of ``PACKAGE_DIRS``.
    allow_install : bool
        When False, never call apt-get; just report what is missing.
    """
    missing = [p for p in packages if not PACKAGE_DIRS[p].is_dir()]
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", *missing]
    can = allow_install and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0
    if can:
        print(f"source folders missing, running: {' '.join(cmd)}", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(cmd, env=env).returncode == 0 and all(PACKAGE_DIRS[p].is_dir() for p in missing):
            return
    sys.exit(
        "error: the source recordings are not installed: "
        + ", ".join(f"{p} ({PACKAGE_DIRS[p]})" for p in missing)
        + f"\ninstall them with:  sudo {' '.join(cmd)}"
    )


def package_version(package: str) -> str:
    """Installed Debian version, recorded so a rebuild can be compared like for like."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_source(path: Path) -> np.ndarray:
    """Read one package file as float64 mono at its native 8 kHz."""
    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    if sr != SOURCE_RATE:
        raise ValueError(f"{path}: expected {SOURCE_RATE} Hz, got {sr}")
    return x[:, 0]


@dataclass
class Clip:
    """One rendered piece of audio, ready to place, and where it came from."""

    audio: np.ndarray
    label: str
    source: str  # "<package>:<path>" or "synthetic:<what>"
    licence: str
    synthetic: bool
    source_start_s: float | None = None  # trimmed extent inside the source file
    source_end_s: float | None = None
    gain_db: float = 0.0
    note: str = ""


@dataclass
class SourceLog:
    """Every source file used, for SOURCES.md."""

    used: dict[str, dict] = field(default_factory=dict)

    def add(self, key: str, where: str, **info) -> None:
        entry = self.used.setdefault(key, dict(info, used_in=[]))
        if where not in entry["used_in"]:
            entry["used_in"].append(where)


def prompt_clip(voice: str, name: str, sr: int, rng: np.random.Generator, gain_range=(-3.0, 1.0)) -> Clip:
    """A speech prompt, resampled, level-jittered and trimmed at -60 dBFS frames.

    Trimming happens last, at the output rate and level, because that is the signal the
    truth describes.
    """
    v = VOICES[voice]
    path = v["dir"] / f"{name}.wav"
    x = resample(read_source(path), SOURCE_RATE, sr)
    gain = float(rng.uniform(*gain_range))
    # Cap the gain so a loud prompt keeps 1 dB of headroom.
    gain = min(gain, PEAK_MAX_DBFS - db(np.abs(x).max()))
    x *= from_db(gain)
    a, b = trim_bounds(x, sr)
    return Clip(
        audio=x[a:b],
        label="speech",
        source=f"{v['package']}:{path}",
        licence=LICENCE,
        synthetic=False,
        source_start_s=round(a / sr, 6),
        source_end_s=round(b / sr, 6),
        gain_db=round(gain, 2),
    )


_TRACK_CACHE: dict[str, np.ndarray] = {}


def find_music_window(x: np.ndarray, seconds: float, rng: np.random.Generator, target_rms_dbfs: float | None):
    """Pick a hold-music window without quiet passages.

    The opsound tracks have silent stretches of up to 3 s and long fade-outs; a window
    containing one would be split by the silence splitter and make the truth wrong. A
    window is accepted when, at the level it will be placed at, no run of 10 ms frames
    below -48 dBFS lasts 150 ms or more, under 3 % of frames are below it, and both ends
    are clearly audible.

    Returns
    -------
    tuple
        ``(start_sample, gain_db)`` at the source rate.
    """
    n = int(seconds * SOURCE_RATE)
    step = SOURCE_RATE // 2
    starts = np.arange(5 * SOURCE_RATE, len(x) - n - 5 * SOURCE_RATE, step)
    for s in rng.permutation(starts):
        w = x[s : s + n]
        rms = db(np.sqrt(np.mean(w**2)))
        gain = 0.0 if target_rms_dbfs is None else target_rms_dbfs - rms
        gain = min(gain, PEAK_MAX_DBFS - db(np.abs(w).max()))
        lv = frame_dbfs(w, SOURCE_RATE) + gain
        quiet = lv < SPLIT_DBFS + 2.0
        if longest_run(quiet) >= 15 or quiet.mean() > 0.03:
            continue
        if lv[:10].mean() < -40.0 or lv[-10:].mean() < -40.0:
            continue
        return int(s), float(gain)
    raise RuntimeError(f"no usable {seconds} s music window found")


def music_clip(
    track: str, seconds: float, sr: int, rng: np.random.Generator, target_rms_dbfs: float | None
) -> Clip:
    """A faded hold-music excerpt at ``sr``; ``target_rms_dbfs=None`` keeps the native level."""
    path = MOH_DIR / f"{track}.wav"
    if track not in _TRACK_CACHE:
        _TRACK_CACHE[track] = read_source(path)
    x = _TRACK_CACHE[track]
    s, gain = find_music_window(x, seconds, rng, target_rms_dbfs)
    n = int(seconds * SOURCE_RATE)
    # Resample with a margin around the window so the filter has real context at the cut.
    margin = SOURCE_RATE // 4
    lo, hi = max(0, s - margin), min(len(x), s + n + margin)
    y = resample(x[lo:hi], SOURCE_RATE, sr)
    off = int(round((s - lo) * sr / SOURCE_RATE))
    y = fade(y[off : off + int(round(seconds * sr))], sr) * from_db(gain)
    a, b = trim_bounds(y, sr)
    return Clip(
        audio=y[a:b],
        label="music",
        source=f"{PKG_MOH}:{path}",
        licence=LICENCE,
        synthetic=False,
        source_start_s=round(s / SOURCE_RATE + a / sr, 6),
        source_end_s=round(s / SOURCE_RATE + b / sr, 6),
        gain_db=round(gain, 2),
        note="excerpt, 20 ms fades",
    )


# --------------------------------------------------------------------------------------
# Synthetic noise. Generated at 8 kHz (telephone band) and resampled like the real
# sources, so that bandwidth does not give the class away in the 16 kHz recording.
# --------------------------------------------------------------------------------------
def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise by spectral shaping of white noise."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / np.sqrt(f), n)
    return y / np.sqrt(np.mean(y**2))


def brown_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS brown (1/f^2 power) noise: integrated white noise, drift removed."""
    y = highpass(np.cumsum(rng.standard_normal(n)), sr)
    return y / np.sqrt(np.mean(y**2))


def tone_burst(freqs: list[float], seconds: float, sr: int, amp: float) -> np.ndarray:
    """Sum of sines with 5 ms ramps, the shape exchanges use for call-progress tones."""
    t = np.arange(int(round(seconds * sr))) / sr
    y = sum(np.sin(2 * np.pi * f * t) for f in freqs) * amp / len(freqs)
    return fade(y, sr, 0.005)


def synth_clip(kind: str, seconds: float, rng: np.random.Generator, sr: int) -> Clip:
    """Render one synthetic ``noise`` part.

    Parameters
    ----------
    kind : str
        ``ringback`` (UK double ring 400+450 Hz, 0.4 on / 0.2 off / 0.4 on),
        ``dtmf`` (a few random digits, 120 ms tone / 80 ms pause), ``fan``
        (brown + pink noise with a slow swell) or ``hum`` (50 Hz mains hum with
        harmonics over hiss).
    seconds : float
        Length for the noise kinds; tones have their own cadence.
    """
    r = SOURCE_RATE
    if kind == "ringback":
        on = tone_burst([400.0, 450.0], 0.4, r, from_db(-14.0))
        y = np.concatenate([on, np.zeros(int(0.2 * r)), on])
        what = "UK ringback double ring, 400+450 Hz, 0.4 s on / 0.2 s off / 0.4 s on"
    elif kind == "dtmf":
        low = [697.0, 770.0, 852.0, 941.0]
        high = [1209.0, 1336.0, 1477.0]
        keys = "123456789*0#"
        digits = "".join(rng.choice(list(keys), size=6))
        parts = []
        for d in digits:
            i = keys.index(d)
            parts += [tone_burst([low[i // 3], high[i % 3]], 0.12, r, from_db(-12.0)), np.zeros(int(0.08 * r))]
        y = np.concatenate(parts[:-1])
        what = f"DTMF digits '{digits}', 120 ms tone / 80 ms pause"
    elif kind == "fan":
        n = int(seconds * r)
        t = np.arange(n) / r
        swell = 1.0 + 0.35 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))
        y = (0.8 * brown_noise(n, r, rng) + 0.6 * pink_noise(n, rng)) * swell
        y = fade(y / np.sqrt(np.mean(y**2)) * from_db(-26.0), r, 0.05)
        what = "brown + pink noise with a 0.3 Hz swell (fan / traffic-like)"
    elif kind == "hum":
        n = int(seconds * r)
        t = np.arange(n) / r
        y = sum(np.sin(2 * np.pi * 50.0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 12))
        y = y / np.sqrt(np.mean(y**2)) + 0.5 * highpass(rng.standard_normal(n), r, 300.0)
        y = fade(y / np.sqrt(np.mean(y**2)) * from_db(-24.0), r, 0.05)
        what = "50 Hz mains hum with harmonics to 550 Hz over white hiss"
    else:
        raise ValueError(kind)
    y = resample(y, r, sr)
    gain = float(rng.uniform(-2.0, 2.0))
    y *= from_db(gain)
    a, b = trim_bounds(y, sr)
    return Clip(
        audio=y[a:b],
        label="noise",
        source=f"synthetic:{kind}",
        licence=LICENCE,
        synthetic=True,
        gain_db=round(gain, 2),
        note=what,
    )


def noise_floor(n: int, sr: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Continuous low line hiss (pink, 60 Hz high-passed) at ``dbfs`` RMS."""
    y = highpass(pink_noise(n, rng), sr)
    return y / np.sqrt(np.mean(y**2)) * from_db(dbfs)


# --------------------------------------------------------------------------------------
# Recording layouts. Each event is a part on one or more channels; parts follow each
# other in time (never overlap), separated by a random gap, so the mono downmix of the
# stereo call splits cleanly too.
# --------------------------------------------------------------------------------------
@dataclass
class Recording:
    """Layout and format of one demo recording."""

    name: str
    sr: int
    channels: int
    fmt: str  # soundfile format
    subtype: str
    floors: list  # per channel: None (digital silence) or hiss level in dBFS
    events: list  # (channels, kind, args...)
    description: str


RECORDINGS = [
    Recording(
        name="call-001.wav",
        sr=8000,
        channels=1,
        fmt="WAV",
        subtype="PCM_16",
        floors=[None],
        description="inbound call, digital silence between parts: ringback, queue announcements, "
        "hold music, greeting, DTMF, goodbye",
        events=[
            ([0], "synth", "ringback", 0.0),
            ([0], "synth", "ringback", 0.0),
            ([0], "prompt", "allison", "queue-periodic-announce"),
            ([0], "prompt", "allison", "queue-youarenext"),
            ([0], "music", "macroform-cold_day", 9.0),
            ([0], "prompt", "allison", "demo-thanks"),
            ([0], "synth", "dtmf", 0.0),
            ([0], "prompt", "allison", "vm-nobodyavail"),
            ([0], "prompt", "allison", "vm-goodbye"),
        ],
    ),
    Recording(
        name="call-002-stereo.wav",
        sr=8000,
        channels=2,
        fmt="WAV",
        subtype="PCM_16",
        floors=[None, -72.0],
        description="two-leg call: channel 0 agent (Allison, en), channel 1 customer (June, fr-CA, "
        "with -72 dBFS line hiss); hold music on both legs",
        events=[
            ([0], "prompt", "allison", "dir-welcome"),
            ([1], "prompt", "june", "vm-tocallnum"),
            ([0], "prompt", "allison", "agent-user"),
            ([1], "prompt", "june", "dir-first"),
            ([0], "prompt", "allison", "pls-hold-while-try"),
            ([0, 1], "music", "reno_project-system", 8.0),
            ([0], "prompt", "allison", "queue-thankyou"),
            ([1], "prompt", "june", "cannot-complete-as-dialed"),
            ([0], "prompt", "allison", "transfer"),
        ],
    ),
    Recording(
        name="call-003.flac",
        sr=16000,
        channels=1,
        fmt="FLAC",
        subtype="PCM_16",
        floors=[-66.0],
        description="16 kHz FLAC (sources upsampled from 8 kHz) with -66 dBFS line hiss throughout: "
        "speech, fan-like noise, hold music, speech",
        events=[
            ([0], "prompt", "allison", "dir-instr"),
            ([0], "synth", "fan", 5.0),
            ([0], "music", "macroform-robot_dity", 10.0),
            ([0], "prompt", "allison", "vm-rec-name"),
        ],
    ),
    Recording(
        name="call-004-ulaw.wav",
        sr=8000,
        channels=1,
        fmt="WAV",
        subtype="ULAW",
        floors=[None],
        description="G.711 mu-law WAV: speech, mains hum, hold music, speech",
        events=[
            ([0], "prompt", "allison", "queue-holdtime"),
            ([0], "synth", "hum", 3.0),
            ([0], "music", "manolo_camp-morning_coffee", 6.0),
            ([0], "prompt", "allison", "auth-thankyou"),
        ],
    ),
]


def render_clip(event, sr: int, rng: np.random.Generator) -> Clip:
    """Turn one layout event into a placed-ready clip."""
    _, kind, a, b = event
    if kind == "prompt":
        return prompt_clip(a, b, sr, rng)
    if kind == "music":
        # Hold music sits a little below speech, as on real lines.
        return music_clip(a, b, sr, rng, target_rms_dbfs=float(rng.uniform(-23.0, -20.0)))
    if kind == "synth":
        return synth_clip(a, b, rng, sr)
    raise ValueError(kind)


def build_recording(rec: Recording, seed: int, index: int, log: SourceLog) -> tuple[np.ndarray, list[dict]]:
    """Place the parts of one recording and return the audio and its truth rows.

    Each recording gets its own RNG stream (``[seed, index]``), so editing one layout
    does not change the others.
    """
    rng = np.random.default_rng([seed, index])
    placed = []
    cursor = int(EDGE_S * rec.sr)
    for i, event in enumerate(rec.events):
        if i:
            cursor += int(round(rng.uniform(*GAP_RANGE_S) * rec.sr))
        clip = render_clip(event, rec.sr, rng)
        chans = event[0]
        # On the two-leg call the customer leg hears hold music a little quieter.
        for ch in chans:
            leg_gain = -3.0 if (clip.label == "music" and ch == 1) else 0.0
            placed.append((ch, cursor, clip, leg_gain))
        cursor += len(clip.audio)
    total = cursor + int(EDGE_S * rec.sr)

    audio = np.zeros((total, rec.channels))
    for ch, floor_db in enumerate(rec.floors):
        if floor_db is not None:
            audio[:, ch] += noise_floor(total, rec.sr, floor_db, rng)
    rows = []
    for ch, start, clip, leg_gain in placed:
        end = start + len(clip.audio)
        audio[start:end, ch] += clip.audio * from_db(leg_gain)
        rows.append(
            {
                "recording": rec.name,
                "channel": -1 if rec.channels == 1 else ch,
                "start_s": round(start / rec.sr, 7),
                "end_s": round(end / rec.sr, 7),
                "start_sample": start,
                "end_sample": end,
                "label": clip.label,
                "source": clip.source,
                "licence": clip.licence,
                "synthetic": clip.synthetic,
                "source_start_s": clip.source_start_s,
                "source_end_s": clip.source_end_s,
                "gain_db": round(clip.gain_db + leg_gain, 2),
                "note": clip.note,
            }
        )
        key = clip.source if not clip.synthetic else f"{clip.source}|{clip.note}"
        log.add(key, rec.name, label=clip.label, synthetic=clip.synthetic, note=clip.note)
    rows.sort(key=lambda r: (r["channel"], r["start_sample"]))
    return audio, rows


def write_audio(path: Path, audio: np.ndarray, rec: Recording) -> None:
    """Write int16 samples; libsndfile does the FLAC / mu-law encoding."""
    data = to_int16(audio)
    sf.write(str(path), data if rec.channels > 1 else data[:, 0], rec.sr, format=rec.fmt, subtype=rec.subtype)


# --------------------------------------------------------------------------------------
# Documentation writers
# --------------------------------------------------------------------------------------
def describe_source(key: str) -> tuple[str, str, str, str]:
    """(package, path, short author, full credit) for a ``<package>:<path>`` source."""
    package, path = key.split(":", 1)
    if package == PKG_MOH:
        short, credit = MOH_TRACKS[Path(path).stem]
        return package, path, short, f"{short}: {credit}"
    v = VOICES["allison" if package == PKG_EN else "june"]
    return package, path, f"{v['name']} ({v['language']})", f"{v['name']} ({v['language']}): {v['credit']}"


def credits_block(keys: list[str]) -> list[str]:
    """One bullet per author, the attribution CC-BY-SA asks for."""
    seen = sorted({describe_source(k)[3] for k in keys})
    return ["## Credits", "", *[f"- {c}" for c in seen], ""]


def licence_block(packages: list[str]) -> str:
    """Shared licence text for both SOURCES.md files."""
    versions = ", ".join(f"`{p}` {package_version(p)}" for p in packages)
    return (
        f"All source recordings are licensed under the Creative Commons Attribution-ShareAlike 3.0 "
        f"Unported licence (CC-BY-SA-3.0, {LICENCE_URL}, full text in "
        f"`/usr/share/doc/<package>/copyright`). The Asterisk prompts and music-on-hold were "
        f"published by the Asterisk project ({UPSTREAM_URL}) and taken from the Debian packages "
        f"{versions}. Nothing here implies endorsement by the authors.\n"
    )


def write_samples_sources(out: Path, log: SourceLog, seed: int) -> None:
    """SOURCES.md for the demo recordings."""
    lines = [
        "# Sources of the demo recordings",
        "",
        "Generated by `scripts/make_samples.py` (seed %d); rebuild with "
        "`python scripts/make_samples.py --out samples`. Exact part positions are in `truth.json`." % seed,
        "",
        "## Licence",
        "",
        "The recordings in this folder are **derived works** (adaptations) of the clips listed below and "
        "are distributed under **CC-BY-SA-3.0** (%s). Changes made to the original works: prompts trimmed "
        "to their sound (leading/trailing frames below -60 dBFS removed), level changed by a few dB, "
        "hold music cut to short excerpts with 20 ms fades, 16 kHz recording resampled from 8 kHz, "
        "one recording encoded as G.711 mu-law and one as FLAC, clips sequenced with silences and "
        "mixed with synthetic noise." % LICENCE_URL,
        "",
        licence_block([PKG_EN, PKG_FR, PKG_MOH]),
        "## Source clips",
        "",
        "| label | package | path | author | licence | used in |",
        "|---|---|---|---|---|---|",
    ]
    real = sorted(k for k, info in log.used.items() if not info["synthetic"])
    for key in real:
        info = log.used[key]
        package, path, author, _ = describe_source(key)
        lines.append(
            f"| {info['label']} | `{package}` | `{path}` | {author} | [{LICENCE}]({LICENCE_URL}) | "
            f"{', '.join(info['used_in'])} |"
        )
    lines += [""] + credits_block(real)
    lines += [
        "## Synthesised parts (no third-party material)",
        "",
        "Every part labelled `noise` is synthetic, made with numpy by the script, and marked "
        '`"synthetic": true` in `truth.json`. So is the low line hiss under `call-003.flac` and '
        "under channel 1 of `call-002-stereo.wav` (below -60 dBFS, not a part).",
        "",
        "| source | what | used in |",
        "|---|---|---|",
    ]
    for key, info in sorted(log.used.items()):
        if info["synthetic"]:
            lines.append(f"| `{key.split('|')[0]}` | {info['note']} | {', '.join(info['used_in'])} |")
    lines.append("")
    (out / "SOURCES.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------
def split_at_silence(x: np.ndarray, sr: int) -> list[tuple[float, float]]:
    """Minimal reference splitter: sounding stretches between >= 500 ms below -50 dBFS."""
    loud = frame_dbfs(x, sr) > SPLIT_DBFS
    min_frames = int(round(MIN_SILENCE_S / FRAME_S))
    segs, start, quiet = [], None, 0
    for i, v in enumerate(loud):
        if v:
            if start is None:
                start = i
            quiet, last = 0, i
        elif start is not None:
            quiet += 1
            if quiet >= min_frames:
                segs.append((start * FRAME_S, (last + 1) * FRAME_S))
                start, quiet = None, 0
    if start is not None:
        segs.append((start * FRAME_S, (last + 1) * FRAME_S))
    return segs


def boundary_report(segs: list[tuple[float, float]], parts: list[dict]) -> str:
    """Largest start/end difference between splitter segments and truth parts."""
    if len(segs) != len(parts) or not parts:
        return ""
    d0 = max(abs(s0 - p["start_s"]) for (s0, _), p in zip(segs, parts))
    d1 = max(abs(s1 - p["end_s"]) for (_, s1), p in zip(segs, parts))
    return f" (max boundary offset start {d0 * 1000:.0f} ms, end {d1 * 1000:.0f} ms)"


def verify_samples(out: Path) -> bool:
    """Re-read the written recordings and check them against ``truth.json``.

    Checks per channel: most 10 ms frames of each part are above -50 dBFS, every frame
    wholly inside a gap is below it, gaps last >= 0.7 s, and the reference splitter finds
    exactly the truth parts (boundaries within 100 ms).

    Returns
    -------
    bool
        True when every check passed.
    """
    truth = json.loads((out / "truth.json").read_text())
    ok = True
    total_s = 0.0
    print(f"\n{'recording':22} {'rate':>6} {'ch':>2} {'subtype':>7} {'dur s':>7} {'parts':>5}  check")
    for name, meta in truth["recordings"].items():
        x, sr = sf.read(str(out / name), dtype="float64", always_2d=True)
        dur = len(x) / sr
        total_s += dur
        rows = [p for p in truth["parts"] if p["recording"] == name]
        n = int(round(sr * FRAME_S))
        problems = []
        channels = [-1] if x.shape[1] == 1 else list(range(x.shape[1]))
        for ch in channels:
            y = x[:, max(ch, 0)]
            lv = frame_dbfs(y, sr)
            parts = sorted((p for p in rows if p["channel"] == ch), key=lambda p: p["start_sample"])
            in_part = np.zeros(len(lv), bool)
            for p in parts:
                f0, f1 = p["start_sample"] // n, -(-p["end_sample"] // n)
                in_part[f0:f1] = True
                frac = float(np.mean(lv[f0:f1] > SPLIT_DBFS))
                p["_loud"] = frac
                if frac < 0.6:
                    problems.append(f"ch{ch} part at {p['start_s']:.2f}s only {frac:.0%} loud")
            gap_lv = lv[~in_part]
            if gap_lv.size and gap_lv.max() >= SPLIT_DBFS:
                problems.append(f"ch{ch} gap frame at {gap_lv.max():.1f} dBFS")
            gaps = [b["start_s"] - a["end_s"] for a, b in zip(parts, parts[1:])]
            if gaps and min(gaps) < 0.7:
                problems.append(f"ch{ch} gap of {min(gaps):.2f}s")
            segs = split_at_silence(y, sr)
            if len(segs) != len(parts):
                problems.append(f"ch{ch} splitter found {len(segs)} segments for {len(parts)} parts")
            else:
                dev = max(
                    max(abs(s0 - p["start_s"]), abs(s1 - p["end_s"])) for (s0, s1), p in zip(segs, parts)
                )
                if dev > 0.1:
                    problems.append(f"ch{ch} splitter boundary off by {dev:.3f}s")
            gap_max = f"{gap_lv.max():.1f}" if gap_lv.size else "n/a"
            loud_min = min(p["_loud"] for p in parts)
            print(
                f"{'':22} {'':>6} {ch:>2} {'':>7} {'':>7} {len(parts):>5}  "
                f"min part loud {loud_min:.0%}, loudest gap frame {gap_max} dBFS, "
                f"splitter {len(segs)} segs{boundary_report(segs, parts)}"
            )
        if x.shape[1] > 1:
            # Parts never overlap in time, so the mono downmix must split into the events.
            events = sorted({(p["start_s"], p["end_s"]) for p in rows})
            segs = split_at_silence(x.mean(axis=1), sr)
            print(f"{'':22} {'':>6} {'mix':>2} {'':>7} {'':>7} {len(events):>5}  downmix splitter {len(segs)} segs")
            if len(segs) != len(events):
                problems.append(f"downmix splitter found {len(segs)} segments for {len(events)} events")
        info = sf.info(str(out / name))
        status = "OK" if not problems else "FAIL: " + "; ".join(problems)
        print(f"{name:22} {sr:>6} {x.shape[1]:>2} {info.subtype:>7} {dur:7.2f} {len(rows):>5}  {status}")
        ok &= not problems
        if abs(dur - meta["duration_s"]) > 1e-6:
            print(f"  duration mismatch: file {dur} vs truth {meta['duration_s']}")
            ok = False
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"total {total_s:.1f} s of audio, {size / 1e6:.2f} MB in {out}")
    if size > 3e6:
        print("  over the 3 MB budget")
        ok = False
    return ok


# --------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------
def make_samples(out: Path, seed: int) -> None:
    """Write the demo recordings, ``truth.json`` and ``SOURCES.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    log = SourceLog()
    parts, meta = [], {}
    for i, rec in enumerate(RECORDINGS):
        audio, rows = build_recording(rec, seed, i, log)
        write_audio(out / rec.name, audio, rec)
        parts += rows
        meta[rec.name] = {
            "sample_rate": rec.sr,
            "channels": rec.channels,
            "format": rec.fmt,
            "subtype": rec.subtype,
            "frames": len(audio),
            "duration_s": len(audio) / rec.sr,
            "noise_floor_dbfs": rec.floors,
            "description": rec.description,
        }
    truth = {
        "about": "Parts placed in each demo recording, from the sample offsets used to build them. "
        "start_sample/end_sample are exact (end exclusive) at the recording's rate; start_s/end_s are "
        "the same in seconds. channel is -1 for mono files, else the channel index. Source clips were "
        "trimmed to their first..last 10 ms frame above -60 dBFS before placing; source_start_s/"
        "source_end_s give that extent inside the source file. Gaps between parts (>= 0.8 s) hold "
        "digital silence or hiss below -60 dBFS.",
        "generator": "scripts/make_samples.py",
        "seed": seed,
        "licence": LICENCE,
        "packages": {p: package_version(p) for p in (PKG_EN, PKG_FR, PKG_MOH)},
        "splitter_hint": {"threshold_dbfs": SPLIT_DBFS, "min_silence_ms": int(MIN_SILENCE_S * 1000)},
        "recordings": meta,
        "parts": parts,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    write_samples_sources(out, log, seed)


def make_fixtures(out: Path, seed: int) -> None:
    """Write short labelled real clips for unit tests into ``out``.

    Speech prompts are unmodified copies (their leading/trailing silence kept, as real
    input has it); music clips are 4 s excerpts at native level with 20 ms fades.
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1000])
    rows = []
    for name in FIXTURE_SPEECH:
        path = ALLISON_DIR / f"{name}.wav"
        fname = f"speech_en_{name.replace('/', '_')}.wav"
        sf.write(str(out / fname), to_int16(read_source(path)), SOURCE_RATE, subtype="PCM_16")
        rows.append((fname, "speech", f"{PKG_EN}:{path}", LICENCE, "Allison Smith (en-US)", "unmodified copy"))
    for track, seconds in FIXTURE_MUSIC:
        clip = music_clip(track, seconds, SOURCE_RATE, rng, target_rms_dbfs=None)
        fname = f"music_{track}.wav"
        sf.write(str(out / fname), to_int16(clip.audio), SOURCE_RATE, subtype="PCM_16")
        rows.append(
            (
                fname,
                "music",
                f"{PKG_MOH}:{MOH_DIR / (track + '.wav')}",
                LICENCE,
                MOH_TRACKS[track][0],
                f"excerpt {clip.source_start_s:.3f}-{clip.source_end_s:.3f} s, 20 ms fades",
            )
        )
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "label", "source", "licence"])
        w.writerows(r[:4] for r in rows)
    lines = [
        "# Sources of the test fixtures",
        "",
        "Short real clips with known labels, written by "
        "`python scripts/make_samples.py --fixtures tests/data` (seed %d). Labels are in `labels.csv`." % seed,
        "All files are 16-bit PCM WAV, mono, 8 kHz (the native rate of the sources).",
        "",
        "## Licence",
        "",
        "Each clip is a copy or an excerpt (an adaptation) of a work licensed under **CC-BY-SA-3.0** "
        f"({LICENCE_URL}); the clips are distributed under the same licence.",
        "",
        licence_block([PKG_EN, PKG_MOH]),
        "| file | label | package:path | author | changes |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{r[0]}` | {r[1]} | `{r[2]}` | {r[4]} | {r[5]} |" for r in rows]
    lines += [""] + credits_block([r[2] for r in rows])
    (out / "SOURCES.md").write_text("\n".join(lines))
    size = sum((out / r[0]).stat().st_size for r in rows)
    for r in rows:
        info = sf.info(str(out / r[0]))
        print(f"{r[0]:44} {r[1]:6} {info.duration:5.2f} s {info.samplerate} Hz")
    print(f"{len(rows)} fixtures, {size / 1e3:.0f} kB of audio in {out}")


def sha256(path: Path) -> str:
    """Digest of a file, printed so two builds can be compared at a glance."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("samples"), help="folder for the demo recordings (default: samples)")
    ap.add_argument("--fixtures", type=Path, metavar="DIR", help="write the unit-test fixtures into DIR instead")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RNG seed (default: %(default)s)")
    ap.add_argument("--no-install", action="store_true", help="never run apt-get; fail if sources are missing")
    ap.add_argument("--no-verify", action="store_true", help="skip re-reading and checking the demo recordings")
    args = ap.parse_args(argv)
    if args.seed < 0:
        ap.error(f"--seed {args.seed}: must be 0 or more")
    try:
        check_local_folder(args.fixtures if args.fixtures is not None else args.out,
                           what="fixtures folder" if args.fixtures is not None else "samples folder")
    except OutputError as exc:
        ap.exit(1, f"error: {exc}\n")

    if args.fixtures is not None:
        ensure_packages([PKG_EN, PKG_MOH], not args.no_install)
        make_fixtures(args.fixtures, args.seed)
        return 0
    ensure_packages([PKG_EN, PKG_FR, PKG_MOH], not args.no_install)
    make_samples(args.out, args.seed)
    for f in sorted(args.out.iterdir()):
        print(f"{f.name:22} {f.stat().st_size:>9} B  sha256 {sha256(f)}")
    if args.no_verify:
        return 0
    return 0 if verify_samples(args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
