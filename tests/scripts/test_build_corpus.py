"""The labelling rules of the ``smn-check`` set in scripts/build_corpus.py, on a made-up package tree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"OggS" + name.encode())


def test_check_sources_label_by_folder_and_name(bc, tmp_path, monkeypatch):
    hw, fl, fd = tmp_path / "hw", tmp_path / "fl", tmp_path / "fd"
    touch(hw, "Sounds/voices/Default/Hello.ogg", "Sounds/voices/Default/Ow1.ogg", "Sounds/voices/Default/Laugh.ogg",
          "Sounds/voices/Default/Firepunch2.ogg", "Sounds/voices/Default/Ohdear.ogg", "Sounds/voices/Robot/Hello.ogg",
          "Sounds/voices/Singer/Hello.ogg", "Sounds/voices/Pirate/Traitor.ogg",
          "Music/City.ogg", "Sounds/explosion.ogg", "Sounds/1C.ogg", "Sounds/hell_ow.ogg", "Sounds/countdown2.ogg",
          "Sounds/ride_of_the_valkyries.ogg", "Sounds/cheering.ogg")
    touch(fl, "soundfx/npcs/male_merchant_01.ogg", "music/forest_theme.ogg", "soundfx/environment/wind_loop.ogg",
          "soundfx/door_open.ogg", "soundfx/male_hit.ogg", "soundfx/enemies/goblin_die.ogg")
    touch(fd, "effects/tux_ingame_comments/CantRepairThat.ogg", "music/town.ogg", "effects/bullets/laser.ogg",
          "effects/Influencer_Scream_Sound_0.ogg", "effects/Glass_Break.ogg", "effects/bot_sounds/death_sound_1.ogg")
    monkeypatch.setattr(bc, "HEDGEWARS", hw)
    monkeypatch.setattr(bc, "FLARE", fl)
    monkeypatch.setattr(bc, "FREEDROID", fd)

    sources = bc.check_sources(60.0, 120.0, 30.0)
    got = {s.group: (s.label, sorted(p.relative_to(tmp_path).as_posix() for _, p in s.files)) for s in sources}
    assert got == {
        "hedgewars-voice-Default": ("speech", ["hw/Sounds/voices/Default/Hello.ogg", "hw/Sounds/voices/Default/Ohdear.ogg"]),
        "hedgewars-voice-Pirate": ("speech", ["hw/Sounds/voices/Pirate/Traitor.ogg"]),
        "flare-merchants": ("speech", ["fl/soundfx/npcs/male_merchant_01.ogg"]),
        "freedroid-tux": ("speech", ["fd/effects/tux_ingame_comments/CantRepairThat.ogg"]),
        "hedgewars-music": ("music", ["hw/Music/City.ogg"]),
        "flare-music": ("music", ["fl/music/forest_theme.ogg"]),
        "freedroid-music": ("music", ["fd/music/town.ogg"]),
        # notes, hog voices, the countdown voice, a piece of music and a cheer are not noise
        "hedgewars-sfx": ("noise", ["hw/Sounds/explosion.ogg"]),
        "flare-sfx": ("noise", ["fl/soundfx/door_open.ogg", "fl/soundfx/environment/wind_loop.ogg"]),
        "freedroid-sfx": ("noise", ["fd/effects/Glass_Break.ogg", "fd/effects/bullets/laser.ogg"]),
    }
    caps = {s.label: s.cap_s for s in sources}
    assert caps == {"speech": 60.0, "music": 120.0, "noise": 30.0}
    assert all(s.trim_rel_db == bc.SPEECH_TRIM_REL_DB for s in sources if s.label == "speech")
    assert all(s.trim_rel_db is None for s in sources if s.label != "speech")
    # every package the set reads has its licence recorded for the manifest
    assert {pkg for s in sources for pkg, _ in s.files} == set(bc.CHECK_PACKAGES) <= set(bc.LICENCES)
