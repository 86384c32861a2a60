#!/usr/bin/env python3
"""Build a training corpus for audioclf's bundles from Debian packages and synthetic sound.

    python scripts/build_corpus.py --task smn    [--out ~/.cache/audioclf/corpus/smn]
    python scripts/build_corpus.py --task digits [--out ~/.cache/audioclf/corpus/digits]
    python scripts/build_corpus.py --task smn-check [--out ~/.cache/audioclf/corpus/smn-check]

Writes ``<out>/<label>/<file>.wav`` (mono PCM16, 8 kHz unless ``--rate``) and
``<out>/manifest.csv`` with one row per clip: ``path`` (relative to ``<out>``),
``label``, ``group`` (the voice, package or kind: training splits by it, never by
file), ``source`` (``package:/path#start-end``, or how a synthetic clip was made),
``licence``, ``orig_rate``, ``synthetic`` (0/1) and ``duration_s``; the digits manifest adds
``language``. ``summary.json`` gives the hours and groups per label; for digits also the clips
and voices per language and the held-out voices chosen by the rule in :func:`digit_heldout`
(``heldout.train_args`` are the ``audioclf train`` options that apply it). ``smn-check`` is an
evaluation set only: speech, music and noise from three game packages that no ``smn`` recipe reads
(:func:`check_sources`), cut the way the ``smn`` corpus is, to check the shipped bundle on
material no training run, validation or earlier test has touched; keep it out of training. The
audio stays outside the repository.

Rules the corpus follows (see /work/shared/DATA.md):

- every class is cropped the same way: leading and trailing silence trimmed, long files
  cut into pieces of at most ``--clip-s`` seconds, so no class is recognisable by length;
- each group contributes at most a capped number of minutes, and each file a capped
  share of that, so one package or one long track does not dominate;
- files that do not decode are skipped and counted (corrupt files exist), and
  byte-identical files shipped twice (tilesets, ``sr@*`` locales) are kept once;
- the non-speech prompts of the Asterisk voices (silence, beeps, tones, ``tt-monkeys``)
  and speech-like game effects are excluded;
- synthetic audio (telephone tones, coloured noise and hum for ``smn``; espeak-ng, flite
  and festival voices for ``digits``) is marked ``synthetic=1`` and grouped per kind or
  voice, so that held-out evaluation can use real recordings only.

The Debian packages are installed with ``apt-get`` when missing (as root); otherwise the
script stops and prints the command to run. Uses numpy, scipy, soundfile, soxr, and the
``ffmpeg``, ``espeak-ng``, ``flite`` and ``text2wave`` commands.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audioclf_core.errors import OutputError
from audioclf_core.storage import check_local_folder

DEFAULT_ROOT = Path("~/.cache/audioclf/corpus").expanduser()
FRAME_S = 0.010
PEAK = 0.89  # -1 dBFS: PCM16 never clips

# --------------------------------------------------------------------------------------
# Package facts (Debian 12). Licences as stated in /usr/share/doc/<package>/copyright.
# --------------------------------------------------------------------------------------
LICENCES = {
    "asterisk-core-sounds-en-wav": "CC-BY-SA-3.0",
    "asterisk-core-sounds-es-wav": "CC-BY-SA-3.0",
    "asterisk-core-sounds-fr-wav": "CC-BY-SA-3.0",
    "asterisk-core-sounds-it-wav": "CC-BY-SA-3.0",
    "asterisk-prompt-it-menardi-wav": "CC-BY-SA-3.0",
    "asterisk-prompt-fr-armelle": "GPL-2",
    "asterisk-core-sounds-ru-wav": "CC-BY-SA-3.0",
    "asterisk-prompt-es-co": "GPL-2",
    "asterisk-moh-opsound-wav": "CC-BY-SA-3.0",
    "fillets-ng-data-cs": "GPL-2+",
    "fillets-ng-data": "GPL-2+",
    "tuxpaint-stamps-default": "GPL-2",
    "tuxpaint-data": "GPL-2+",
    "klettres-data": "GPL-2+",
    "ktuberling-data": "GPL-2+",
    "wesnoth-1.16-music": "GPL-2+",
    "planetblupi-music-ogg": "GPL-3+",
    "supertux-data": "GPL-2+/GPL-3+/CC-BY-SA (per file, see copyright)",
    "lincity-ng-data": "GPL-2+",
    "sound-theme-freedesktop": "GPL-2+/CC-BY-SA/CC-BY (per file, see copyright)",
    "extremetuxracer-data": "GPL-2+",
    "xmoto-data": "GPL-2+",
    "pingus-data": "GPL-3+",
    "kbounce": "GPL-2+",
    "kgoldrunner": "GPL-2+",
    "kapman": "GPL-2+",
    "widelands-data": "GPL-2+/CC-BY-SA-3.0 (per file, see copyright)",
    "colobot-common-sounds": "GPL-3+",
    "megaglest-data": "CC-BY-SA-3.0/GPL-2+ (per file, see copyright)",
    "hyperrogue-music": "CC-BY-SA-3.0/GPL-2+ (per file, see copyright)",
    "asc-music": "GPL-2+",
    "tuxmath-data": "GPL-3+/CC-BY-SA-3.0 (per file, see copyright)",
    "tuxtype-data": "GPL-2+",
    "frozen-bubble-data": "GPL-2",
    "drascula-music": "Drascula-License (free redistribution)",
    "hedgewars-data": "GFDL-1.3 (Data/Sounds), GPL-2 (music)",
    "flare-game": "CC-BY-SA-3.0+",
    "freedroidrpg-data": "GPL-2+",
}
TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave", "festvox-kallpc16k": None,
         "festvox-kdlpc16k": None, "festvox-us-slt-hts": None, "ffmpeg": "ffmpeg"}

AST = Path("/usr/share/asterisk/sounds")
# Real voice folders only: en, en_US, ... are alternatives symlinks to these.
ASTERISK_VOICES = {  # group -> [(package, folder, glob)]
    "asterisk-allison": [("asterisk-core-sounds-en-wav", AST / "en_US_f_Allison", "**/*.wav"),
                         ("asterisk-core-sounds-es-wav", AST / "es_MX_f_Allison", "**/*.wav")],
    "asterisk-june": [("asterisk-core-sounds-fr-wav", AST / "fr_CA_f_June", "**/*.wav")],
    "asterisk-carlo": [("asterisk-core-sounds-it-wav", AST / "it_IT_m_Carlo", "**/*.wav")],
    "asterisk-menardi": [("asterisk-prompt-it-menardi-wav", AST / "it_IT_f_Menardi", "**/*.wav")],
    "asterisk-armelle": [("asterisk-prompt-fr-armelle", AST / "fr", "**/*.gsm")],
}
# Prompts in the voice packages that are not speech: digital silence, beeps, tones, noise.
ASTERISK_NOT_SPEECH = re.compile(
    r"(^|/)silence/|(^|/)(beep|beeperr|ascending-2tone|descending-2tone|confbridge-join|confbridge-leave|"
    r"tt-monkeys|spy-jingle)\.(wav|gsm)$"
)
# Game effects that are (or may be) a voice: kept out of "noise".
SPEECH_LIKE = re.compile(
    r"(excellent|welldone|areyousure|giggle|tuxok|youcannot|grunt|hurt|yeti_gna|speech|excuseme|cheer|"
    r"winfinal|(^|/)win\.|(^|/)lose\.|hurry|(^|/)noh\.|chatted|prince|troll|dzia|lobby|tavern|laugh|voice|"
    r"hello|_ack|(^|/)ack|(^|/)yes|scream|baby|kid|child|sing|snore)",
    re.I,
)
AUDIO_RE = re.compile(r"\.(wav|ogg|oga|mp3|flac|gsm)$", re.I)
# City ambience that may hold voices or crowds: kept out of "noise".
LINCITY_PEOPLE = re.compile(r"(School|University|Health|SportsCroud|Residential|Shanty|Commune|Market)", re.I)


@dataclass
class Source:
    """One group: the files it may draw from and how much of them it may use."""

    label: str
    group: str
    files: list[tuple[str, Path]]  # (package, path)
    cap_s: float
    per_file_s: float
    trim_rel_db: float | None = None  # trim relative to the clip's loudest frame as well
    fixed_label: bool = True
    note: str = ""


@dataclass
class Row:
    path: str
    label: str
    group: str
    source: str
    licence: str
    orig_rate: int
    synthetic: int
    duration_s: float
    language: str = ""  # digits: the language spoken (ISO 639-1 where there is one)


# --------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------
def installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages(pkgs: list[str], *, install: bool) -> None:
    """Install missing Debian packages with apt-get (as root), or say how."""
    missing = sorted(p for p in set(pkgs) if not installed(p))
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if not install or os.geteuid() != 0:
        sys.exit("missing Debian packages; run as root:\n  apt-get update && " + " ".join(cmd))
    print(f"installing {len(missing)} packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(cmd, env=env)
    if r.returncode:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def package_files(pkg: str) -> list[Path]:
    out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout.split("\n")
    return sorted(Path(p) for p in out if AUDIO_RE.search(p) and Path(p).is_file() and not Path(p).is_symlink())


# --------------------------------------------------------------------------------------
# Signal helpers
# --------------------------------------------------------------------------------------
def decode(path: Path, rate: int) -> tuple[np.ndarray, int]:
    """Mono float32 at ``rate`` and the file's own rate; raises on a file that will not decode."""
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
             "-of", "csv=p=0", str(path)], capture_output=True, text=True)
        sr = int(probe.stdout.strip() or 0)
        if path.suffix.lower() == ".gsm":
            args = ["-f", "gsm", "-ar", "8000"]
            sr = 8000
        else:
            args = []
        r = subprocess.run(["ffmpeg", "-v", "error", *args, "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(sr or rate), "-"],
                           capture_output=True)
        if r.returncode or not r.stdout:
            raise RuntimeError(f"cannot decode {path}: {r.stderr.decode(errors='replace').strip()[:200]}")
        y = np.frombuffer(r.stdout, dtype=np.float32)[:, None]
        sr = sr or rate
    y = y.mean(axis=1).astype(np.float32)
    if not np.isfinite(y).all():
        raise RuntimeError(f"cannot decode {path}: non-finite samples")
    if sr != rate:
        y = soxr.resample(y, sr, rate, quality="HQ").astype(np.float32)
    return y, int(sr)


def frame_db(y: np.ndarray, rate: int) -> np.ndarray:
    n = max(1, int(FRAME_S * rate))
    k = len(y) // n
    if k == 0:
        return np.array([-200.0])
    e = (y[: k * n].reshape(k, n).astype(np.float64) ** 2).mean(axis=1)
    return 10 * np.log10(np.maximum(e, 1e-20))


def trim(y: np.ndarray, rate: int, *, abs_db: float = -50.0, rel_db: float | None = None, keep_s: float = 0.1) -> np.ndarray:
    """Cut leading and trailing silence (frames below the threshold), keeping ``keep_s``."""
    db = frame_db(y, rate)
    thr = abs_db if rel_db is None else max(abs_db, db.max() + rel_db)
    loud = np.flatnonzero(db > thr)
    if loud.size == 0:
        return y[:0]
    n = int(FRAME_S * rate)
    keep = int(keep_s * rate)
    return y[max(0, loud[0] * n - keep): min(len(y), (loud[-1] + 1) * n + keep)]


def active_fraction(y: np.ndarray, rate: int, abs_db: float = -50.0) -> float:
    return float((frame_db(y, rate) > abs_db).mean())


def fade(y: np.ndarray, rate: int, s: float = 0.005) -> np.ndarray:
    n = min(len(y) // 2, int(s * rate))
    if n:
        r = np.linspace(0, 1, n, dtype=np.float32)
        y = y.copy()
        y[:n] *= r
        y[-n:] *= r[::-1]
    return y


def to_pcm(y: np.ndarray) -> np.ndarray:
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak > PEAK:  # never clip; quieter files keep their level (levels are not normalised)
        y = y * (PEAK / peak)
    return y


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")[:80]


def seed_of(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


# --------------------------------------------------------------------------------------
# Real recordings: one worker per group
# --------------------------------------------------------------------------------------
def build_group(job: tuple[Source, str, int, float, int]) -> tuple[list[Row], list[str]]:
    src, out, rate, clip_s, seed = job
    rng = random.Random(seed_of(seed, src.group))
    files = list(src.files)
    rng.shuffle(files)
    rows: list[Row] = []
    errors: list[str] = []
    used = 0.0
    label_dir = Path(out) / src.label
    label_dir.mkdir(parents=True, exist_ok=True)
    for pkg, path in files:
        if used >= src.cap_s:
            break
        try:
            y, orig = decode(path, rate)
        except Exception as exc:  # corrupt files are normal input
            errors.append(str(exc))
            continue
        # Speech prompts sit on a noise floor that may be above -50 dBFS: trim relative to the
        # voice too, or "speech" clips are mostly hiss.
        y = trim(y, rate, rel_db=src.trim_rel_db)
        dur = len(y) / rate
        if dur < 0.25:
            continue
        if dur <= clip_s:
            pieces = [(0, len(y))]
        else:
            n_piece = int(dur // clip_s)
            step = int(clip_s * rate)
            off = rng.randrange(0, len(y) - n_piece * step + 1)
            pieces = [(off + i * step, off + (i + 1) * step) for i in range(n_piece)]
            rng.shuffle(pieces)
        file_used = 0.0
        for a, b in pieces:
            if used >= src.cap_s or file_used >= src.per_file_s:
                break
            piece = y[a:b]
            if active_fraction(piece, rate, -50.0 if src.trim_rel_db is None else max(-50.0, frame_db(y, rate).max() + src.trim_rel_db)) < 0.3:
                continue
            piece = to_pcm(fade(piece, rate))
            rel = Path(src.label) / f"{safe(src.group)}--{safe(path.stem)}--{a // rate:05d}.wav"
            sf.write(str(Path(out) / rel), piece, rate, subtype="PCM_16")
            d = len(piece) / rate
            rows.append(Row(str(rel), src.label, src.group, f"{pkg}:{path}#{a / rate:.2f}-{b / rate:.2f}",
                            LICENCES.get(pkg, "see /usr/share/doc/%s/copyright" % pkg), orig, 0, round(d, 3)))
            used += d
            file_used += d
    return rows, errors


def dedupe(sources: list[Source]) -> int:
    """Keep the first copy of byte-identical files (shared tileset sounds, ``sr@*`` locales)."""
    seen: set[str] = set()
    dropped = 0
    for s in sources:
        keep = []
        for pkg, p in s.files:
            h = hashlib.sha1(p.read_bytes()).hexdigest()
            if h in seen:
                dropped += 1
                continue
            seen.add(h)
            keep.append((pkg, p))
        s.files = keep
    return dropped


# --------------------------------------------------------------------------------------
# speech / music / noise
# --------------------------------------------------------------------------------------
SMN_PACKAGES = [
    *{pkg for v in ASTERISK_VOICES.values() for pkg, _, _ in v},
    "fillets-ng-data-cs", "tuxpaint-stamps-default", "klettres-data", "ktuberling-data",
    "asterisk-moh-opsound-wav", "wesnoth-1.16-music", "planetblupi-music-ogg", "supertux-data", "widelands-data",
    "colobot-common-sounds", "megaglest-data", "hyperrogue-music", "asc-music", "fillets-ng-data",
    "drascula-music", "frozen-bubble-data", "tuxmath-data", "tuxtype-data", "tuxpaint-data",
    "lincity-ng-data", "sound-theme-freedesktop", "extremetuxracer-data", "xmoto-data", "pingus-data", "kbounce",
    "kgoldrunner", "kapman",
]


# Speech is trimmed this far below its loudest frame as well as at -50 dBFS: some prompt sets
# (KLettres Malayalam) hold a syllable at -5 dBFS inside 1.5 s of a -38 dBFS noise floor, and a
# "speech" clip that is mostly hiss teaches the model that hiss is speech.
SPEECH_TRIM_REL_DB = -30.0


def smn_sources(cap_speech: float, cap_music: float, cap_noise: float) -> list[Source]:
    S: list[Source] = []

    def add(label, group, files, cap, per_file):
        files = [(pkg, p) for pkg, p in files]
        if files:
            S.append(Source(label, group, files, cap, per_file, trim_rel_db=SPEECH_TRIM_REL_DB if label == "speech" else None))

    # --- speech: one group per voice (or per language where one volunteer speaks it)
    for group, parts in ASTERISK_VOICES.items():
        files = []
        for pkg, folder, pattern in parts:
            files += [(pkg, p) for p in sorted(folder.glob(pattern))
                      if not ASTERISK_NOT_SPEECH.search(str(p.relative_to(folder))) and not p.is_symlink()]
        add("speech", group, files, cap_speech, 240)
    # Fish Fillets: one group per voice actor (the small fish "m", the big fish "v", the rest), so a
    # voice can be held out while continuous acted dialogue stays in training.
    fillets = defaultdict(list)
    for p in package_files("fillets-ng-data-cs"):
        m = re.match(r"[^-]+-(m|v)(?:-|$)", p.stem)
        fillets[m.group(1) if m else "other"].append(("fillets-ng-data-cs", p))
    for voice, files in sorted(fillets.items()):
        add("speech", f"fillets-cs-{voice}", files, cap_speech, 240)
    desc = defaultdict(list)
    for p in package_files("tuxpaint-stamps-default"):
        m = re.search(r"_desc(?:_([A-Za-z_]+))?\.ogg$", p.name)
        if m:
            desc[m.group(1) or "en"].append(("tuxpaint-stamps-default", p))
    for lang, files in desc.items():
        add("speech", f"tuxpaint-desc-{lang}", files, cap_speech, 240)
    kl = defaultdict(list)
    for p in package_files("klettres-data"):
        kl[p.parts[4]].append(("klettres-data", p))
    for lang, files in kl.items():
        add("speech", f"klettres-{lang}", files, cap_speech, 240)
    kt = defaultdict(list)
    for p in package_files("ktuberling-data"):
        if "/sounds/" in str(p):
            lang = p.parts[p.parts.index("sounds") + 1]
            if "@" not in lang:
                kt[lang].append(("ktuberling-data", p))
    for lang, files in kt.items():
        add("speech", f"ktuberling-{lang}", files, cap_speech, 240)

    # --- music: one group per package, or per artist for the hold music
    moh = defaultdict(list)
    for p in package_files("asterisk-moh-opsound-wav"):
        moh[p.stem.split("-")[0]].append(("asterisk-moh-opsound-wav", p))
    for artist, files in moh.items():
        add("music", f"moh-{artist}", files, cap_music, 300)
    music_dirs = {
        "wesnoth": ("wesnoth-1.16-music", r"/music/"),
        "planetblupi": ("planetblupi-music-ogg", r"/music/"),
        "supertux": ("supertux-data", r"/music/"),
        "widelands": ("widelands-data", r"/data/music/"),
        "colobot": ("colobot-common-sounds", r"/music/"),
        "megaglest": ("megaglest-data", r"/music/"),
        "hyperrogue": ("hyperrogue-music", r"/music/"),
        "asc": ("asc-music", r"/music/"),
        "fillets": ("fillets-ng-data", r"/fillets-ng/music/"),
        "drascula": ("drascula-music", r"/drascula/audio/"),
        "frozen-bubble": ("frozen-bubble-data", r"zik"),
        "extremetuxracer": ("extremetuxracer-data", r"/music/"),
        "xmoto": ("xmoto-data", r"/Musics/"),
    }
    for group, (pkg, pat) in music_dirs.items():
        add("music", group, [(pkg, p) for p in package_files(pkg) if re.search(pat, str(p))], cap_music, 240)
    tux4kids = [("tuxmath-data", p) for p in package_files("tuxmath-data") if p.suffix == ".ogg"]
    tux4kids += [("tuxtype-data", p) for p in package_files("tuxtype-data") if p.suffix == ".ogg" and "/sounds/" in str(p)]
    add("music", "tux4kids", tux4kids, cap_music, 240)

    # --- noise: game effects and ambience, speech-like effects removed
    def effects(pkg, pat, exclude=None):
        return [(pkg, p) for p in package_files(pkg)
                if re.search(pat, str(p)) and not SPEECH_LIKE.search(p.name) and not (exclude and re.search(exclude, str(p)))]

    add("noise", "megaglest-ambience", effects("megaglest-data", r"/tilesets/.*/sounds/"), cap_noise, 120)
    add("noise", "widelands-animals", effects("widelands-data", r"/sound/animals/|/critters/"), cap_noise, 60)
    add("noise", "widelands-work", effects("widelands-data", r"/data/sound/", r"message_|/animals/"), cap_noise, 60)
    add("noise", "lincity-ambience", effects("lincity-ng-data", r"/sounds/", LINCITY_PEOPLE.pattern), cap_noise, 60)
    add("noise", "freedesktop-sounds", effects("sound-theme-freedesktop", r"/stereo/", r"audio-channel"), cap_noise, 60)
    kde = effects("kbounce", r"/sounds/") + effects("kgoldrunner", r"/themes/") + effects("kapman", r"/kapman/")
    kde += effects("pingus-data", r"/sounds/", r"goodidea|letsgo|ohno|yipee") + effects("extremetuxracer-data", r"/sounds/")
    add("noise", "small-games-sfx", kde, cap_noise, 60)
    add("noise", "colobot-sfx", effects("colobot-common-sounds", r"/sounds/"), cap_noise, 60)
    add("noise", "hyperrogue-sfx", effects("hyperrogue-music", r"/sounds/"), cap_noise, 60)
    add("noise", "supertux-sfx", effects("supertux-data", r"/supertux2/sounds/"), cap_noise, 60)
    add("noise", "tuxpaint-tools", effects("tuxpaint-data", r"/tuxpaint/sounds/"), cap_noise, 60)
    stamps = [("tuxpaint-stamps-default", p) for p in package_files("tuxpaint-stamps-default")
              if "_desc" not in p.name and "/symbols/" not in str(p) and not SPEECH_LIKE.search(p.name)]
    add("noise", "tuxpaint-stamps-animals", [f for f in stamps if "/animals/" in str(f[1])], cap_noise, 60)
    add("noise", "tuxpaint-stamps-things", [f for f in stamps if "/animals/" not in str(f[1])], cap_noise, 60)
    add("noise", "frozen-bubble-sfx", effects("frozen-bubble-data", r"/snd/", r"zik"), cap_noise, 60)
    t4k = effects("tuxmath-data", r"/sounds/.*\.wav$") + effects("tuxtype-data", r"/sounds/.*\.wav$")
    add("noise", "tux4kids-sfx", t4k, cap_noise, 60)
    return S


# --------------------------------------------------------------------------------------
# smn-check: an evaluation set from packages that no smn recipe reads
# --------------------------------------------------------------------------------------
CHECK_PACKAGES = ["hedgewars-data", "flare-game", "freedroidrpg-data"]
HEDGEWARS = Path("/usr/share/games/hedgewars/Data")
FLARE = Path("/usr/share/games/flare/mods/fantasycore")
FREEDROID = Path("/usr/share/freedroidrpg/data/sound")
# Labels follow from folder and file names, fixed before the shipped bundle was run on any of
# them. Hedgewars voice packs: the spoken lines only (not the grunts, laughs and coughs); the
# Robot pack is processed and the Singer pack is sung, so both stay out.
HEDGEWARS_NOT_LINES = re.compile(r"^(Firepunch|Jump|Laugh|Ooff|Ouch|Ow\d|Hmm|Uh-oh|Oops|Poison)")
HEDGEWARS_NOT_VOICES = {"Robot", "Singer"}
# Hedgewars effects that are notes, chants, voices or music rather than noise.
HEDGEWARS_NOT_NOISE = re.compile(r"^(\d[A-G]$|hogchant|Yoohoo|Kiss|Whistle|hell_|countdown|custom|ride_of_the_valkyries)")
FLARE_NOISE = ("environment", "powers", "inventory", "steps")
FLARE_NOISE_FILES = ("door_open", "wood_open", "heartbeat", "flying_loot", "melee_attack")
FREEDROID_NOT_NOISE = re.compile(r"^(Influencer_Scream|ThouArtDefeated|Takeover_Game_|Mission_Status_Change)")


def check_sources(cap_speech: float, cap_music: float, cap_noise: float) -> list[Source]:
    """Groups of the ``smn-check`` set: one per voice pack or speaker set, one per package and kind."""
    S: list[Source] = []

    def add(label, group, pkg, files, cap, per_file):
        files = [(pkg, p) for p in files if p.is_file() and not p.is_symlink()]
        if files:
            S.append(Source(label, group, files, cap, per_file, trim_rel_db=SPEECH_TRIM_REL_DB if label == "speech" else None))

    for pack in sorted(p for p in (HEDGEWARS / "Sounds/voices").iterdir() if p.name not in HEDGEWARS_NOT_VOICES):
        add("speech", f"hedgewars-voice-{pack.name}", "hedgewars-data",
            [p for p in sorted(pack.glob("*.ogg")) if not HEDGEWARS_NOT_LINES.match(p.stem)], cap_speech, 240)
    add("speech", "flare-merchants", "flare-game", sorted((FLARE / "soundfx/npcs").glob("*.ogg")), cap_speech, 240)
    add("speech", "freedroid-tux", "freedroidrpg-data", sorted((FREEDROID / "effects/tux_ingame_comments").glob("*.ogg")),
        cap_speech, 240)
    add("music", "hedgewars-music", "hedgewars-data", sorted((HEDGEWARS / "Music").glob("*.ogg")), cap_music, 240)
    add("music", "flare-music", "flare-game", sorted((FLARE / "music").glob("*.ogg")), cap_music, 240)
    add("music", "freedroid-music", "freedroidrpg-data", sorted((FREEDROID / "music").glob("*.ogg")), cap_music, 240)

    def noise(files, exclude=None):
        return [p for p in files if not SPEECH_LIKE.search(p.name) and not (exclude and exclude.match(p.stem))]

    add("noise", "hedgewars-sfx", "hedgewars-data", noise(sorted((HEDGEWARS / "Sounds").glob("*.ogg")), HEDGEWARS_NOT_NOISE),
        cap_noise, 60)
    flare = [p for d in FLARE_NOISE for p in sorted((FLARE / "soundfx" / d).glob("*.ogg"))]
    flare += [FLARE / "soundfx" / f"{n}.ogg" for n in FLARE_NOISE_FILES]
    add("noise", "flare-sfx", "flare-game", noise(flare), cap_noise, 60)
    freedroid = [p for d in ("bullets", "item_sounds") for p in sorted((FREEDROID / "effects" / d).glob("*.ogg"))]
    freedroid += sorted((FREEDROID / "effects").glob("*.ogg"))
    add("noise", "freedroid-sfx", "freedroidrpg-data", noise(freedroid, FREEDROID_NOT_NOISE), cap_noise, 60)
    return S


# Synthetic telephone tones and line noise (numpy), one group per kind.
def _tone(freqs, dur, rate, rng, level_db):
    t = np.arange(int(dur * rate)) / rate
    y = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs)
    return (y / len(freqs) * 10 ** (level_db / 20)).astype(np.float32)


def _cadence(freqs, on_off, total, rate, rng, level_db):
    out = []
    n = 0.0
    while n < total:
        for i, seg in enumerate(on_off):
            if n >= total:
                break
            seg = min(seg, total - n)
            out.append(_tone(freqs, seg, rate, rng, level_db) if i % 2 == 0 else np.zeros(int(seg * rate), np.float32))
            n += seg
    return np.concatenate(out)


def coloured_noise(n, rate, rng, exponent):
    """Noise with power spectrum ~ f**exponent (0 white, -1 pink, -2 brown, 1 blue, 2 violet)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    f[0] = f[1]
    spec *= f ** (exponent / 2)
    y = np.fft.irfft(spec, n)
    return (y / (np.abs(y).max() + 1e-9)).astype(np.float32)


DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
        "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209), "0": (941, 1336), "#": (941, 1477)}


def synth_noise_clip(kind: str, rate: int, clip_s: float, rng: np.random.Generator) -> np.ndarray:
    lvl = rng.uniform(-30, -8)
    dur = rng.uniform(1.0, clip_s)
    n = int(dur * rate)
    if kind == "dtmf":
        parts = []
        while sum(map(len, parts)) < n:
            f = DTMF[rng.choice(list(DTMF))]
            parts.append(_tone(f, rng.uniform(0.06, 0.2), rate, rng, lvl))
            parts.append(np.zeros(int(rng.uniform(0.04, 0.15) * rate), np.float32))
        y = np.concatenate(parts)[:n]
    elif kind == "ringback":
        f, cad = [((440, 480), (2, 4)), ((400, 450), (0.4, 0.2, 0.4, 2)), ((425,), (1, 4)), ((425,), (1.5, 3))][rng.integers(4)]
        y = _cadence(f, [c * rng.uniform(0.8, 1.0) for c in cad], dur, rate, rng, lvl)
    elif kind == "busy":
        f, cad = [((480, 620), (0.5, 0.5)), ((425,), (0.5, 0.5)), ((480, 620), (0.25, 0.25)), ((400,), (0.375, 0.375))][rng.integers(4)]
        y = _cadence(f, cad, dur, rate, rng, lvl)
    elif kind == "dialtone":
        f = [(350, 440), (425,), (350, 450), (400, 425), (450,)][rng.integers(5)]
        y = _tone(f, dur, rate, rng, lvl)
    elif kind == "sit-fax-modem":
        choice = rng.integers(4)
        if choice == 0:  # special information tone
            y = np.concatenate([_tone((f,), 0.33, rate, rng, lvl) for f in (913.8, 1370.6, 1776.7)] + [np.zeros(rate, np.float32)])
        elif choice == 1:  # fax CNG
            y = _cadence((1100,), (0.5, 3.0), dur, rate, rng, lvl)
        elif choice == 2:  # answer tone with phase reversals
            y = _tone((2100,), dur, rate, rng, lvl)
        else:  # modem-like FSK warble
            t = np.arange(n) / rate
            bits = rng.integers(0, 2, int(dur * 300) + 1)
            f = np.where(bits[(t * 300).astype(int)] == 1, 1270, 1070)
            y = (np.sin(2 * np.pi * np.cumsum(f) / rate) * 10 ** (lvl / 20)).astype(np.float32)
        y = y[:n] if len(y) > n else y
    elif kind == "hum":
        base = rng.choice([50, 60])
        t = np.arange(n) / rate
        y = sum(rng.uniform(0.05, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.28)) for k in range(1, 12))
        y = y / np.abs(y).max() * 10 ** (lvl / 20) + coloured_noise(n, rate, rng, -1) * 10 ** ((lvl - 25) / 20)
    elif kind == "coloured-noise":
        y = coloured_noise(n, rate, rng, rng.choice([-2.0, -1.0, 0.0, 1.0])) * 10 ** (lvl / 20)
    elif kind == "clicks-crackle":
        y = coloured_noise(n, rate, rng, -1) * 10 ** ((lvl - 20) / 20)
        idx = rng.integers(0, n, int(dur * rng.uniform(5, 60)))
        y[idx] += rng.uniform(-1, 1, idx.size) * 10 ** (lvl / 20) * 3
    else:
        raise ValueError(kind)
    return np.asarray(y, dtype=np.float32)[:n]


SYNTH_NOISE_KINDS = ("dtmf", "ringback", "busy", "dialtone", "sit-fax-modem", "hum", "coloured-noise", "clicks-crackle")


def build_synthetic_noise(out: Path, rate: int, clip_s: float, seed: int, per_kind_s: float) -> list[Row]:
    rows = []
    (out / "noise").mkdir(parents=True, exist_ok=True)
    for kind in SYNTH_NOISE_KINDS:
        rng = np.random.default_rng(seed_of(seed, kind))
        used, k = 0.0, 0
        while used < per_kind_s:
            y = to_pcm(fade(synth_noise_clip(kind, rate, clip_s, rng), rate))
            rel = Path("noise") / f"synthetic-{kind}--{k:04d}.wav"
            sf.write(str(out / rel), y, rate, subtype="PCM_16")
            d = len(y) / rate
            rows.append(Row(str(rel), "noise", f"synthetic-{kind}", f"synthetic:numpy:{kind}:seed={seed}:{k}",
                            "generated (no third-party content)", rate, 1, round(d, 3)))
            used += d
            k += 1
    return rows


# --------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------
# Real digit voices from the Asterisk prompt packages: (group, package, folder, language). A voice is
# one group even where it speaks two languages (Allison), so that a held-out voice is never heard in
# training in another language. Files are taken from the package's own file list (dpkg -L), never
# through the alternatives symlinks (en, es, ru), which point at different voices on different machines.
DIGIT_ASTERISK = [
    ("asterisk-allison", "asterisk-core-sounds-en-wav", AST / "en_US_f_Allison", "en"),
    ("asterisk-allison", "asterisk-core-sounds-es-wav", AST / "es_MX_f_Allison", "es"),
    ("asterisk-june", "asterisk-core-sounds-fr-wav", AST / "fr_CA_f_June", "fr"),
    ("asterisk-carlo", "asterisk-core-sounds-it-wav", AST / "it_IT_m_Carlo", "it"),
    ("asterisk-menardi", "asterisk-prompt-it-menardi-wav", AST / "it_IT_f_Menardi", "it"),
    ("asterisk-armelle", "asterisk-prompt-fr-armelle", AST / "fr", "fr"),
    ("asterisk-ivrvoice-ru", "asterisk-core-sounds-ru-wav", AST / "ru_RU_f_IvrvoiceRU", "ru"),
    ("asterisk-es-co", "asterisk-prompt-es-co", AST / "es", "es"),
]
DIGITS_PACKAGES = [*{pkg for _, pkg, _, _ in DIGIT_ASTERISK}, "tuxpaint-stamps-default",
                   "espeak-ng", "flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts",
                   "festvox-italp16k", "festvox-itapc16k", "festvox-ca-ona-hts", "festvox-ru"]
# espeak-ng languages: those the real voices speak (and close kin). Twenty more languages were
# tried and cost accuracy on the real voices: each language's ten words compete for the model.
ESPEAK_LANGS = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "es", "es-419", "fr-fr", "fr-be", "it", "de",
                "nl", "pt", "pt-br", "ru", "ro", "bg", "el", "ca", "da", "nb", "sv", "ja", "ko", "cmn", "yue", "sl", "lt",
                "be", "uk"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "adam", "Alex", "Alicia",
                   "Andrea", "Andy", "Annie", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward",
                   "gustave", "iven", "john", "linda", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
                   "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "klatt", "klatt2", "klatt3", "grandma",
                   "grandpa", "croak", ""]
WORDS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
# festival voice -> language. English voices read the word, the others the numeral through their own
# text rules (checked: ten different words of the expected lengths). The Czech and Finnish voices in
# Debian are left out: no real voice reads digits in those languages, and languages without real
# voices cost accuracy on the real ones (see ESPEAK_LANGS).
FESTIVAL_VOICES = {"kal_diphone": "en", "ked_diphone": "en", "cmu_us_slt_arctic_hts": "en",
                   "lp_diphone": "it", "pc_diphone": "it", "upc_ca_ona_hts": "ca", "msu_ru_nsh_clunits": "ru"}
# espeak-ng language code -> language of the held-out rule
ESPEAK_LANGUAGE = {"cmn": "zh", "en-029": "en"}


def espeak_language(code: str) -> str:
    return ESPEAK_LANGUAGE.get(code, code.split("-")[0])


def tuxpaint_language(key: str) -> str:
    """``en_GB`` -> ``en``, ``desc-fr`` -> ``fr``, ``zh_tw`` -> ``zh`` (nb and nn stay apart)."""
    return key.removeprefix("desc-").split("_")[0].lower()


def digit_sources() -> list[Source]:
    S: dict[str, Source] = {}
    for group, pkg, folder, lang in DIGIT_ASTERISK:
        files = [(pkg, p) for p in package_files(pkg)
                 if p.parent == folder / "digits" and re.fullmatch(r"\d\.(wav|gsm)", p.name)]
        if files:
            src = S.setdefault(group, Source("", group, [], 1e9, 1e9, trim_rel_db=-40.0, fixed_label=False, note=""))
            src.files += files
            src.note = "+".join(filter(None, [src.note, lang]))
    math = defaultdict(list)
    for p in package_files("tuxpaint-stamps-default"):
        m = re.fullmatch(r"(\d)(?:_(desc_)?([A-Za-z_]+))?\.ogg", p.name)
        if m and "/symbols/math/" in str(p):
            key = ("desc-" if m.group(2) else "") + (m.group(3) or "en")
            math[key].append(("tuxpaint-stamps-default", p))
    for key, files in math.items():
        S[f"tuxpaint-digits-{key}"] = Source("", f"tuxpaint-digits-{key}", files, 1e9, 1e9, trim_rel_db=-40.0,
                                             fixed_label=False, note=tuxpaint_language(key))
    return list(S.values())


def file_language(src: Source, pkg: str) -> str:
    for group, p, _, lang in DIGIT_ASTERISK:
        if group == src.group and p == pkg:
            return lang
    return src.note


def digit_heldout(rows: list[Row]) -> dict:
    """The held-out rule of the digits bundle, applied to the corpus's real voices.

    A voice is a real group; it counts for every language it speaks. For each language with at
    least two real voices, one voice that speaks only that language is held out for the test: its
    plain Tux Paint set (``tuxpaint-digits-<lang>``) if there is one, else the first by name among
    its Tux Paint sets, else among its Asterisk voices. Volunteers recorded at home are the least
    like the training's studio prompts and synthetic voices, so this is the harder choice. For each
    language with at least three real voices, one more monolingual voice goes to validation (early
    stopping), Tux Paint first again, so that every language in the test keeps at least one real voice
    in training. Languages with one real voice keep it in training and are not part of the held-out
    figure. Synthetic voices are never held out.
    """
    langs_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if not r.synthetic:
            langs_of[r.group].add(r.language)
    voices: dict[str, list[str]] = defaultdict(list)
    for g, ls in sorted(langs_of.items()):
        for lang in ls:
            voices[lang].append(g)

    def pick(lang: str, taken: set[str]) -> str | None:
        mono = [g for g in voices[lang] if langs_of[g] == {lang} and g not in taken]
        plain = [g for g in mono if g == f"tuxpaint-digits-{lang}"]
        tux = sorted(g for g in mono if g.startswith("tuxpaint-"))
        rest = sorted(g for g in mono if not g.startswith("tuxpaint-"))
        order = plain + tux + rest
        return order[0] if order else None

    test: dict[str, str] = {}
    val: dict[str, str] = {}
    for lang in sorted(voices):
        if len(voices[lang]) >= 2 and (g := pick(lang, set())):
            test[lang] = g
        if len(voices[lang]) >= 3 and lang in test and (g := pick(lang, {test[lang]})):
            val[lang] = g
    train = {lang: [g for g in gs if g not in test.values() and g not in val.values()] for lang, gs in voices.items()}
    return {
        "rule": "for each language with >= 2 real voices, hold out one monolingual voice for the test (Tux Paint "
                "volunteer first); for each language with >= 3, one more for validation; languages with one real "
                "voice keep it in training and are not in the held-out figure; synthetic voices never held out",
        "test_groups": dict(sorted(test.items())),
        "val_groups": dict(sorted(val.items())),
        "real_voices_per_language": {lang: gs for lang, gs in sorted(voices.items())},
        "real_training_voices_per_language": {lang: gs for lang, gs in sorted(train.items())},
        "train_args": " ".join([*(f"--test-group {g}" for g in sorted(test.values())),
                                *(f"--val-group {g}" for g in sorted(val.values()))]),
    }


def build_digit_group(job) -> tuple[list[Row], list[str]]:
    """Real digit clips: the label is the digit the file name starts with."""
    src, out, rate, _clip_s, _seed = job
    rows, errors = [], []
    for pkg, path in src.files:
        label = path.name[0]
        try:
            y, orig = decode(path, rate)
        except Exception as exc:
            errors.append(str(exc))
            continue
        y = trim(y, rate, abs_db=-55.0, rel_db=src.trim_rel_db, keep_s=0.05)
        if len(y) < 0.15 * rate:
            errors.append(f"{path}: nothing louder than the trim threshold")
            continue
        y = to_pcm(fade(y, rate))
        (Path(out) / label).mkdir(parents=True, exist_ok=True)
        rel = Path(label) / f"{safe(src.group)}--{safe(path.parent.parent.name) + '-' if src.group.startswith('asterisk') else ''}{safe(path.stem)}.wav"
        sf.write(str(Path(out) / rel), y, rate, subtype="PCM_16")
        rows.append(Row(str(rel), label, src.group, f"{pkg}:{path}", LICENCES.get(pkg, ""), orig, 0, round(len(y) / rate, 3),
                        file_language(src, pkg)))
    return rows, errors


def espeak_variants() -> list[str]:
    """Variant names that exist (a wrong name silently falls back to the default voice)."""
    for base in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/lib/aarch64-linux-gnu/espeak-ng-data", "/usr/share/espeak-ng-data"):
        folder = Path(base) / "voices" / "!v"
        if folder.is_dir():
            have = {p.name for p in folder.iterdir()}
            return [v for v in ESPEAK_VARIANTS if v == "" or v in have]
    return [""]


def espeak_langs() -> list[str]:
    """Languages whose espeak-ng voice exists and reads 0-9 as ten different words."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True).stdout.split("\n")[1:]
    have = {line.split()[1] for line in out if line.split()}
    good = []
    for lang in ESPEAK_LANGS:
        if lang not in have:
            continue
        ph = [subprocess.run(["espeak-ng", "-q", "-x", "-v", lang, str(d)], capture_output=True, text=True).stdout.strip()
              for d in range(10)]
        if all(ph) and len(set(ph)) == 10:
            good.append(lang)
    return good


def tts_job(job) -> tuple[list[Row], list[str]]:
    """Render one synthetic digit with espeak-ng, flite or festival, then vary it."""
    engine, voice, digit, k, out, rate, seed = job
    rng = random.Random(seed_of(seed, engine, voice, digit, k))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        if engine == "espeak-ng":
            lang = voice
            variant = rng.choice(espeak_variants())
            v = f"{lang}+{variant}" if variant else lang
            speed, pitch = rng.randint(110, 210), rng.randint(20, 80)
            cmd = ["espeak-ng", "-v", v, "-s", str(speed), "-p", str(pitch), "-w", str(wav), str(digit)]
            how = f"espeak-ng -v {v} -s {speed} -p {pitch} '{digit}'"
        elif engine == "flite":
            stretch = rng.uniform(0.8, 1.3)
            f0 = rng.randint(80, 220) if voice != "slt" else rng.randint(140, 260)
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}", "--setf", f"int_f0_target_mean={f0}",
                   "-t", WORDS_EN[digit], "-o", str(wav)]
            how = f"flite -voice {voice} duration_stretch={stretch:.2f} int_f0_target_mean={f0} '{WORDS_EN[digit]}'"
        else:
            stretch = rng.uniform(0.8, 1.3)
            txt = Path(tmp) / "x.txt"
            word = WORDS_EN[digit] if FESTIVAL_VOICES[voice] == "en" else str(digit)
            txt.write_text(word + "\n")
            cmd = ["text2wave", "-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.2f})",
                   "-o", str(wav), str(txt)]
            how = f"festival voice_{voice} Duration_Stretch={stretch:.2f} '{word}'"
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        if r.returncode or not wav.is_file():
            return [], [f"{how}: {r.stderr.decode(errors='replace').strip()[:200]}"]
        y, orig = decode(wav, rate)
    # speed/pitch variation by resampling, for the engines whose pitch is fixed
    if engine == "festival" or rng.random() < 0.3:
        factor = rng.uniform(0.88, 1.12)
        y = soxr.resample(y, rate, int(rate * factor)).astype(np.float32)
        how += f" resampled x{factor:.3f}"
    y = trim(y, rate, abs_db=-55.0, rel_db=-40.0, keep_s=0.05)
    if len(y) < 0.15 * rate:
        return [], [f"{how}: silent"]
    y = to_pcm(fade(y, rate) * 10 ** (rng.uniform(-20, 0) / 20))
    group = f"{engine}-{voice}"
    label = str(digit)
    rel = Path(label) / f"synthetic-{safe(group)}--{k:03d}.wav"
    (Path(out) / label).mkdir(parents=True, exist_ok=True)
    sf.write(str(Path(out) / rel), y, rate, subtype="PCM_16")
    language = espeak_language(voice) if engine == "espeak-ng" else FESTIVAL_VOICES[voice] if engine == "festival" else "en"
    return [Row(str(rel), label, group, f"synthetic:{how}", f"generated with {engine} (GPL-3+/BSD; output unrestricted)", orig, 1,
                round(len(y) / rate, 3), language)], []


# --------------------------------------------------------------------------------------
def write_outputs(out: Path, rows: list[Row], errors: list[str], info: dict) -> None:
    rows.sort(key=lambda r: r.path)
    with_language = any(r.language for r in rows)  # digits only; the smn manifest keeps its columns
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "source", "licence", "orig_rate", "synthetic", "duration_s"]
                   + (["language"] if with_language else []))
        for r in rows:
            w.writerow([r.path, r.label, r.group, r.source, r.licence, r.orig_rate, r.synthetic, r.duration_s]
                       + ([r.language] if with_language else []))
    per_label: dict[str, dict] = {}
    for r in rows:
        d = per_label.setdefault(r.label, {"clips": 0, "hours": 0.0, "synthetic_hours": 0.0, "groups": {}})
        d["clips"] += 1
        d["hours"] += r.duration_s / 3600
        d["synthetic_hours"] += r.duration_s / 3600 if r.synthetic else 0.0
        d["groups"][r.group] = round(d["groups"].get(r.group, 0.0) + r.duration_s / 60, 3)
    for d in per_label.values():
        d["hours"] = round(d["hours"], 3)
        d["synthetic_hours"] = round(d["synthetic_hours"], 3)
        d["groups"] = {g: round(m, 2) for g, m in sorted(d["groups"].items())}
    summary = {**info, "clips": len(rows), "hours": round(sum(r.duration_s for r in rows) / 3600, 3),
               "labels": dict(sorted(per_label.items())), "decode_errors": len(errors), "errors": errors[:50]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'label':>8} {'clips':>7} {'hours':>7} {'synthetic h':>11} {'groups':>6}")
    for lab, d in sorted(per_label.items()):
        print(f"{lab:>8} {d['clips']:7d} {d['hours']:7.2f} {d['synthetic_hours']:11.2f} {len(d['groups']):6d}")
    print(f"wrote {len(rows)} clips ({summary['hours']:.2f} h) to {out}; {len(errors)} files did not decode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["smn", "digits", "smn-check"], required=True)
    ap.add_argument("--out", type=Path, help="output folder (default ~/.cache/audioclf/corpus/<task>)")
    ap.add_argument("--rate", type=int, default=8000, choices=(8000, 16000), help="sample rate of the written clips")
    ap.add_argument("--clip-s", type=float, default=5.0, help="longest clip; longer files are cut into pieces")
    ap.add_argument("--cap-min", type=float, nargs=3, default=(15.0, 20.0, 15.0), metavar=("SPEECH", "MUSIC", "NOISE"),
                    help="smn: most minutes one group may contribute, per label")
    ap.add_argument("--synthetic-noise-min", type=float, default=4.0, help="smn: minutes per synthetic noise kind")
    ap.add_argument("--renditions", type=int, default=10, help="digits: synthetic renditions per voice and digit")
    ap.add_argument("--renditions-heldout", type=int, default=40,
                    help="digits: renditions per digit for the espeak-ng voices of languages with >= 2 real voices "
                         "(those of the held-out figure), which have few synthetic engines besides espeak-ng")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-install", action="store_true", help="never call apt-get; fail if a package is missing")
    ap.add_argument("--force", action="store_true", help="replace an existing corpus in --out")
    args = ap.parse_args()
    for name, value, least in (("--clip-s", args.clip_s, 0.5), ("--jobs", args.jobs, 1), ("--seed", args.seed, 0),
                               ("--synthetic-noise-min", args.synthetic_noise_min, 0), ("--renditions", args.renditions, 0),
                               ("--renditions-heldout", args.renditions_heldout, 0), ("--cap-min", min(args.cap_min), 0.1)):
        if not value >= least:
            ap.error(f"{name} {value}: must be at least {least}")
    out = (args.out or DEFAULT_ROOT / args.task).expanduser().resolve()
    repo = Path(__file__).resolve().parents[1]
    if out == repo or repo in out.parents:
        sys.exit(f"--out {out} is inside the repository; keep audio outside it")
    try:
        check_local_folder(out, what="corpus folder")
    except OutputError as exc:
        sys.exit(f"error: {exc}")
    if (out / "manifest.csv").exists():
        if not args.force:
            sys.exit(f"{out} already holds a corpus; pass --force to rebuild it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info = {"task": args.task, "rate": args.rate, "clip_s": args.clip_s, "seed": args.seed,
            "built_by": "scripts/build_corpus.py " + " ".join(sys.argv[1:])}
    errors: list[str] = []
    rows: list[Row] = []
    with Pool(args.jobs) as pool:
        if args.task in ("smn", "smn-check"):
            smn = args.task == "smn"
            ensure_packages([*(SMN_PACKAGES if smn else CHECK_PACKAGES), "ffmpeg"], install=not args.no_install)
            caps = [m * 60 for m in args.cap_min]
            sources = (smn_sources if smn else check_sources)(*caps)
            info["duplicates_dropped"] = dedupe(sources)
            jobs = [(s, str(out), args.rate, args.clip_s, args.seed) for s in sources]
            for r, e in pool.imap_unordered(build_group, jobs):
                rows += r
                errors += e
                print(f"  {r[0].label if r else '?':>6} {r[0].group if r else '':<28} {sum(x.duration_s for x in r) / 60:6.1f} min", flush=True)
            if smn:
                rows += build_synthetic_noise(out, args.rate, args.clip_s, args.seed, args.synthetic_noise_min * 60)
        else:
            ensure_packages([*DIGITS_PACKAGES, "ffmpeg"], install=not args.no_install)
            sources = digit_sources()
            jobs = [(s, str(out), args.rate, args.clip_s, args.seed) for s in sources]
            for r, e in pool.imap_unordered(build_digit_group, jobs):
                rows += r
                errors += e
            langs = espeak_langs()
            info["espeak_languages"] = langs
            # Languages the held-out figure covers have one or two real voices in training; more espeak-ng
            # renditions (random variant, rate and pitch each) give them more speaker variety.
            real_voices: dict[str, set[str]] = defaultdict(set)
            for r in rows:
                real_voices[r.language].add(r.group)
            main_langs = {lang for lang, gs in real_voices.items() if len(gs) >= 2}
            info["renditions"] = {"default": args.renditions, "espeak_heldout_languages": args.renditions_heldout,
                                  "heldout_languages": sorted(main_langs)}
            tts = [("espeak-ng", lang, d, k) for lang in langs for d in range(10)
                   for k in range(args.renditions_heldout if espeak_language(lang) in main_langs else args.renditions)]
            tts += [("flite", v, d, k) for v in FLITE_VOICES for d in range(10) for k in range(args.renditions)]
            tts += [("festival", v, d, k) for v in FESTIVAL_VOICES for d in range(10) for k in range(args.renditions)]
            done = 0
            for r, e in pool.imap_unordered(tts_job, [(*t, str(out), args.rate, args.seed) for t in tts], chunksize=8):
                rows += r
                errors += e
                done += 1
                if done % 500 == 0:
                    print(f"  synthetic digits {done}/{len(tts)}", flush=True)
            clips: dict[str, dict[str, int]] = defaultdict(lambda: {"real_clips": 0, "synthetic_clips": 0})
            voices: dict[str, dict[str, set]] = defaultdict(lambda: {"real": set(), "synthetic": set()})
            for r in rows:
                kind = "synthetic" if r.synthetic else "real"
                clips[r.language][f"{kind}_clips"] += 1
                voices[r.language][kind].add(r.group)
            info["languages"] = {lang: {**clips[lang], "real_voices": sorted(voices[lang]["real"]),
                                        "synthetic_voices": sorted(voices[lang]["synthetic"])} for lang in sorted(clips)}
            info["heldout"] = digit_heldout(rows)
            print("held out by the digits rule:", info["heldout"]["train_args"])
    info["build_s"] = round(time.time() - t0, 1)
    write_outputs(out, rows, errors, info)


if __name__ == "__main__":
    main()
