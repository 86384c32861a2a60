"""Tests for audioclf_core.audio_io with real files, real libsndfile and real ffmpeg.

Every fixture is generated here from a signal whose content is known: channel
``c`` is a sine of frequency ``_FREQS_HZ[c]`` and amplitude ``_AMPS[c]``, so a
decoded file can be checked sample by sample (lossless codecs) or by its
spectrum and level (lossy ones), and a swapped channel shows.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pytest
import soundfile as sf

from audioclf_core import audio_io
from audioclf_core.audio_io import AUDIO_EXTENSIONS, AudioInfo, expand_inputs, mix_to_mono, open_audio
from audioclf_core.errors import DecodeError, ParameterError, SourceUnavailableError

_FREQS_HZ = (220.0, 380.0, 540.0, 700.0, 860.0, 1020.0, 1180.0, 1340.0)
_AMPS = (0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3)

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="ffmpeg is not installed"
)
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")


def truth(sr: int, channels: int, seconds: float = 1.0) -> np.ndarray:
    """float32 (frames, channels): channel c = _AMPS[c] * sin(2 pi _FREQS_HZ[c] t)."""
    t = np.arange(round(sr * seconds)) / sr
    cols = [_AMPS[c] * np.sin(2 * np.pi * _FREQS_HZ[c] * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def decode_all(uri: str, block_frames: int = 1000, **kwargs) -> tuple[AudioInfo, np.ndarray]:
    """Decode a whole recording, checking the block contract on the way."""
    with open_audio(uri, **kwargs) as reader:
        blocks = list(reader.blocks(block_frames))
        info = reader.info
    assert blocks, "no blocks"
    for b in blocks:
        assert b.dtype == np.float32
        assert b.ndim == 2 and b.shape[1] == info.channels
    assert all(len(b) == block_frames for b in blocks[:-1])
    assert 1 <= len(blocks[-1]) <= block_frames
    return info, np.concatenate(blocks)


def ffmpeg_encode(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def write_float_wav(path: Path, x: np.ndarray, sr: int) -> Path:
    sf.write(path, x, sr, subtype="FLOAT")
    return path


# --------------------------------------------------------------------------
# Formats: every decoder path against a known signal


@dataclass(frozen=True)
class Case:
    name: str
    sr: int
    channels: int
    codec: str  # expected AudioInfo.codec: which decoder handled it
    atol: float | None  # max abs error against the truth; None = lossy, checked by spectrum and level
    rms_rtol: float = 0.15
    frames_tol: int = 0  # |info.frames - truth| and |decoded - truth|
    tools: tuple[str, ...] = ()  # external programs the writer (or the decoder) needs


def _sf_case(subtype: str, ext: str, fmt: str | None = None):
    def write(tmp: Path, x: np.ndarray, sr: int) -> Path:
        path = tmp / f"signal{ext}"
        sf.write(path, x, sr, subtype=subtype, format=fmt)
        return path

    return write


def _ffmpeg_case(ext: str, *args: str):
    def write(tmp: Path, x: np.ndarray, sr: int) -> Path:
        return ffmpeg_encode(write_float_wav(tmp / "src.wav", x, sr), tmp / f"signal{ext}", *args)

    return write


def _sox_gsm(tmp: Path, x: np.ndarray, sr: int) -> Path:
    src = tmp / "src.wav"
    sf.write(src, x, sr, subtype="PCM_16")
    subprocess.run(["sox", str(src), str(tmp / "signal.gsm")], check=True)
    return tmp / "signal.gsm"


# Lossy frame tolerances are what the codecs were seen to add or drop (AAC's
# 128-frame tail, WMA's 512-frame blocks, GSM-in-WAV's 320-frame blocks,
# ffmpeg's bitrate estimate for an MP3 without a Xing header), with margin.
FF = ("ffmpeg",)
CASES = [
    (Case("wav-u8", 8000, 1, "WAV/PCM_U8", 1 / 120), _sf_case("PCM_U8", ".wav")),
    (Case("wav-16", 16000, 2, "WAV/PCM_16", 1e-4), _sf_case("PCM_16", ".wav")),
    (Case("wav-24", 22050, 6, "WAV/PCM_24", 1e-6), _sf_case("PCM_24", ".wav")),
    (Case("wav-32", 44100, 8, "WAV/PCM_32", 1e-6), _sf_case("PCM_32", ".wav")),
    (Case("wav-float", 48000, 2, "WAV/FLOAT", 1e-7), _sf_case("FLOAT", ".wav")),
    (Case("wav-double", 96000, 1, "WAV/DOUBLE", 1e-7), _sf_case("DOUBLE", ".wav")),
    (Case("wav-ulaw", 8000, 1, "WAV/ULAW", 0.02), _sf_case("ULAW", ".wav")),
    (Case("wav-alaw", 8000, 2, "WAV/ALAW", 0.02), _sf_case("ALAW", ".wav")),
    (Case("flac-16", 44100, 2, "FLAC/PCM_16", 1e-4), _sf_case("PCM_16", ".flac")),
    (Case("flac-24", 96000, 6, "FLAC/PCM_24", 1e-6), _sf_case("PCM_24", ".flac")),
    (Case("aiff-16", 22050, 2, "AIFF/PCM_16", 1e-4), _sf_case("PCM_16", ".aiff")),
    (Case("caf-24", 16000, 1, "CAF/PCM_24", 1e-6), _sf_case("PCM_24", ".caf")),
    (Case("w64-float", 48000, 2, "W64/FLOAT", 1e-7), _sf_case("FLOAT", ".w64")),
    (Case("au-ulaw", 8000, 1, "AU/ULAW", 0.02), _sf_case("ULAW", ".au")),
    (Case("ogg-vorbis", 22050, 2, "OGG/VORBIS", None), _sf_case("VORBIS", ".ogg")),
    (Case("opus-sf", 48000, 2, "OGG/OPUS", None), _sf_case("OPUS", ".opus", "OGG")),
    # libsndfile's own MP3s have an approximate seek index: soundfile's read(),
    # which seeks around every block, turns them into garbage after ~2 blocks.
    (Case("mp3-sf", 16000, 1, "MP3", None), _sf_case("MPEG_LAYER_III", ".mp3", "MP3")),
    (
        Case("mp3-lame-cbr", 44100, 2, "MP3", None, tools=FF),
        _ffmpeg_case(".mp3", "-c:a", "libmp3lame", "-b:a", "128k"),
    ),
    (
        # VBR without a Xing header: libsndfile would stop after ~15 % of it.
        Case("mp3-vbr-no-xing", 22050, 2, "ffmpeg:mp3", None, frames_tol=2500, tools=FF),
        _ffmpeg_case(".mp3", "-c:a", "libmp3lame", "-q:a", "5", "-write_xing", "0"),
    ),
    (
        # the container states the length, and the decoder's end padding is cut to it
        Case("m4a-aac", 48000, 2, "ffmpeg:aac", None, tools=FF),
        _ffmpeg_case(".m4a", "-c:a", "aac", "-b:a", "96k"),
    ),
    (Case("wma", 16000, 2, "ffmpeg:wmav2", None, frames_tol=1100, tools=FF), _ffmpeg_case(".wma", "-c:a", "wmav2")),
    (
        Case("webm-opus", 48000, 2, "ffmpeg:opus", None, frames_tol=1100, tools=FF),
        _ffmpeg_case(".webm", "-c:a", "libopus"),
    ),
    (
        # A Matroska file, as screen and call recorders write them: found in folders too.
        Case("mkv-vorbis", 44100, 2, "ffmpeg:vorbis", None, frames_tol=1100, tools=FF),
        _ffmpeg_case(".mkv", "-c:a", "libvorbis"),
    ),
    (
        Case("gsm-raw-ffmpeg", 8000, 1, "ffmpeg:gsm", None, rms_rtol=0.35, tools=FF),
        _ffmpeg_case(".gsm", "-c:a", "libgsm"),
    ),
    (Case("gsm-raw-sox", 8000, 1, "ffmpeg:gsm", None, rms_rtol=0.35, tools=("sox", "ffmpeg")), _sox_gsm),
    (
        Case("gsm-in-wav", 8000, 1, "WAV/GSM610", None, rms_rtol=0.35, frames_tol=320, tools=FF),
        _ffmpeg_case(".wav", "-c:a", "libgsm_ms"),
    ),
]


def _needs(tools: tuple[str, ...]) -> list:
    return [needs_ffmpeg if tool == "ffmpeg" else needs_sox for tool in tools]


@pytest.mark.parametrize(
    ("case", "writer"), [pytest.param(c, w, id=c.name, marks=_needs(c.tools)) for c, w in CASES]
)
def test_decodes_known_signal(tmp_path: Path, case: Case, writer) -> None:
    x = truth(case.sr, case.channels)
    path = writer(tmp_path, x, case.sr)

    info, y = decode_all(str(path), block_frames=1000)

    assert info.uri == str(path)
    assert info.codec == case.codec
    assert (info.sample_rate, info.channels) == (case.sr, case.channels)
    assert info.frames is not None and abs(info.frames - len(x)) <= case.frames_tol
    assert info.duration_s == pytest.approx(info.frames / case.sr)
    assert abs(len(y) - len(x)) <= case.frames_tol
    assert y.shape[1] == case.channels

    if case.atol is not None:
        # Lossless (up to quantisation): the very samples, channel by channel.
        np.testing.assert_allclose(y, x, rtol=0, atol=case.atol)
        return
    # Lossy: codec delay shifts the samples, so compare what survives it: each
    # channel's frequency and level, which also pins the channel order.
    mid = y[len(y) // 4 : 3 * len(y) // 4]
    freqs = np.fft.rfftfreq(len(mid), 1 / case.sr)
    for c in range(case.channels):
        peak = freqs[np.argmax(np.abs(np.fft.rfft(mid[:, c])))]
        assert abs(peak - _FREQS_HZ[c]) <= 3, f"channel {c}: peak at {peak} Hz"
        rms = float(np.sqrt(np.mean(mid[:, c] ** 2)))
        assert rms == pytest.approx(_AMPS[c] / np.sqrt(2), rel=case.rms_rtol), f"channel {c}"


@needs_ffmpeg
@pytest.mark.parametrize("ext", [".ogg", ".opus"])
def test_multichannel_ogg_keeps_wav_channel_order(tmp_path: Path, ext: str) -> None:
    # Ogg stores 5.1 as L, C, R, Ls, Rs, LFE; libsndfile hands that order on,
    # so such a file goes to ffmpeg, which restores WAV's L, R, C, LFE, Ls, Rs.
    x = truth(48000, 6)
    args = ["-c:a", "libvorbis"] if ext == ".ogg" else ["-c:a", "libopus", "-mapping_family", "1"]
    path = ffmpeg_encode(write_float_wav(tmp_path / "src.wav", x, 48000), tmp_path / f"x{ext}", *args)
    info, y = decode_all(str(path), block_frames=4096)
    assert info.codec.startswith("ffmpeg:") and info.channels == 6
    freqs = np.fft.rfftfreq(len(y), 1 / 48000)
    for c in (0, 1, 2, 4, 5):  # the encoders low-pass the LFE channel (3) at ~120 Hz
        peak = freqs[np.argmax(np.abs(np.fft.rfft(y[:, c])))]
        assert abs(peak - _FREQS_HZ[c]) <= 3, f"channel {c}: peak at {peak} Hz"


def test_block_sizes_and_concatenation(tmp_path: Path) -> None:
    x = truth(8000, 2, seconds=1.2345)  # 9876 frames: no block size divides it evenly
    path = tmp_path / "x.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    for block_frames in (1, 7, 1000, 9876, 10**6):
        with open_audio(str(path)) as reader:
            blocks = list(reader.blocks(block_frames))
        assert all(1 <= len(b) <= block_frames for b in blocks)
        assert sum(len(b) for b in blocks) == len(x)
        np.testing.assert_array_equal(np.concatenate(blocks), x)


def test_blocks_restarts_from_the_beginning(tmp_path: Path) -> None:
    x = truth(8000, 1)
    path = tmp_path / "x.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    with open_audio(str(path)) as reader:
        first = np.concatenate(list(reader.blocks(300)))
        stale = reader.blocks(300)
        next(stale)
        second = np.concatenate(list(reader.blocks(700)))
        np.testing.assert_array_equal(first, x)
        np.testing.assert_array_equal(second, x)
        with pytest.raises(DecodeError, match="restarted"):
            next(stale)


@needs_ffmpeg
def test_ffmpeg_blocks_restart_and_early_stop_kills_ffmpeg(tmp_path: Path) -> None:
    x = truth(16000, 2, seconds=3)
    path = ffmpeg_encode(write_float_wav(tmp_path / "src.wav", x, 16000), tmp_path / "x.m4a", "-c:a", "aac")
    before = _children()  # a session's servers (PulseAudio, S3) may run beside the tests
    with open_audio(str(path)) as reader:
        a = np.concatenate(list(reader.blocks(512)))
        b = np.concatenate(list(reader.blocks(4096)))
        np.testing.assert_array_equal(a, b)
        it = reader.blocks(256)
        next(it)
        assert _children() - before, "ffmpeg should be running mid-stream"
        it.close()
        assert _children() - before == set()
        again = reader.blocks(256)
        next(again)
        assert _children() - before
    assert _children() - before == set()  # close() stops it too


def _children() -> set[int]:
    """PIDs of this process's live (non-zombie) children, from /proc."""
    pids = set()
    task_dir = Path(f"/proc/{os.getpid()}/task")
    if not task_dir.exists():
        pytest.skip("needs Linux /proc")
    for task in task_dir.iterdir():
        try:
            pids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    live = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(pid)
    return live


def test_memory_url_and_file_url(tmp_path: Path, memfs_root: str) -> None:
    x = truth(16000, 2)
    path = tmp_path / "x.flac"
    sf.write(path, x, 16000, subtype="PCM_24")
    mem = fsspec.filesystem("memory")
    mem.pipe(f"{memfs_root}/calls/x.flac", path.read_bytes())

    for uri in (f"memory://{memfs_root.lstrip('/')}/calls/x.flac", path.as_uri()):
        info, y = decode_all(uri, block_frames=4096)
        assert info.uri == uri
        assert (info.sample_rate, info.channels, info.frames, info.codec) == (16000, 2, 16000, "FLAC/PCM_24")
        np.testing.assert_allclose(y, x, atol=1e-6)


@needs_ffmpeg
@pytest.mark.parametrize("ext", [".m4a", ".gsm"])
def test_remote_ffmpeg_input_is_copied_and_the_copy_removed(
    tmp_path: Path, memfs_root: str, monkeypatch: pytest.MonkeyPatch, ext: str
) -> None:
    sr, ch = (16000, 2) if ext == ".m4a" else (8000, 1)
    x = truth(sr, ch)
    path = ffmpeg_encode(write_float_wav(tmp_path / "src.wav", x, sr), tmp_path / f"x{ext}")
    fsspec.filesystem("memory").pipe(f"{memfs_root}/x{ext}", path.read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    uri = f"memory://{memfs_root.lstrip('/')}/x{ext}"
    with open_audio(uri) as reader:
        assert reader.info.codec.startswith("ffmpeg:")
        assert [p.suffix for p in scratch.iterdir()] == [ext]  # raw GSM is found by its extension
        y = np.concatenate(list(reader.blocks(1024)))
    assert list(scratch.iterdir()) == []
    assert abs(len(y) - len(x)) <= 1100
    assert reader.info.sample_rate == sr and y.shape[1] == ch


@pytest.mark.parametrize("via", ["libsndfile", pytest.param("ffmpeg", marks=needs_ffmpeg)])
def test_long_file_is_decoded_in_bounded_memory(tmp_path: Path, via: str) -> None:
    sr, minutes, block_frames = 8000, 10, 4096
    one_second = truth(sr, 1)
    n = sr * 60 * minutes
    if via == "libsndfile":
        path = tmp_path / "long.wav"
        with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as out:
            for _ in range(60 * minutes):
                out.write(one_second)
    else:
        src = tmp_path / "long.wav"
        with sf.SoundFile(src, "w", samplerate=sr, channels=1, subtype="PCM_16") as out:
            for _ in range(60 * minutes):
                out.write(one_second)
        path = ffmpeg_encode(src, tmp_path / "long.gsm", "-c:a", "libgsm")
        src.unlink()
    decoded_bytes = n * 4  # what a whole-file read would hold: 19.2 MB

    frames = 0
    largest = 0
    energy = 0.0
    tracemalloc.start()
    try:
        with open_audio(str(path)) as reader:
            for block in reader.blocks(block_frames):
                largest = max(largest, len(block))
                frames += len(block)
                energy += float(np.sum(block.astype(np.float64) ** 2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert largest <= block_frames
    assert abs(frames - n) <= 320
    assert np.sqrt(energy / frames) == pytest.approx(_AMPS[0] / np.sqrt(2), rel=0.35 if via == "ffmpeg" else 1e-3)
    assert peak < decoded_bytes / 10, f"peak traced memory {peak} bytes"


# --------------------------------------------------------------------------
# Bad input: each a DecodeError naming the file and the reason


def _expect_open_error(uri: str, *fragments: str) -> str:
    with pytest.raises(DecodeError) as err:
        with open_audio(uri) as reader:
            for _ in reader.blocks(4096):
                pass
    msg = str(err.value)
    assert uri in msg
    for fragment in fragments:
        assert fragment in msg
    return msg


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    assert _expect_open_error(str(path), "empty file (0 bytes)").startswith(f"cannot decode {path}:")


def test_truncated_wav_header(tmp_path: Path) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, truth(8000, 1), 8000, subtype="PCM_16")
    path = tmp_path / "head.wav"
    path.write_bytes(full.read_bytes()[:20])
    _expect_open_error(str(path), "corrupt or truncated header", "Malformed 'fmt ' chunk", "only 20 bytes")


def test_header_only_wav_has_no_frames(tmp_path: Path) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, truth(8000, 1), 8000, subtype="PCM_16")
    path = tmp_path / "head.wav"
    path.write_bytes(full.read_bytes()[:44])
    _expect_open_error(str(path), "no audio (0 frames)")


def test_wav_data_shorter_than_its_header(tmp_path: Path) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, truth(8000, 1, seconds=2), 8000, subtype="PCM_16")
    path = tmp_path / "cut.wav"
    data = full.read_bytes()
    path.write_bytes(data[: 44 + 8000 * 2])  # one of two seconds
    _expect_open_error(str(path), "truncated", "ends at 1.00 s", "promises 2.00 s")


def test_wav_with_placeholder_size_is_not_truncated(tmp_path: Path) -> None:
    # Streaming recorders write 0xFFFFFFFF as the data size until they finish.
    x = truth(8000, 1)
    path = tmp_path / "stream.wav"
    sf.write(path, x, 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    info, y = decode_all(str(path))
    assert info.frames == len(x)
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-4)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize("riff_size", [None, 0])
def test_wav_whose_recorder_never_finished_its_header_is_read_to_its_end(tmp_path: Path, riff_size) -> None:
    # A recorder that stopped before it wrote its sizes leaves 0 in the data chunk (and maybe
    # the RIFF chunk): libsndfile reads 0 frames, but the audio is all there.
    x = truth(8000, 1, seconds=3.0)
    path = tmp_path / "crashed.wav"
    sf.write(path, x, 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = b"\0\0\0\0"
    if riff_size is not None:
        data[4:8] = riff_size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 0
    info, y = decode_all(str(path))
    assert info.frames == len(x) and y.shape == x.shape
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-4)
    path.write_bytes(bytes(data[:44 + 1000]))  # a header with a few samples only: under the threshold
    _expect_open_error(str(path), "no audio (0 frames)")


def test_flac_cut_midway(tmp_path: Path) -> None:
    full = tmp_path / "full.flac"
    sf.write(full, truth(16000, 1, seconds=4), 16000, subtype="PCM_16")
    path = tmp_path / "cut.flac"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _expect_open_error(str(path), "decoding failed at", "lost sync")
    at = float(msg.split("decoding failed at ")[1].split(" s")[0])
    assert 1.0 < at < 2.1, msg  # the cut is at about 2 s of 4


def test_mp3_with_xing_header_cut_midway(tmp_path: Path) -> None:
    full = tmp_path / "full.mp3"
    sf.write(full, truth(16000, 1, seconds=3), 16000, format="MP3")
    path = tmp_path / "cut.mp3"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_open_error(str(path), "truncated or corrupt", "promises 3.00 s")


@needs_ffmpeg
def test_m4a_cut_midway(tmp_path: Path) -> None:
    src = write_float_wav(tmp_path / "src.wav", truth(16000, 2, seconds=3), 16000)
    full = ffmpeg_encode(src, tmp_path / "full.m4a", "-c:a", "aac", "-movflags", "+faststart")
    path = tmp_path / "cut.m4a"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _expect_open_error(str(path), "decoding failed at")
    at = float(msg.split("decoding failed at ")[1].split(" s")[0])
    assert 0.5 < at < 2.5, msg


def _ogg_pages(data: bytes) -> list[int]:
    """Offsets of the pages of a whole Ogg file, walked from its first page by their sizes."""
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        pages.append(pos)
        n = data[pos + 26]
        pos += 27 + n + sum(data[pos + 27:pos + 27 + n])
    assert pos == len(data)
    return pages


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_ogg_cut_midway_is_refused_not_shortened(tmp_path: Path, subtype: str) -> None:
    # An Ogg file promises no length: libsndfile reports what the pages that arrived hold, so
    # a cut-off upload would pass for a shorter recording. The end-of-stream page tells them apart.
    full = tmp_path / "full.ogg"
    sf.write(full, truth(16000, 1, seconds=6), 16000, format="OGG", subtype=subtype)
    data = full.read_bytes()
    pages = _ogg_pages(data)
    assert data[pages[-1] + 5] & 0x04 and not any(data[p + 5] & 0x04 for p in pages[:-1])
    info, y = decode_all(str(full))  # the whole file is read whole
    assert abs(len(y) - 6 * 16000) <= 16000 // 50
    middle = pages[len(pages) // 2]
    cuts = {
        "at a page boundary": middle,
        "inside a page": middle + 40,
        "inside a header": middle + 10,
        "inside the last page": pages[-1] + 30,
    }
    said = {}
    for where, cut in cuts.items():
        path = tmp_path / "cut.ogg"
        path.write_bytes(data[:cut])
        said[where] = msg = _expect_open_error(str(path), "truncated")
        # Where libsndfile finds no frame at all, ffmpeg decodes up to the cut and says so.
        assert "without its end-of-stream page" in msg or "corrupt or truncated (ffmpeg" in msg, (where, msg)
    stops = [float(m.split("stops at ")[1].split(" s")[0]) for m in said.values() if "stops at" in m]
    assert stops, said  # the end-of-stream check, not only ffmpeg, refused some cuts
    assert all(0.5 < s < 6.0 for s in stops), said


def test_ogg_end_check_is_not_fooled_by_the_capture_pattern_in_a_packet(tmp_path: Path) -> None:
    from audioclf_core.audio_io import _ogg_cut

    full = tmp_path / "full.ogg"
    sf.write(full, truth(16000, 1, seconds=2), 16000, format="OGG", subtype="VORBIS")
    data = full.read_bytes()
    last = _ogg_pages(data)[-1]
    assert not _ogg_cut(data)
    # "OggS" inside the last page's payload, dressed as a header (version 0, no flags) whose
    # page would end exactly at the end of the file: the true last page still says "whole".
    body = last + 27 + data[last + 26]
    fake = bytearray(data)
    at = len(fake) - 40
    assert at > body
    fake[at:at + 27] = b"OggS" + bytes([0, 0]) + bytes(20) + bytes([1])  # one lacing value
    fake[at + 27] = len(fake) - (at + 28)
    assert not _ogg_cut(bytes(fake))
    # Bytes after the last page are not a cut.
    assert not _ogg_cut(data + b"\0" * 64)
    # Without the flag on its last page, the same stream is cut.
    unflagged = bytearray(data)
    unflagged[last + 5] &= ~0x04
    assert _ogg_cut(bytes(unflagged))


def test_random_bytes_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(10_000))
    _expect_open_error(str(path), "not an audio file")


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp3"])
def test_text_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("call id,agent,minutes\n" * 50)
    _expect_open_error(str(path), "not an audio file (it looks like text)")


def test_missing_path(tmp_path: Path) -> None:
    uri = str(tmp_path / "nope.wav")
    assert _expect_open_error(uri, "no such file") == f"cannot open {uri}: no such file"


def test_missing_memory_url(memfs_root: str) -> None:
    uri = f"memory://{memfs_root.lstrip('/')}/nope.wav"
    assert _expect_open_error(uri, "no such file") == f"cannot open {uri}: no such file"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "calls.wav").mkdir()
    _expect_open_error(str(tmp_path / "calls.wav"), "is a directory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_not_a_recording(tmp_path: Path) -> None:
    # no writer: a reader would wait for ever, and "empty file" would be the wrong word
    os.mkfifo(tmp_path / "live.wav")
    assert _expect_open_error(str(tmp_path / "live.wav"), "not a regular file") == \
        f"cannot open {tmp_path / 'live.wav'}: not a regular file (a named pipe, socket or device)"


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.wav"
    sf.write(path, truth(8000, 1), 8000)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user (root) who can read a mode-000 file")
        _expect_open_error(str(path), "permission denied")
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize(("bad", "subtype"), [(np.nan, "FLOAT"), (np.inf, "FLOAT"), (-np.inf, "DOUBLE")])
def test_nan_or_inf_samples(tmp_path: Path, bad: float, subtype: str) -> None:
    x = truth(8000, 2, seconds=2)
    x[12345, 1] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 8000, subtype=subtype)
    with open_audio(str(path)) as reader:
        seen = 0
        with pytest.raises(DecodeError) as err:
            for block in reader.blocks(5000):
                seen += len(block)
    assert str(err.value) == f"cannot decode {path}: contains NaN/inf samples at 1.54 s"  # 12345 / 8000 s
    assert seen == 10000  # the two clean blocks came through first


@pytest.mark.parametrize("sr", [500, 999, 384_001, 400_000])
def test_sample_rate_out_of_range(tmp_path: Path, sr: int) -> None:
    path = tmp_path / f"r{sr}.wav"
    sf.write(path, np.zeros(2000, dtype=np.float32), sr)
    _expect_open_error(str(path), f"sample rate {sr} Hz is outside 1000..384000 Hz")


@pytest.mark.parametrize("sr", [1000, 384_000])
def test_sample_rates_at_the_limits_are_read(tmp_path: Path, sr: int) -> None:
    path = tmp_path / f"r{sr}.wav"
    x = np.linspace(-0.5, 0.5, 2000, dtype=np.float32)
    sf.write(path, x, sr, subtype="FLOAT")
    with open_audio(str(path)) as reader:
        assert reader.info.sample_rate == sr
        np.testing.assert_array_equal(np.concatenate(list(reader.blocks(700)))[:, 0], x)


def test_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = tmp_path / "x.wav"
    sf.write(wav, truth(8000, 1), 8000)
    m4a = tmp_path / "x.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(1000))  # libsndfile cannot read it either way
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    _expect_open_error(str(m4a), "needs ffmpeg, which is not installed")
    info, _ = decode_all(str(wav))  # libsndfile's formats do not need it
    assert info.codec == "WAV/PCM_16"


def test_parameter_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, truth(8000, 1), 8000)
    with open_audio(str(path)) as reader:
        for bad in (0, -5, 1.5, True, "100"):
            with pytest.raises(ParameterError, match="block_frames"):
                reader.blocks(bad)  # raised at the call, before any iteration
    with pytest.raises(ParameterError, match="closed"):
        reader.blocks(100)
    with pytest.raises(ParameterError):
        open_audio("")


def test_unknown_protocol() -> None:
    with pytest.raises(DecodeError, match=r"^cannot open nosuchproto://b/x\.wav: "):
        open_audio("nosuchproto://b/x.wav")


def test_read_error_midway_is_not_taken_for_the_end(
    tmp_path: Path, memfs_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libsndfile reads through callbacks that turn an exception into "0 bytes",
    # that is, a clean end of file: a dropped connection must still show.
    from fsspec.implementations.memory import MemoryFile

    path = tmp_path / "x.wav"
    sf.write(path, truth(8000, 1, seconds=2), 8000, subtype="PCM_16")
    fsspec.filesystem("memory").pipe(f"{memfs_root}/x.wav", path.read_bytes())
    real_read = MemoryFile.read

    def flaky_read(self, n=-1):
        if self.tell() >= 16_044:  # after one second of 16-bit audio
            raise ConnectionResetError("connection reset by peer")
        return real_read(self, n)

    monkeypatch.setattr(MemoryFile, "read", flaky_read)
    uri = f"memory://{memfs_root.lstrip('/')}/x.wav"
    msg = _expect_open_error(uri, "read error at", "connection reset by peer")
    at = float(msg.split("read error at ")[1].split(" s")[0])
    assert 0.9 <= at <= 1.6, msg  # libsndfile reads ahead by up to 8 KiB (0.5 s here)
    # The storage failed, not the recording: callers may retry.
    with pytest.raises(SourceUnavailableError):
        with open_audio(uri) as reader:
            for _ in reader.blocks(4096):
                pass


def test_storage_failure_at_open_is_retryable_but_a_missing_file_is_not(
    memfs_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    fsspec.filesystem("memory").pipe(f"{memfs_root}/y.wav", b"RIFF")
    uri = f"memory://{memfs_root.lstrip('/')}/y.wav"

    def down(self, path, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(DecodeError) as missing:
        open_audio(uri.replace("y.wav", "none.wav"))
    assert not isinstance(missing.value, SourceUnavailableError)
    monkeypatch.setattr(MemoryFileSystem, "info", down)
    with pytest.raises(SourceUnavailableError, match="Connection refused"):
        open_audio(uri)


@needs_ffmpeg
def test_s3_prefix_glob_and_decoding(tmp_path: Path, s3_server, s3_bucket: str) -> None:
    import s3fs

    options = s3_server.storage_options
    fs = s3fs.S3FileSystem(**options)
    x = truth(16000, 2)
    flac = tmp_path / "a.flac"
    sf.write(flac, x, 16000, subtype="PCM_16")
    m4a = ffmpeg_encode(write_float_wav(tmp_path / "src.wav", x, 16000), tmp_path / "b.m4a", "-c:a", "aac")
    for key, src in [("2026/11/a.flac", flac), ("2026/11/deep/b.m4a", m4a), ("2026/12/c.FLAC", flac)]:
        fs.pipe(f"{s3_bucket}/{key}", src.read_bytes())
    fs.pipe(f"{s3_bucket}/2026/11/manifest.json", b"{}")
    base = f"s3://{s3_bucket}"

    uris, warnings = expand_inputs(
        [f"{base}/2026/11/", f"{base}/2026/*/c.FLAC", f"{base}/2026/11/a.flac", f"{base}/empty/"],
        storage_options=options,
    )
    assert uris == [f"{base}/2026/11/a.flac", f"{base}/2026/11/deep/b.m4a", f"{base}/2026/12/c.FLAC"]
    assert warnings == [f"no recordings under '{base}/empty/' (nothing is stored under that prefix)"]

    info, y = decode_all(uris[0], storage_options=options)  # streamed through libsndfile
    assert (info.codec, info.frames) == ("FLAC/PCM_16", len(x))
    np.testing.assert_allclose(y, x, atol=1e-4)
    info, y = decode_all(uris[1], storage_options=options)  # copied, then ffmpeg
    assert info.codec == "ffmpeg:aac" and abs(len(y) - len(x)) <= 1100
    assert _expect_open_error(f"{base}/2026/11/nope.wav") == f"cannot open {base}/2026/11/nope.wav: no such file"


def test_a_double_colon_in_a_name_is_part_of_the_name(tmp_path: Path, s3_server, s3_bucket: str) -> None:
    """fsspec chains URLs with ``::``; a file or key whose name holds it is still one file."""
    import s3fs

    from audioclf_core.audio_io import is_chained, list_recordings

    assert is_chained("zip://calls::s3://bucket/a.zip") and is_chained("simplecache::s3://bucket/a.wav")
    assert not any(is_chained(u) for u in ("/calls/call::1.wav", "call::1.wav", "s3://bucket/a::b.wav"))
    x = truth(16000, 1)
    local = tmp_path / "calls" / "call::1.flac"
    local.parent.mkdir()
    sf.write(local, x, 16000, subtype="PCM_16")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.pipe(f"{s3_bucket}/day/agent::7.flac", local.read_bytes())
    remote = f"s3://{s3_bucket}/day/agent::7.flac"
    for folder, uri, options in ((str(tmp_path / "calls"), str(local), {}),
                                 (f"s3://{s3_bucket}/day/", remote, s3_server.storage_options)):
        assert expand_inputs([folder], storage_options=options) == ([uri], [])
        assert expand_inputs([uri], storage_options=options) == ([uri], [])
        assert [f.uri for f in list_recordings(folder, storage_options=options)] == [uri]
        info, y = decode_all(uri, storage_options=options)
        assert info.frames == len(x) and np.allclose(y, x, atol=1e-4)


# --------------------------------------------------------------------------
# expand_inputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "calls"
    for rel in ["a.wav", "B.WAV", "notes.txt", "sub/c.Flac", "sub/e.json", "sub/deeper/d.mp3", "sub/deeper/f.m4a"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "empty").mkdir()
    return root


def test_expand_folder_recursive_case_insensitive(tree: Path) -> None:
    uris, warnings = expand_inputs([str(tree)])
    expected = ["B.WAV", "a.wav", "sub/c.Flac", "sub/deeper/d.mp3", "sub/deeper/f.m4a"]
    assert uris == [str(tree / rel) for rel in expected]
    assert warnings == []


def test_expand_extension_filter(tree: Path) -> None:
    uris, _ = expand_inputs([str(tree) + "/"], extensions={".FLAC", ".m4a"})
    assert uris == [str(tree / "sub/c.Flac"), str(tree / "sub/deeper/f.m4a")]


def test_expand_explicit_file_whatever_its_extension(tree: Path) -> None:
    uris, warnings = expand_inputs([str(tree / "notes.txt")])
    assert (uris, warnings) == ([str(tree / "notes.txt")], [])


def test_expand_glob(tree: Path) -> None:
    uris, warnings = expand_inputs([str(tree / "*.wav"), str(tree / "**" / "*.mp3")])
    assert uris == [str(tree / "a.wav"), str(tree / "sub/deeper/d.mp3")]
    assert warnings == []


def test_expand_glob_matching_a_folder(tree: Path) -> None:
    uris, _ = expand_inputs([str(tree / "su*")])
    assert uris == [str(tree / rel) for rel in ["sub/c.Flac", "sub/deeper/d.mp3", "sub/deeper/f.m4a"]]


def test_expand_empty_glob_and_empty_folder_warn(tree: Path) -> None:
    uris, warnings = expand_inputs([str(tree / "*.opus"), str(tree / "empty"), str(tree / "sub/*.json")])
    assert uris == []
    assert warnings == [
        f"no recordings match '{tree / '*.opus'}'",
        f"no recordings under '{tree / 'empty'}'",
        f"no recordings match '{tree / 'sub/*.json'}' (1 other file, none with an audio extension)",
    ]


def test_expand_dedups_and_keeps_input_order(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    a = str(tree / "a.wav")
    uris, _ = expand_inputs(["calls/sub/deeper/d.mp3", str(tree), a, "file://" + a, "calls/a.wav", str(tree / "*.wav")])
    assert uris == [
        str(tree / "sub/deeper/d.mp3"),  # relative paths come back absolute
        str(tree / "B.WAV"),
        a,
        str(tree / "sub/c.Flac"),
        str(tree / "sub/deeper/f.m4a"),
    ]


def test_expand_missing_path_is_kept(tree: Path, monkeypatch) -> None:
    missing = str(tree / "gone.wav")
    uris, warnings = expand_inputs([missing, str(tree / "a.wav")])
    assert uris == [missing, str(tree / "a.wav")]
    assert len(warnings) == 1 and f"'{missing}' does not exist" in warnings[0]
    # Named as an existing file would be: absolute, so its rows match from any folder.
    monkeypatch.chdir(tree)
    uris, _ = expand_inputs(["gone.wav", "a.wav"])
    assert uris == [missing, str(tree / "a.wav")]


def test_expand_memory_folder(tmp_path: Path, memfs_root: str) -> None:
    mem = fsspec.filesystem("memory")
    wav = tmp_path / "x.wav"
    sf.write(wav, truth(8000, 1), 8000)
    for rel in ["2026/11/b.wav", "2026/11/a.MP3", "2026/11/meta.json", "2026/12/c.wav"]:
        mem.pipe(f"{memfs_root}/{rel}", wav.read_bytes())
    base = f"memory://{memfs_root.lstrip('/')}"

    uris, warnings = expand_inputs([f"{base}/2026/11/", f"{base}/2026/*/c.wav", f"{base}/2026/11/b.wav"])
    assert uris == [f"{base}/2026/11/a.MP3", f"{base}/2026/11/b.wav", f"{base}/2026/12/c.wav"]
    assert warnings == []
    info, _ = decode_all(uris[1])  # what comes out opens
    assert info.frames == 8000

    uris, warnings = expand_inputs([f"{base}/nothing/", f"{base}/nothing.wav", f"{base}/2026/*.flac"])
    assert uris == [f"{base}/nothing.wav"]
    assert warnings == [
        f"no recordings under '{base}/nothing/' (nothing is stored under that prefix)",
        f"'{base}/nothing.wav' does not exist; kept, to be reported as an error",
        f"no recordings match '{base}/2026/*.flac'",
    ]


def test_expand_parameter_errors(tree: Path) -> None:
    with pytest.raises(ParameterError, match="single string"):
        expand_inputs(str(tree))
    with pytest.raises(ParameterError, match="not a path or URL"):
        expand_inputs([""])
    with pytest.raises(ParameterError, match="starting with a dot"):
        expand_inputs([str(tree)], extensions={"wav"})


def test_audio_extensions() -> None:
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)
    assert {".wav", ".flac", ".mp3", ".m4a", ".gsm", ".opus", ".amr", ".wma", ".webm", ".mkv", ".mka"} <= AUDIO_EXTENSIONS


def test_core_io_imports_no_orchestration_or_cli() -> None:
    code = (
        "import sys, audioclf_core.audio_io; "
        "bad = {'prefect', 'sounddevice', 'typer', 's3fs', 'librosa', 'pydub'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def memfs_root() -> str:
    """A private folder in fsspec's process-wide memory filesystem, removed afterwards."""
    root = f"/audioclf-test-{uuid.uuid4().hex}"
    yield root
    mem = fsspec.filesystem("memory")
    if mem.exists(root):
        mem.rm(root, recursive=True)


def test_module_has_the_documented_api() -> None:
    assert set(audio_io.__all__) >= {"AUDIO_EXTENSIONS", "AudioInfo", "AudioReader", "expand_inputs", "open_audio"}


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_mix_to_mono_is_the_mean_of_the_channels(channels: int) -> None:
    rng = np.random.default_rng(channels)
    x = rng.uniform(-1, 1, size=(10_000, channels)).astype(np.float32)
    y = mix_to_mono(x)
    assert y.shape == (10_000, 1) and y.dtype == np.float32
    want = x.astype(np.float64).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)
    if channels <= 2:  # one or two channels: exactly numpy's float32 mean
        np.testing.assert_array_equal(y, x.mean(axis=1, keepdims=True, dtype=np.float32))


def test_list_recordings_filters_by_pattern_and_modification_time(tmp_path):
    """``pattern`` matches the path under the source; ``modified_since`` keeps newer files only."""
    import time
    from datetime import datetime, timedelta, timezone

    from audioclf_core.audio_io import list_recordings

    for rel in ("d1/calls-1.wav", "d1/x.wav", "d2/calls-2.WAV", "d2/notes.txt", "d2/old/calls-0.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"RIFF")
    names = lambda found: [f.uri.rsplit("/", 2)[-2] + "/" + f.uri.rsplit("/", 1)[-1] for f in found]  # noqa: E731
    assert names(list_recordings(str(tmp_path))) == ["d1/calls-1.wav", "d1/x.wav", "d2/calls-2.WAV", "old/calls-0.wav"]
    # as fsspec globs: * stays within one folder, ** spans any number of them
    assert names(list_recordings(str(tmp_path), pattern="*/calls-*")) == ["d1/calls-1.wav", "d2/calls-2.WAV"]
    assert names(list_recordings(str(tmp_path), pattern="d1/*")) == ["d1/calls-1.wav", "d1/x.wav"]
    assert names(list_recordings(str(tmp_path), pattern="d2/*")) == ["d2/calls-2.WAV"]
    assert names(list_recordings(str(tmp_path), pattern="**/calls-*")) == ["d1/calls-1.wav", "d2/calls-2.WAV", "old/calls-0.wav"]
    assert names(list_recordings(str(tmp_path), pattern="*.wav")) == []  # no recording at the top
    # the folder above the source is not part of what the pattern sees
    assert list_recordings(str(tmp_path), pattern=f"*{tmp_path.name}/d1/*") == []

    past = time.time() - 2 * 3600
    os.utime(tmp_path / "d1" / "x.wav", (past, past))
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    assert names(list_recordings(str(tmp_path), modified_since=since)) == ["d1/calls-1.wav", "d2/calls-2.WAV", "old/calls-0.wav"]
    # a naive time is UTC
    assert len(list_recordings(str(tmp_path), modified_since=since.replace(tzinfo=None))) == 3
    x = next(f for f in list_recordings(str(tmp_path)) if f.uri.endswith("x.wav"))
    assert abs(x.modified.timestamp() - past) < 1


def test_recordings_inside_a_zip_archive_are_listed_opened_and_identified(tmp_path):
    """A chained URL (``zip://PREFIX::ARCHIVE``) lists the archive's members; each member's URI keeps
    the chain, so it opens and decodes; its etag is the member's CRC-32 and its time the zip's."""
    import zipfile
    from datetime import datetime, timezone

    from audioclf_core.audio_io import list_recordings

    a, b = truth(8000, 1, seconds=2.0), truth(16000, 2, seconds=1.0)
    sf.write(tmp_path / "a.wav", a, 8000, subtype="FLOAT")
    sf.write(tmp_path / "b.flac", b, 16000, subtype="PCM_24")
    archive = tmp_path / "calls.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(zipfile.ZipInfo("2026/01/a.wav", date_time=(2026, 1, 5, 6, 7, 8)), (tmp_path / "a.wav").read_bytes(),
                   compress_type=zipfile.ZIP_DEFLATED)
        z.writestr(zipfile.ZipInfo("2026/02/b.flac", date_time=(2026, 2, 3, 4, 5, 6)), (tmp_path / "b.flac").read_bytes())
        z.writestr("2026/02/notes.txt", "not audio")
    src = f"zip://2026::{archive}"

    found = list_recordings(src)
    assert [f.uri for f in found] == [f"zip://2026/01/a.wav::{archive}", f"zip://2026/02/b.flac::{archive}"]
    with zipfile.ZipFile(archive) as z:
        crcs = [z.getinfo(name).CRC for name in ("2026/01/a.wav", "2026/02/b.flac")]
    assert [f.etag for f in found] == [f"crc32:{c:08x}" for c in crcs]
    assert [f.modified for f in found] == [datetime(2026, 1, 5, 6, 7, 8, tzinfo=timezone.utc),
                                           datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)]
    assert list_recordings(src, modified_since=datetime(2026, 2, 1, tzinfo=timezone.utc)) == [found[1]]
    assert list_recordings(src, pattern="02/*") == [found[1]]
    assert expand_inputs([src])[0] == [f.uri for f in found]

    for f, want, sr in zip(found, (a, b), (8000, 16000)):
        with open_audio(f.uri) as reader:
            assert (reader.info.sample_rate, reader.info.etag) == (sr, f.etag)
            got = np.concatenate(list(reader.blocks(3000)))
        np.testing.assert_allclose(got, want, atol=2 ** -22)

    # a tar file reads the same way
    import tarfile

    with tarfile.open(tmp_path / "calls.tar.gz", "w:gz") as t:
        t.add(tmp_path / "a.wav", "calls/a.wav")
    (member,) = list_recordings(f"tar://calls::{tmp_path / 'calls.tar.gz'}")
    assert member.uri == f"tar://calls/a.wav::{tmp_path / 'calls.tar.gz'}"
    with open_audio(member.uri) as reader:
        np.testing.assert_array_equal(np.concatenate(list(reader.blocks(5000))), a)


def test_an_archive_named_by_a_relative_path_gives_its_members_one_identity(tmp_path, monkeypatch):
    """``zip://::calls.zip`` from one folder and ``zip://::/abs/calls.zip`` (or ``file://``) from
    another name the same members: a re-run must find them done, not add them twice."""
    import zipfile

    from audioclf_core.audio_io import list_recordings

    (tmp_path / "calls").mkdir()
    sf.write(tmp_path / "a.wav", truth(8000, 1, seconds=1.0), 8000)
    archive = tmp_path / "calls" / "2026-11.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tmp_path / "a.wav", "day1/a.wav")
    want = [f"zip://day1/a.wav::{archive}"]
    monkeypatch.chdir(tmp_path / "calls")
    for spec in ("zip://::2026-11.zip", "zip://::./2026-11.zip", f"zip://::file://{archive}", f"zip://::{archive}"):
        assert [f.uri for f in list_recordings(spec)] == want, spec
        assert expand_inputs([spec])[0] == want, spec
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["zip://day1/a.wav::calls/2026-11.zip", "tar://::nowhere.tar"])[0] == \
        want + [f"tar://::{tmp_path / 'nowhere.tar'}"]  # a missing one too: its error row names the absolute path


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_linked_recording_is_listed_as_it_opens(tmp_path):
    """A listing must describe a symlink by its target, as opening it does: the identity
    recorded at the first run is compared with the listing's at the next."""
    from audioclf_core.audio_io import list_recordings

    sf.write(tmp_path / "a.wav", truth(8000, 1, seconds=1.0), 8000)
    os.utime(tmp_path / "a.wav", (1_000_000_000, 1_000_000_000))  # the target is old, the link new
    (tmp_path / "link.wav").symlink_to("a.wav")
    (tmp_path / "broken.wav").symlink_to("gone.wav")
    found = {Path(f.uri).name: f for f in list_recordings(str(tmp_path))}
    assert set(found) == {"a.wav", "link.wav", "broken.wav"}  # the broken one stays, to become an error row
    with open_audio(found["link.wav"].uri) as reader:
        assert (found["link.wav"].size, found["link.wav"].etag) == (reader.info.size, reader.info.etag)
    assert (found["link.wav"].size, found["link.wav"].etag) == (found["a.wav"].size, found["a.wav"].etag)


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_linked_folder_is_walked_once(tmp_path):
    """An archive assembled from links to folders loses none of their recordings: a folder
    and a glob follow them, and each real folder is listed once (a link back up the tree, or
    to a folder listed already, adds nothing and does not loop)."""
    from audioclf_core.audio_io import list_recordings

    root, elsewhere = tmp_path / "calls", tmp_path / "nas" / "2026-11"
    (root / "own").mkdir(parents=True)
    (elsewhere / "agent-7").mkdir(parents=True)
    for f in (root / "own" / "a.wav", elsewhere / "b.wav", elsewhere / "agent-7" / "c.wav"):
        sf.write(f, truth(8000, 1, seconds=0.5), 8000)
    (root / "nov.wav").symlink_to(elsewhere)  # a folder, whatever its name says
    (elsewhere / "up").symlink_to(root)  # a loop
    (root / "again").symlink_to(root / "own")  # listed already, under its own name
    (root / "gone").symlink_to(tmp_path / "nowhere")  # a broken link to no file is nothing
    want = [str(root / rel) for rel in ("nov.wav/agent-7/c.wav", "nov.wav/b.wav", "own/a.wav")]
    assert [f.uri for f in list_recordings(str(root))] == want
    assert [f.uri for f in list_recordings(str(root), pattern="nov.wav/*/*.wav")] == want[:1]
    assert expand_inputs([str(root)]) == (want, [])
    # A glob that matches the link walks it as the root: its link up is then a way to calls/,
    # whose own folders are listed once, and the way back to nov.wav is not taken again.
    assert expand_inputs([str(root / "n*")]) == (want[:2] + [str(root / "nov.wav/up/own/a.wav")], [])
    assert [decode_all(u)[0].frames for u in want] == [4000] * 3


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_links_to_one_folder_list_it_once(tmp_path):
    # two links to one folder, and one into it: each recording once, by the first link's path
    target, root = tmp_path / "nas", tmp_path / "calls"
    (target / "sub").mkdir(parents=True)
    root.mkdir()
    for rel in ("a.wav", "sub/b.wav"):
        (target / rel).write_bytes(b"x")
    for name, to in (("a", target), ("b", target / "sub"), ("c", target)):
        (root / name).symlink_to(to)
    assert expand_inputs([str(root)])[0] == [str(root / "a" / "a.wav"), str(root / "a" / "sub" / "b.wav")]


def test_an_object_store_folder_marker_is_not_a_recording(s3_server, s3_bucket: str) -> None:
    """An empty key ending in ``/`` is what a console writes to "create a folder": not a
    recording (it was listed, and became an error row). A key that holds bytes stays."""
    import s3fs

    from audioclf_core.audio_io import list_recordings

    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    wav = io.BytesIO()
    sf.write(wav, truth(8000, 1, seconds=0.5), 8000, format="WAV")
    for key, data in (("day/x.wav/", b""), ("day/x.wav/in.wav", wav.getvalue()), ("day/empty.wav/", b""),
                      ("day/odd.wav/", b"not audio")):
        fs.pipe(f"{s3_bucket}/{key}", data)
    base = f"s3://{s3_bucket}/day/"
    want = [base + "odd.wav/", base + "x.wav/in.wav"]
    assert [f.uri for f in list_recordings(base, storage_options=s3_server.storage_options)] == want
    assert expand_inputs([base], storage_options=s3_server.storage_options) == (want, [])


def test_files_whose_store_keeps_no_time_are_kept_by_modified_since():
    """A store that reports no modification time cannot show a file is old: it is listed
    (and skipped downstream if done), not silently dropped."""
    from datetime import datetime, timezone

    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from audioclf_core.audio_io import list_recordings

    class NoTimes(MemoryFileSystem):
        """An in-memory store whose listings carry no times (as some stores' do not)."""

        protocol = "notimes"
        store, pseudo_dirs = {}, [""]

        @classmethod
        def _strip_protocol(cls, path):
            return MemoryFileSystem._strip_protocol(path.replace("notimes://", "memory://", 1))

        def info(self, path, **kwargs):
            return {k: v for k, v in super().info(path, **kwargs).items() if k != "created"}

        def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
            out = super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=True, **kwargs)
            out = {p: {k: v for k, v in i.items() if k != "created"} for p, i in out.items()}
            return out if detail else sorted(out)

    fsspec.register_implementation("notimes", NoTimes, clobber=True)
    fs = NoTimes()
    fs.pipe("/calls/a.wav", b"RIFF")
    found = list_recordings("notimes://calls", modified_since=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert [(f.uri, f.modified) for f in found] == [("notimes://calls/a.wav", None)]


def test_a_broken_or_missing_archive_is_one_clear_error(tmp_path):
    import zipfile

    from audioclf_core.audio_io import list_recordings

    sf.write(tmp_path / "a.wav", truth(8000, 1), 8000)
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.write(tmp_path / "a.wav", "a.wav")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # cut short in a copy: no directory
    missing = tmp_path / "missing.zip"

    uris, warnings = expand_inputs([f"zip://::{broken}", f"zip://::{missing}"])
    assert uris == [f"zip://::{broken}", f"zip://::{missing}"]  # kept, to become error rows
    assert warnings == [
        f"cannot resolve 'zip://::{broken}': {broken} is not a readable archive (File is not a zip file); "
        "kept, to be reported as an error",
        f"cannot resolve 'zip://::{missing}': no such file; kept, to be reported as an error",
    ]
    _expect_open_error(f"zip://::{broken}", f"{broken} is not a readable archive")
    _expect_open_error(f"zip://a.wav::{missing}", "no such file")
    with pytest.raises(ParameterError, match="is not a readable archive"):
        list_recordings(f"zip://::{broken}")
    with pytest.raises(ParameterError, match="no such folder"):  # asking again cannot help: no retry
        list_recordings(f"zip://::{missing}")
    assert list_recordings(f"zip://::{missing}", missing_ok=True) == []
