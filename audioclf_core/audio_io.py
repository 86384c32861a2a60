"""Find recordings and decode them block by block.

This is the only module of the core that opens files or URLs. Everything goes
through fsspec, so local paths, ``file://``, ``memory://`` and ``s3://`` (with
s3fs installed) behave alike.

Decoding prefers libsndfile (through soundfile): it reads from a file object,
so a remote recording streams without a local copy, and it knows exact frame
counts. ffmpeg takes over where libsndfile cannot read a file (M4A/AAC, raw
GSM, WMA, AMR, WebM, ...) or cannot be trusted with it (see ``_prefer_ffmpeg``).
Either way a recording is decoded block by block, so memory does not grow with
its length.
"""

from __future__ import annotations

import dataclasses
import posixpath

import io
import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

import fsspec
import numpy as np
import soundfile as sf
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.archive import AbstractArchiveFileSystem
from fsspec.implementations.chained import ChainedFileSystem
from fsspec.utils import glob_translate

from .errors import DecodeError, ParameterError, SourceUnavailableError
from .storage import storage_errors

__all__ = [
    "AUDIO_EXTENSIONS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "AudioInfo",
    "AudioReader",
    "expand_inputs",
    "mix_to_mono",
    "open_audio",
    "resolve_fs",
]

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac",
        ".gsm", ".au", ".aiff", ".aif", ".aifc", ".caf", ".w64", ".wma", ".webm",
        ".amr", ".mka", ".mkv",
    }
)  # fmt: skip

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000

_GLOB_CHARS = frozenset("*?[")
# libsndfile reports "unknown length" as SF_COUNT_MAX.
_SF_COUNT_MAX = 2**63 - 1
# WAV writers that stream (recorders, telephony servers) leave a placeholder
# data size such as 0xFFFFFFFF or 0x7FFFFFFF until they finish; such a size
# promises nothing and must not read as truncation.
_WAV_PLACEHOLDER_BYTES = 0x7FFF0000
# Subtypes whose WAV block align is exactly one frame, so that a data size in
# bytes converts to frames.
_FRAME_ALIGNED_SUBTYPES = frozenset(
    {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}
)
# soundfile's cffi library handle and ffi, used by _read_block.
_SF_LIB = getattr(sf, "_snd", None)
_SF_FFI = getattr(sf, "_ffi", None)
if _SF_LIB is None or _SF_FFI is None or not hasattr(_SF_LIB, "sf_readf_float"):
    _SF_LIB = None
# A WAV header with its usual chunks fits in this; a file of 0 frames larger than that holds
# bytes a recorder wrote after a header it never finished.
_UNFINISHED_WAV_BYTES = 4096
_SF_UNRECOGNISED = frozenset({"format not recognised", "file contains data in an unknown format"})
_COPY_CHUNK_BYTES = 1 << 20
_PROBE_TIMEOUT_S = 120
_SNIFF_BYTES = 512


@dataclass(frozen=True)
class AudioInfo:
    """What a recording holds, read from its header (nothing decoded yet).

    Attributes
    ----------
    uri : str
        The recording, as given to `open_audio`.
    sample_rate : int
        Native sample rate in Hz.
    channels : int
        Number of channels (>= 1).
    frames : int or None
        Frames per channel. Exact for libsndfile's formats and for MP4 / MOV
        (M4A), whose stated length also ends what is decoded (the codec's end
        padding is dropped); for ffmpeg's other formats, the container's
        duration times the rate, which can differ from what is decoded by a
        codec's padding (a few thousand frames at most). None when the decoder
        cannot tell without decoding everything.
    codec : str
        ``"FORMAT/SUBTYPE"`` from libsndfile (``"WAV/PCM_16"``, ``"WAV/ULAW"``,
        ``"FLAC/PCM_24"``, ``"OGG/VORBIS"``; MPEG layer III is ``"MP3"``) or
        ``"ffmpeg:<codec>"`` (``"ffmpeg:aac"``, ``"ffmpeg:gsm"``).
    size : int or None
        Size of the file in bytes, as the storage reports it.
    etag : str or None
        What changes when the file does: the object store's ETag, or the
        local modification time. With ``size`` it tells an unchanged file
        from a replaced one without reading it.
    """

    uri: str
    sample_rate: int
    channels: int
    frames: int | None
    codec: str
    size: int | None = None
    etag: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Duration in seconds, or None where `frames` is unknown."""
        if self.frames is None:
            return None
        return self.frames / self.sample_rate


# --------------------------------------------------------------------------
# Finding recordings


def mix_to_mono(x: np.ndarray) -> np.ndarray:
    """The mean of the channels (as librosa and pydub mix), float32 ``(frames, 1)``.

    Summed column by column: ``x.mean(axis=1)`` reduces over a short inner axis and
    took 2.5 s per hour of 44.1 kHz stereo, this 0.08 s. For two channels the result
    is bit-identical to the mean.
    """
    if x.shape[1] == 1:
        return x if x.dtype == np.float32 else x.astype(np.float32)
    y = x[:, 0].astype(np.float32, copy=True)
    for c in range(1, x.shape[1]):
        y += x[:, c]
    y *= np.float32(1.0 / x.shape[1])
    return y[:, None]


def expand_inputs(
    specs: Sequence[str],
    *,
    extensions: Collection[str] = AUDIO_EXTENSIONS,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[str]]:
    """Resolve what a user typed into recording URIs.

    - a file path or URL that exists: itself, whatever its extension (the user
      asked for it explicitly);
    - a folder or prefix (``calls/``, ``s3://bucket/2026/11/``): every file below
      it, recursively, whose extension is in `extensions` (case-insensitive);
    - a glob (contains ``*``, ``?`` or ``[``, and is not itself an existing
      path): the matching files whose extension is in `extensions`; folders
      it matches are expanded like folders;
    - a remote prefix written as a folder (ending in ``/``) with no object
      under it: nothing, and a warning (object stores have no empty folders);
    - anything else (a path that does not exist, an unknown protocol): kept as
      is, with a warning, so that it becomes an error row later instead of
      being lost.

    Parameters
    ----------
    specs : sequence of str
        Paths, URLs, folders, prefixes and globs, as typed.
    extensions : collection of str
        Extensions, with their dot, that make a file a recording when found in
        a folder or by a glob. Compared case-insensitively.
    storage_options : mapping, optional
        Passed to the fsspec filesystem (for example s3fs's
        ``endpoint_url``/``key``/``secret``).

    Returns
    -------
    uris : list of str
        Without duplicates, in input order, sorted within each folder or glob.
        Remote URIs keep their protocol (``s3://bucket/key``); local ones are
        absolute paths without ``file://``.
    warnings : list of str
        One readable line per input that yielded nothing or could not be
        resolved, such as ``"no recordings match 'calls/*.wav'"``.

    Raises
    ------
    ParameterError
        If `specs` is a single string or holds an empty one, or an extension
        lacks its leading dot.
    """
    if isinstance(specs, (str, bytes)):
        raise ParameterError(
            f"specs must be a sequence of paths or URLs, not the single string {specs!r}"
        )
    exts = _normalise_extensions(extensions)
    options = dict(storage_options or {})
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            # "" resolves to the working directory and would expand all of it.
            raise ParameterError(f"input {spec!r} is not a path or URL")

    uris: list[str] = []
    warnings: list[str] = []
    seen: set[str] = set()

    def add(uri: str) -> None:
        if uri not in seen:
            seen.add(uri)
            uris.append(uri)

    for spec in specs:
        try:
            fs, path = resolve_fs(spec, options)
        except (ValueError, ImportError, *storage_errors()) as exc:
            reason = _os_reason(exc) if isinstance(exc, OSError) else _one_line(exc)
            warnings.append(f"cannot resolve '{spec}': {reason}; kept, to be reported as an error")
            add(spec.split("::", 1)[0] + _absolute_chain(spec) if is_chained(spec) else spec)
            continue
        try:
            kind = fs.info(path).get("type")
        except FileNotFoundError:
            kind = None
        except storage_errors() as exc:
            warnings.append(f"cannot look at '{spec}': {_one_line(exc)}; kept, to be reported as an error")
            add(spec)
            continue

        if kind == "directory":
            found, skipped = _files_below(fs, path, exts)
            if not found:
                warnings.append(f"no recordings under '{spec}'" + _skipped_note(skipped))
            for p in sorted(found):
                add(_to_uri(fs, spec, p))
        elif kind is not None:
            add(_to_uri(fs, spec, path))
        elif _GLOB_CHARS.intersection(path):
            found, skipped = _files_matching(fs, path, exts)
            if not found:
                warnings.append(f"no recordings match '{spec}'" + _skipped_note(skipped))
            for p in sorted(found):
                add(_to_uri(fs, spec, p))
        elif spec.endswith("/") and not isinstance(fs, LocalFileSystem):
            # An object store has no empty folders: a prefix with nothing under
            # it is "missing", yet it names a folder (one not filled yet).
            warnings.append(f"no recordings under '{spec}' (nothing is stored under that prefix)")
        else:
            warnings.append(f"'{spec}' does not exist; kept, to be reported as an error")
            add(_to_uri(fs, spec, path))  # as an existing file would be named: absolute, or a URL
    return uris, warnings


def _normalise_extensions(extensions: Collection[str]) -> frozenset[str]:
    if isinstance(extensions, (str, bytes)):
        raise ParameterError(
            f"extensions must be a collection such as {{'.wav', '.mp3'}}, not the string {extensions!r}"
        )
    out = set()
    for ext in extensions:
        if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2:
            raise ParameterError(f"extension {ext!r} must be a string starting with a dot, like '.wav'")
        out.add(ext.lower())
    return frozenset(out)


def _has_extension(path: str, exts: frozenset[str]) -> bool:
    return os.path.splitext(path.rstrip("/"))[1].lower() in exts


def _files_below(fs: fsspec.AbstractFileSystem, path: str, exts: frozenset[str]) -> tuple[list[str], int]:
    """Files under `path` (recursive) with an extension in `exts`, and how many were skipped."""
    files = list(_walk(fs, path))
    found = [p for p in files if _has_extension(p, exts)]
    return found, len(files) - len(found)


def _walk(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, dict[str, Any]]:
    """Every file below ``root`` with its listing, as ``fs.find(root, detail=True)`` gives it, but
    without folders, and:

    - on a local disk, a link to a folder is followed and its files are listed under the link's
      path (an archive assembled from links loses nothing); each real folder is walked once, so a
      link back up the tree, or to a folder listed already, adds nothing;
    - in an object store, an empty key that ends in ``/`` is a folder marker (what a console's
      "create folder" writes), not a recording.
    """
    entries = fs.find(root, detail=True, withdirs=True)
    if not isinstance(fs, LocalFileSystem):
        return {p: info for p, info in entries.items()
                if info.get("type") != "directory" and not (p.endswith("/") and not info.get("size"))}
    return _follow(fs, root, entries, seen=None)


def _follow(fs: LocalFileSystem, root: str, entries: Mapping[str, dict[str, Any]], *, seen: set[str] | None
            ) -> dict[str, dict[str, Any]]:
    """The files of ``entries`` (``root``'s listing) and those below its links to folders whose
    real path is not in ``seen`` (the folders walked so far, which it extends; None at the top,
    where it is made only if there is a link to follow)."""
    files: dict[str, dict[str, Any]] = {}
    links = []
    for path, info in entries.items():
        if info.get("type") == "directory":
            continue
        if info.get("islink") and os.path.isdir(path):
            links.append(path)
        else:
            files[path] = info
    if links and seen is None:  # the usual tree has no link: no real path is needed
        seen = {os.path.realpath(root)} | {os.path.realpath(p) for p, info in entries.items() if info.get("type") == "directory"}
    for link in sorted(links):
        real = os.path.realpath(link)
        if real in seen:
            continue
        below = fs.find(link, detail=True, withdirs=True)
        seen |= {real} | {os.path.realpath(p) for p, info in below.items() if info.get("type") == "directory"}
        files.update(_follow(fs, link, below, seen=seen))
    return files


def _files_matching(fs: fsspec.AbstractFileSystem, pattern: str, exts: frozenset[str]) -> tuple[list[str], int]:
    found: list[str] = []
    skipped = 0
    for p, info in fs.glob(pattern, detail=True).items():
        if info.get("type") == "directory" or (isinstance(fs, LocalFileSystem) and info.get("islink") and os.path.isdir(p)):
            below, n = _files_below(fs, p, exts)
            found += below
            skipped += n
        elif _has_extension(p, exts):
            found.append(p)
        else:
            skipped += 1
    return found, skipped


def _skipped_note(skipped: int) -> str:
    if not skipped:
        return ""
    return f" ({skipped} other file{'s' if skipped != 1 else ''}, none with an audio extension)"


def resolve_fs(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``url_to_fs`` that also serves chained URLs: ``zip://calls::s3://bucket/archive.zip``.

    fsspec gives plain options to a chain's first link only (the archive), so
    here each link gets them under its own protocol: one mapping (an S3
    endpoint, credentials) reaches the store the archive lives in.

    A chained URL opens its archive here: a missing one raises ``FileNotFoundError``,
    one that is not an archive ``ValueError``, a store's failure its own error.
    """
    options = dict(storage_options or {})
    if "::" not in uri:
        return url_to_fs(uri, **options)
    if not is_chained(uri):  # "::" in a name: url_to_fs would take it for a chain
        protocol = split_protocol(uri)[0] or "file"
        cls = fsspec.get_filesystem_class(protocol)
        return fsspec.filesystem(protocol, **{**cls._get_kwargs_from_urls(uri), **options}), cls._strip_protocol(uri)
    if options:
        links = {split_protocol(bit)[0] or "file" for bit in uri.split("::")}
        options = {protocol: dict(options) for protocol in links}
    try:
        return url_to_fs(uri, **options)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        archive = uri.split("::", 1)[1]
        raise ValueError(f"{archive} is not a readable archive ({_one_line(exc)})") from None


def is_chained(uri: str) -> bool:
    """Whether ``uri`` is a chained fsspec URL (``zip://calls::s3://bucket/archive.zip``,
    ``simplecache::s3://bucket/a.wav``): its first link names a filesystem that layers over
    another, an archive or a cache. Elsewhere ``::`` is part of a name (``/calls/call::1.wav``,
    ``s3://bucket/a::b.wav``)."""
    if "::" not in uri:
        return False
    first = uri.split("::", 1)[0]
    protocol = split_protocol(first)[0] or first
    if protocol not in fsspec.available_protocols():
        return False
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return True  # a known layer that is not installed: url_to_fs says so
    return issubclass(cls, (AbstractArchiveFileSystem, ChainedFileSystem))


def _absolute_chain(spec: str) -> str:
    """The links of a chained URL after its first, from their ``::``, with local paths made
    absolute (``::calls.zip`` and ``::file:///data/calls.zip`` both become ``::/data/calls.zip``),
    so that one archive gives one identity whatever folder the command ran in; ``""`` for a
    URL that is not chained."""
    if not is_chained(spec):
        return ""
    links = []
    for link in spec.split("::")[1:]:
        protocol = split_protocol(link)[0]
        if protocol in (None, "file", "local"):
            link = os.path.normpath(os.path.abspath(os.path.expanduser(link.split("://", 1)[-1])))
        links.append(link)
    return "::" + "::".join(links)


def _to_uri(fs: fsspec.AbstractFileSystem, spec: str, path: str) -> str:
    """The URI a user would type for `path` on `fs`, in the protocol they used in `spec`.

    A chained URL (``zip://calls::s3://bucket/archive.zip``) lists inside its
    first link; each file's URI keeps the rest of the chain, so that it opens
    as the listing saw it.
    """
    chain = _absolute_chain(spec)
    if isinstance(fs, LocalFileSystem):
        return os.path.normpath(path) + chain
    protocol = split_protocol(spec)[0]
    if protocol:
        # Keep the user's spelling (gs:// rather than gcs://) when it names the
        # same object; fall back on fsspec's canonical form otherwise.
        candidate = f"{protocol}://{path.lstrip('/')}"
        try:
            if fs._strip_protocol(candidate) == path:
                return candidate + chain
        except Exception:  # noqa: BLE001 - a foreign filesystem's parser; the fallback is safe
            pass
    return fs.unstrip_protocol(path) + chain


@dataclass(frozen=True)
class SourceFile:
    """One recording found in an archive, with what identifies its content."""

    uri: str
    size: int | None
    etag: str | None
    modified: datetime | None


def list_recordings(
    source: str,
    *,
    extensions: Collection[str] = AUDIO_EXTENSIONS,
    pattern: str | None = None,
    modified_since: datetime | None = None,
    storage_options: Mapping[str, Any] | None = None,
    missing_ok: bool = False,
) -> list[SourceFile]:
    """List the recordings below a folder or prefix, with sizes and etags.

    Parameters
    ----------
    source : str
        A folder, prefix or single file: local path or fsspec URL.
    extensions : collection of str
        Keep files with these extensions (lowercase, with the dot).
    pattern : str, optional
        A glob matched against the whole path relative to ``source``, as fsspec globs:
        ``*`` and ``?`` stay within one folder and ``**`` spans any number of them
        (``"*/calls-*.wav"``, ``"2026/11/*/*"``, ``"**/agent-*.wav"``).
    modified_since : datetime, optional
        Keep files modified at or after this time (timezone-aware; naive means UTC).
        Files whose store reports no modification time are kept: they cannot be
        shown to be older, and what is already done is skipped downstream.
    missing_ok : bool
        A ``source`` that does not exist has no recordings (a day's folder of a backfill),
        instead of being an error.

    Returns
    -------
    list of SourceFile
        Sorted by URI.

    Raises
    ------
    SourceUnavailableError
        The storage could not be listed (unreachable, server error): trying again may help.
    ParameterError
        ``source`` names nothing (no such folder, prefix or bucket), or the storage refuses
        these credentials: trying again cannot help.
    """
    exts = _normalise_extensions(extensions)
    if modified_since is not None and modified_since.tzinfo is None:
        modified_since = modified_since.replace(tzinfo=timezone.utc)
    try:
        fs, root = resolve_fs(source, storage_options)  # a chained URL's archive opens here
        if fs.isfile(root):
            entries = {root: fs.info(root)}
            root = posixpath.dirname(root.rstrip("/"))
        elif fs.exists(root):
            entries = _walk(fs, root)
        elif not isinstance(fs, LocalFileSystem) and "/" in root.strip("/") and fs.exists(root.strip("/").split("/")[0]):
            # Object stores have no empty folders: a prefix nothing was written
            # under yet (tonight's date) in an existing bucket is just empty.
            entries = {}
        else:
            raise FileNotFoundError(root)
    except (ValueError, ImportError) as exc:
        raise ParameterError(f"cannot list {source}: {_one_line(exc)}") from exc
    except FileNotFoundError:
        if missing_ok:
            return []
        # Not an outage: asking again cannot make a bucket or folder that is not there.
        raise ParameterError(f"cannot list {source}: no such folder, prefix or bucket") from None
    except PermissionError as exc:  # nor make credentials that are refused good
        raise ParameterError(f"cannot list {source}: {_os_reason(exc)}") from exc
    except storage_errors() as exc:
        raise SourceUnavailableError(f"cannot list {source}: {_os_reason(exc)}") from exc
    matches = re.compile(glob_translate(pattern)).match if pattern is not None else None
    found = []
    for path, info in entries.items():
        if info.get("type") == "directory" or not _has_extension(path, exts):
            continue
        rel = posixpath.relpath(path, root.rstrip("/") or "/") if root else path
        if matches is not None and not matches(rel):
            continue
        if info.get("islink"):
            # A listing describes a link itself (its own mtime); opening it describes its
            # target, and the two must agree or a re-run never sees the recording as done.
            try:
                info = fs.info(path)
            except OSError:
                pass  # a broken link: kept, to become an error row when opened
        modified = _modified(info)
        if modified_since is not None and modified is not None and modified < modified_since:
            continue
        size, etag = file_identity(info)
        found.append(SourceFile(_to_uri(fs, source, path), size, etag, modified))
    return sorted(found, key=lambda f: f.uri)


def _modified(info: Mapping[str, Any]) -> datetime | None:
    value = info.get("LastModified") or info.get("mtime") or info.get("created")
    if value is None and info.get("date_time"):  # a zip member: local time, read as UTC
        try:
            return datetime(*info["date_time"], tzinfo=timezone.utc)
        except (TypeError, ValueError):
            return None
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------
# Opening and decoding


def open_audio(uri: str, *, storage_options: Mapping[str, Any] | None = None) -> AudioReader:
    """Open a recording for block decoding.

    libsndfile decodes what it can (WAV 8/16/24/32-bit integer, 32/64-bit
    float, mu-law/A-law, GSM 6.10 in WAV, FLAC, Ogg Vorbis/Opus, MP3 with a
    Xing/Info header, AIFF, AU, CAF, W64); ffmpeg decodes the rest (M4A/AAC,
    raw GSM, WMA, AMR, WebM, MP3 without a Xing/Info header, ...).

    Parameters
    ----------
    uri : str
        Local path or fsspec URL (``file://``, ``memory://``, ``s3://``, ...).
    storage_options : mapping, optional
        Passed to the fsspec filesystem.

    Returns
    -------
    AudioReader
        Open reader; close it (or use it as a context manager).

    Raises
    ------
    DecodeError
        With the URI and the reason: no such file, permission denied, a
        directory, an empty file, not an audio file, a corrupt or truncated
        header, no audio stream, zero frames or channels, a sample rate outside
        1000..384000 Hz, or ffmpeg needed but not installed.
    ParameterError
        If `uri` is not a non-empty string.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ParameterError(f"uri {uri!r} is not a path or URL")
    try:
        fs, path = resolve_fs(uri, storage_options)
    except (ValueError, ImportError) as exc:
        raise DecodeError(f"cannot open {uri}: {_one_line(exc)}") from exc
    except storage_errors() as exc:
        raise _open_error(uri, exc) from exc

    size, etag = _stat(uri, fs, path)
    try:
        try:
            fileobj = fs.open(path, "rb")
        except storage_errors() as exc:
            raise _open_error(uri, exc) from exc
        try:
            reader = _open_with_libsndfile(uri, fs, path, fileobj, size)
        except BaseException:
            fileobj.close()
            raise
    except DecodeError as exc:
        exc.size, exc.etag = size, etag
        if isinstance(exc.info, AudioInfo):
            exc.info = dataclasses.replace(exc.info, size=size, etag=etag)
        raise
    reader.info = dataclasses.replace(reader.info, size=size, etag=etag)
    # The filesystem lives as long as the reader: an archive's (zip://...::) closes
    # the archive when it is collected, under the open member.
    reader._fs = fs
    return reader


def file_identity(info: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """``(size, etag)`` from an fsspec ``info()``/``ls(detail=True)`` entry.

    The etag is the object store's ETag (quotes stripped) or, for local and
    in-memory files, the modification time; for a zip member, its CRC-32.
    """
    size = info.get("size")
    etag = info.get("ETag") or info.get("etag")
    if etag is None:
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
        etag = None if mtime is None else str(mtime.isoformat() if hasattr(mtime, "isoformat") else mtime)
    if etag is None and info.get("CRC") is not None:
        etag = f"crc32:{int(info['CRC']):08x}"
    return (None if size is None else int(size)), (None if etag is None else str(etag).strip('"'))


def _stat(uri: str, fs: fsspec.AbstractFileSystem, path: str) -> tuple[int | None, str | None]:
    """Size in bytes and etag, after refusing what cannot be a recording at all."""
    try:
        info = fs.info(path)
    except storage_errors() as exc:
        raise _open_error(uri, exc) from exc
    if info.get("type") == "directory":
        raise DecodeError(f"cannot open {uri}: is a directory, not a file")
    if isinstance(fs, LocalFileSystem) and info.get("type") == "other":  # reading one could wait for ever
        raise DecodeError(f"cannot open {uri}: not a regular file (a named pipe, socket or device)")
    size, etag = file_identity(info)
    if size == 0:
        exc = DecodeError(f"cannot decode {uri}: empty file (0 bytes)")
        exc.size, exc.etag = size, etag
        raise exc
    return size, etag


def _open_with_libsndfile(
    uri: str, fs: fsspec.AbstractFileSystem, path: str, fileobj: Any, size: int | None
) -> AudioReader:
    guarded = _GuardedFile(fileobj)
    try:
        snd = sf.SoundFile(guarded, mode="r")
    except sf.LibsndfileError as exc:
        verdict = _Libsndfile(exc.error_string.strip().rstrip("."))
    except (RuntimeError, TypeError, ValueError) as exc:
        verdict = _Libsndfile(_one_line(exc))
    else:
        if guarded.error is not None:
            snd.close()
            raise SourceUnavailableError(f"cannot decode {uri}: read error: {_one_line(guarded.error)}")
        why_ffmpeg = _prefer_ffmpeg(snd, size=size)
        if why_ffmpeg is None or _which("ffmpeg") is None or _which("ffprobe") is None:
            try:
                return _SoundFileReader(uri, snd, guarded, trust_frames=why_ffmpeg is None)
            except BaseException:
                snd.close()
                raise
        snd.close()
        verdict = why_ffmpeg

    head = _sniff(guarded)
    if _looks_like_text(head):
        # Neither decoder has a better word for a text file, and ffmpeg's
        # (for a text file named .mp3: "Invalid argument") would mislead.
        raise DecodeError(f"cannot decode {uri}: not an audio file (it looks like text)")
    return _open_with_ffmpeg(uri, fs, path, guarded, size, verdict)


class _Libsndfile(NamedTuple):
    """Why a file goes to ffmpeg: libsndfile failed to open it (``reason`` is its word), or
    opened it and ``deferred`` to ffmpeg (``reason`` says why). ``strict``: ffmpeg stops at the
    first decoding error (not for a file whose end is cut by nature)."""

    reason: str
    deferred: bool = False
    strict: bool = True

    @classmethod
    def defers(cls, why: str, *, strict: bool = True) -> "_Libsndfile":
        return cls(f"libsndfile defers to ffmpeg: {why}", deferred=True, strict=strict)


def _prefer_ffmpeg(snd: sf.SoundFile, *, size: int | None = None) -> _Libsndfile | None:
    """Why libsndfile, which opened the file, should not decode it (or None).

    libsndfile 1.2 sizes an MP3 without a Xing/Info header from its first
    frame's bitrate and stops decoding there: a VBR file silently loses most
    of its audio. mpg123 marks such a file as "constant" bitrate (one with a
    Xing/Info header is "variable" or "average" and its length is exact).
    libsndfile takes a truncated Ogg stream's length from its last page and
    reports 0 frames when that page is cut, where ffmpeg decodes up to the cut
    and says where it broke. With more than two channels, libsndfile returns
    an Ogg stream's channels in Vorbis order (5.1: L, C, R, Ls, Rs, LFE)
    where every other decoder path here gives WAV order (L, R, C, LFE, Ls,
    Rs); ffmpeg reorders them. A recorder that stopped before it finished its
    WAV header leaves a data size of 0 in front of the audio it wrote: libsndfile
    reads 0 frames, ffmpeg reads the audio to the end of the file.
    """
    if snd.format in ("WAV", "WAVEX") and snd.frames == 0 and size is not None and size > _UNFINISHED_WAV_BYTES:
        return _Libsndfile.defers("a WAV file whose header promises 0 frames, with more bytes after it", strict=False)
    if snd.format == "MP3" and re.search(r"bitrate mode\s*:\s*constant", snd.extra_info):
        return _Libsndfile.defers("an MP3 without a Xing/Info header, whose length it can only guess")
    if snd.format == "OGG" and snd.frames == 0:
        return _Libsndfile.defers("an Ogg stream in which it finds 0 frames")
    if snd.format == "OGG" and snd.channels > 2:
        return _Libsndfile.defers("a multichannel Ogg stream, whose channels it leaves in Vorbis order")
    return None


def _open_with_ffmpeg(
    uri: str, fs: fsspec.AbstractFileSystem, path: str, fileobj: _GuardedFile, size: int | None, libsndfile: _Libsndfile
) -> AudioReader:
    ffmpeg, ffprobe = _which("ffmpeg"), _which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        raise DecodeError(
            f"cannot decode {uri}: libsndfile cannot read it ({libsndfile.reason}) and the fallback "
            "needs ffmpeg, which is not installed"
        )
    if isinstance(fs, LocalFileSystem):
        fileobj.close()
        local, temp = path, None
    else:
        # ffmpeg needs a seekable file for some containers (an M4A whose moov
        # atom is at the end), so a remote recording is copied, in chunks.
        local = temp = _copy_to_temp(uri, fileobj, path)
    try:
        probe = _ffprobe(ffprobe, local)
        if probe.get("error"):
            raise DecodeError(f"cannot decode {uri}: {_ffmpeg_failure(probe['error'], libsndfile, size)}")
        info = _info_from_probe(uri, probe)
        return _FFmpegReader(uri, info, ffmpeg=ffmpeg, local_path=local, temp_path=temp,
                             strict=libsndfile.strict, end=_stated_frames(probe, info.sample_rate))
    except BaseException:
        if temp is not None:
            _remove(temp)
        raise


def _copy_to_temp(uri: str, fileobj: _GuardedFile, path: str) -> str:
    suffix = os.path.splitext(path)[1]  # ffmpeg finds raw GSM by its extension
    tmp = tempfile.NamedTemporaryFile(prefix="audioclf-", suffix=suffix, delete=False)
    try:
        with tmp, fileobj:
            fileobj.raw.seek(0)
            while chunk := fileobj.raw.read(_COPY_CHUNK_BYTES):
                tmp.write(chunk)
    except storage_errors() as exc:
        _remove(tmp.name)
        raise SourceUnavailableError(
            f"cannot decode {uri}: read error while copying it for ffmpeg: {_one_line(exc)}"
        ) from exc
    except BaseException:
        _remove(tmp.name)
        raise
    return tmp.name


def _ffprobe(ffprobe: str, local_path: str) -> dict[str, Any]:
    cmd = [
        ffprobe, "-v", "error", "-show_streams", "-select_streams", "a:0",
        "-show_format", "-of", "json", _ffmpeg_input(local_path),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"ffprobe took more than {_PROBE_TIMEOUT_S} s"}
    if done.returncode != 0:
        return {"error": _ffmpeg_reason(done.stderr, local_path) or f"ffprobe exited with {done.returncode}"}
    try:
        return json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        return {"error": "ffprobe wrote unreadable output"}


def _stated_frames(probe: dict[str, Any], sample_rate: int) -> int | None:
    """The frames an MP4 / MOV file says its audio holds, counted in samples; None for other containers.

    Their sample tables and edit list give the length exactly, and ffmpeg still decodes the
    codec's end padding after it (AAC: up to 1024 frames), which would lengthen every call.
    Other containers' durations are estimates (an MP3 without a Xing header, raw ADTS) and
    are not used to cut anything.
    """
    if not {"mov", "mp4"} & set(((probe.get("format") or {}).get("format_name") or "").split(",")):
        return None
    stream = (probe.get("streams") or [{}])[0]
    if stream.get("time_base") != f"1/{sample_rate}":
        return None
    frames = _to_int(stream.get("duration_ts"))
    return frames if frames is not None and frames > 0 else None


def _info_from_probe(uri: str, probe: dict[str, Any]) -> AudioInfo:
    streams = probe.get("streams") or []
    fmt = probe.get("format") or {}
    if not streams:
        kind = fmt.get("format_name")
        where = f" in this {kind} file" if kind else ""
        raise DecodeError(f"cannot decode {uri}: not an audio file (ffmpeg finds no audio stream{where})")
    stream = streams[0]
    sample_rate = _to_int(stream.get("sample_rate"))
    channels = _to_int(stream.get("channels"))
    duration = _to_float(stream.get("duration"))
    if duration is None:
        duration = _to_float(fmt.get("duration"))
    frames = _stated_frames(probe, sample_rate or 0)
    if frames is None and duration is not None and sample_rate:
        frames = max(0, round(duration * sample_rate))
    codec = f"ffmpeg:{stream.get('codec_name') or 'unknown'}"
    try:
        _check_layout(uri, sample_rate or 0, channels or 0, frames)
    except DecodeError as exc:
        if sample_rate and channels:
            exc.info = AudioInfo(uri=uri, sample_rate=sample_rate, channels=channels, frames=frames, codec=codec)
        raise
    return AudioInfo(uri=uri, sample_rate=sample_rate, channels=channels, frames=frames, codec=codec)


def _check_layout(uri: str, sample_rate: int, channels: int, frames: int | None) -> None:
    if channels < 1:
        raise DecodeError(f"cannot decode {uri}: it has {channels} channels")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise DecodeError(
            f"cannot decode {uri}: sample rate {sample_rate} Hz is outside "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    if frames == 0:
        raise DecodeError(f"cannot decode {uri}: contains no audio (0 frames)")


class AudioReader:
    """An open recording, decoded block by block.

    Use as a context manager, or call `close`, which releases the file and
    stops a running ffmpeg. Not thread-safe: one reader, one consumer.

    Attributes
    ----------
    info : AudioInfo
        What the header says.
    """

    info: AudioInfo

    def __init__(self, info: AudioInfo) -> None:
        self.info = info
        self._generation = 0
        self._closed = False

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """Decode the recording in order, one block at a time.

        Each call starts again from the beginning and invalidates the
        iterators of earlier calls.

        Parameters
        ----------
        block_frames : int
            Most frames per block (>= 1).

        Yields
        ------
        numpy.ndarray
            float32, shape ``(n, channels)`` with ``1 <= n <= block_frames``, on a
            full scale of [-1, 1] (float sources are passed through unclipped).
            The blocks cover the whole recording once; only the last may be
            shorter.

        Raises
        ------
        ParameterError
            At the call, if `block_frames` is not a positive integer or the
            reader is closed.
        DecodeError
            While iterating, if a block holds NaN or inf samples, or decoding
            fails (truncated or corrupt data); the message gives the time.
        """
        if isinstance(block_frames, bool) or not isinstance(block_frames, (int, np.integer)) or block_frames < 1:
            raise ParameterError(param="block_frames", value=block_frames, reason="must be a positive integer")
        if self._closed:
            raise ParameterError(f"cannot read {self.info.uri}: the reader is closed")
        self._generation += 1
        return self._checked(int(block_frames), self._generation)

    def _checked(self, block_frames: int, generation: int) -> Iterator[np.ndarray]:
        position = 0
        sample_rate = self.info.sample_rate
        decoded = self._decode(block_frames, generation)
        try:
            for block in decoded:
                assert block.ndim == 2 and 0 < block.shape[0] <= block_frames, block.shape
                if not np.isfinite(block).all():
                    row = int(np.flatnonzero(~np.isfinite(block))[0]) // block.shape[1]
                    at = (position + row) / sample_rate
                    raise DecodeError(f"cannot decode {self.info.uri}: contains NaN/inf samples at {at:.2f} s")
                position += block.shape[0]
                yield block
        finally:
            # Stops ffmpeg at once when the caller stops early or a check fails.
            decoded.close()

    def _decode(self, block_frames: int, generation: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _ensure_current(self, generation: int) -> None:
        """Refuse to go on after `close`, or with an iterator a later `blocks` call replaced."""
        if self._closed:
            raise ParameterError(f"cannot read {self.info.uri}: the reader is closed")
        if self._generation != generation:
            raise DecodeError(f"cannot read {self.info.uri}: a later blocks() call restarted decoding")

    def close(self) -> None:
        """Release the file and stop ffmpeg; idempotent."""
        self._closed = True

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {state} {self.info!r}>"


class _GuardedFile(io.RawIOBase):
    """A file object that records an I/O error instead of raising it.

    libsndfile reads through cffi callbacks, where an exception (an S3 read
    timing out) is printed and turned into "0 bytes read", which libsndfile
    takes for the end of the file. The reader checks `error` after each block,
    so a network failure is reported as such, not as a short recording.
    """

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            return 0
        try:
            data = self.raw.read(len(buffer))
        except Exception as exc:  # noqa: BLE001 - recorded and raised as DecodeError by the reader
            self.error = exc
            return 0
        n = len(data)
        buffer[:n] = data
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self.raw.seek(offset, whence)
        except Exception as exc:  # noqa: BLE001 - as in readinto
            self.error = self.error or exc
            return self.raw.tell()

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


class _SoundFileReader(AudioReader):
    def __init__(self, uri: str, snd: sf.SoundFile, fileobj: _GuardedFile, *, trust_frames: bool) -> None:
        frames: int | None = snd.frames if 0 <= snd.frames < _SF_COUNT_MAX else None
        if not trust_frames:
            frames = None
        codec = "MP3" if (snd.format, snd.subtype) == ("MP3", "MPEG_LAYER_III") else f"{snd.format}/{snd.subtype}"
        info = AudioInfo(uri=uri, sample_rate=snd.samplerate, channels=snd.channels, frames=frames, codec=codec)
        try:
            _check_layout(uri, snd.samplerate, snd.channels, snd.frames)
            _check_wav_length(uri, snd, info)
            _check_ogg_end(uri, snd, fileobj)
        except DecodeError as exc:
            if exc.info is None and snd.samplerate > 0 and snd.channels > 0:
                exc.info = info
            raise
        super().__init__(info)
        self._snd = snd
        self._file = fileobj
        self._started = False

    def _decode(self, block_frames: int, generation: int) -> Iterator[np.ndarray]:
        uri, sample_rate = self.info.uri, self.info.sample_rate
        if self._started:
            self._rewind()
        self._started = True
        snd = self._snd
        done = 0
        while True:
            self._ensure_current(generation)
            try:
                block, failure = _read_block(snd, block_frames)
            except sf.SoundFileError as exc:
                block, failure = np.empty((0, snd.channels), dtype=np.float32), exc
            # The frames decoded before a failure are good: they come first,
            # and the failure is placed right after them.
            if block.shape[0]:
                done += block.shape[0]
                yield block
            if self._file.error is not None:
                raise SourceUnavailableError(
                    f"cannot decode {uri}: read error at {done / sample_rate:.2f} s: {_one_line(self._file.error)}"
                ) from self._file.error
            if failure is not None:
                reason = failure.error_string if isinstance(failure, sf.LibsndfileError) else str(failure)
                raise DecodeError(
                    f"cannot decode {uri}: decoding failed at {done / sample_rate:.2f} s: "
                    f"{_one_line(reason.strip().rstrip('.'))}"
                ) from failure
            if block.shape[0] == 0:
                break
        expected = self.info.frames
        if expected is not None and done < expected:
            raise DecodeError(
                f"cannot decode {uri}: truncated or corrupt: the data ends at {done / sample_rate:.2f} s "
                f"but the header promises {expected / sample_rate:.2f} s"
            )

    def _rewind(self) -> None:
        # Not every libsndfile format can seek (GSM 6.10 in WAV cannot), so a
        # second pass reopens the decoder on the rewound file.
        self._snd.close()
        self._file.error = None
        self._file.seek(0)
        self._snd = sf.SoundFile(self._file, mode="r")

    def close(self) -> None:
        if not self._closed:
            try:
                self._snd.close()
            finally:
                self._file.close()
        super().close()


def _read_block(snd: sf.SoundFile, block_frames: int) -> tuple[np.ndarray, sf.LibsndfileError | None]:
    """Up to `block_frames` frames from the decoder's current position.

    Returns float32 (n, channels), n = 0 at the end, and the error libsndfile
    reported while decoding them (the n frames before it are good).

    soundfile's own ``read`` is not used: around every read it calls
    ``sf_seek`` twice (to learn and to restore the position). On an MP3 whose
    seek index is approximate (libsndfile's own MP3 writer makes such files)
    that seek lands elsewhere and the decoded audio is garbage after the
    first blocks; on FLAC it re-reads the file (1.5x the bytes, a seek per
    block). ``sf_readf_float`` through soundfile's cffi handle just reads on.
    """
    if _SF_LIB is None:  # a soundfile without its cffi internals: the public API
        return snd.read(block_frames, dtype="float32", always_2d=True), None
    out = np.empty((block_frames, snd.channels), dtype=np.float32)
    n = int(_SF_LIB.sf_readf_float(snd._file, _SF_FFI.cast("float *", out.ctypes.data), block_frames))
    code = int(_SF_LIB.sf_error(snd._file))
    return out[: max(n, 0)], (sf.LibsndfileError(code) if code else None)


def _check_wav_length(uri: str, snd: sf.SoundFile, info: AudioInfo) -> None:
    """Refuse a WAV whose data is shorter than its header says.

    libsndfile quietly shortens such a file to the bytes that are there (and
    logs ``data : 32000 (should be 15978)``), which would hide a cut-off
    upload.
    """
    if snd.format not in {"WAV", "WAVEX", "RF64"} or snd.subtype not in _FRAME_ALIGNED_SUBTYPES:
        return
    log = snd.extra_info
    claimed = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, re.MULTILINE)
    align = re.search(r"Block Align\s*:\s*(\d+)", log)
    if not claimed or not align or int(align.group(1)) <= 0:
        return
    claimed_bytes = int(claimed.group(1))
    if claimed_bytes >= _WAV_PLACEHOLDER_BYTES:
        return
    promised = claimed_bytes // int(align.group(1))
    # A few frames of slack for writers that round the size.
    if promised - snd.frames > max(1, snd.samplerate // 100):
        exc = DecodeError(
            f"cannot decode {uri}: truncated: the data ends at {snd.frames / snd.samplerate:.2f} s "
            f"but the header promises {promised / snd.samplerate:.2f} s"
        )
        exc.info = dataclasses.replace(info, frames=promised)  # as a cut FLAC's or MP3's header tells it
        raise exc


# The largest Ogg page: a 27-byte header, 255 lacing values, 255 segments of 255 bytes.
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


def _check_ogg_end(uri: str, snd: sf.SoundFile, fileobj: _GuardedFile) -> None:
    """Refuse an Ogg stream that stops before its end-of-stream page.

    An Ogg file promises no length up front: libsndfile takes it from the last
    page there is, so a cut-off upload or download would pass for a shorter,
    complete recording. An encoder marks a stream's last page (header flag
    0x04); a file that ends on a page without it, or inside a page, was cut.
    """
    if snd.format != "OGG":
        return
    here = fileobj.tell()
    try:
        end = fileobj.seek(0, io.SEEK_END)
        start = max(0, end - _OGG_MAX_PAGE)
        fileobj.seek(start)
        chunks: list[bytes] = []
        while (want := end - start - sum(map(len, chunks))) > 0 and (chunk := fileobj.read(want)):
            chunks.append(chunk)
        tail = b"".join(chunks)
    finally:
        fileobj.seek(here)
    if fileobj.error is not None or len(tail) != end - start:
        return  # the reader reports a read error when it meets it
    if not _ogg_cut(tail):
        return
    raise DecodeError(
        f"cannot decode {uri}: truncated: the Ogg stream stops at {snd.frames / snd.samplerate:.2f} s "
        "without its end-of-stream page"
    )


def _ogg_cut(tail: bytes) -> bool:
    """Whether ``tail``, the last bytes of an Ogg file (at least one page's worth), shows
    the stream cut: its last page lacks the end-of-stream flag, or the file ends inside
    a page.

    Pages are found by their capture pattern, which can also turn up inside a packet's
    bytes, so the verdict never rests on one match: a stream is whole if any match is
    a page that ends exactly at the end and carries the flag (the true last page of a
    whole stream always does); it is cut if some match is a page ending exactly at the
    end without the flag, or if the last match is a valid header whose page runs past the
    end (or is itself cut short). Anything else (bytes after the last page) is not judged.
    """
    at_end: list[int] = []
    last_past_end = False
    pos = tail.find(b"OggS")
    while pos != -1:
        header = tail[pos:pos + 27]
        last_past_end = False
        if len(header) < 27:
            last_past_end = header[4:5] in (b"", b"\x00")  # a header cut short
        elif header[4] == 0 and header[5] <= 0x07:
            n = header[26]
            lacing = tail[pos + 27:pos + 27 + n]
            if len(lacing) < n:
                last_past_end = True
            else:
                end = pos + 27 + n + sum(lacing)
                if end == len(tail):
                    at_end.append(header[5])
                last_past_end = end > len(tail)
        pos = tail.find(b"OggS", pos + 1)
    if any(flags & 0x04 for flags in at_end):
        return False
    return bool(at_end) or last_past_end


class _FFmpegReader(AudioReader):
    def __init__(self, uri: str, info: AudioInfo, *, ffmpeg: str, local_path: str, temp_path: str | None,
                 strict: bool = True, end: int | None = None) -> None:
        super().__init__(info)
        self._end = end  # frames the container states: what ffmpeg decodes after them is codec padding
        self._ffmpeg = ffmpeg
        self._local = local_path
        self._temp = temp_path
        self._strict = strict
        self._proc: subprocess.Popen[bytes] | None = None

    def _decode(self, block_frames: int, generation: int) -> Iterator[np.ndarray]:
        uri = self.info.uri
        channels, sample_rate = self.info.channels, self.info.sample_rate
        self._stop()
        stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty ffmpeg cannot block on it
        cmd = [
            self._ffmpeg, "-nostdin", "-hide_banner", "-v", "error",
            # Stop at the first decoding error, so that its position is known
            # and corrupt data is not papered over with concealment. Not for a WAV
            # whose recorder never finished its header: its end is cut by nature.
            *(["-xerror"] if self._strict else []),
            "-i", _ffmpeg_input(self._local), "-map", "0:a:0",
            # Pin rate and layout to the probed ones: a stream that changes
            # them midway (concatenated MP3s) still yields blocks of one shape.
            "-ar", str(sample_rate), "-ac", str(channels),
            "-f", "f32le", "-acodec", "pcm_f32le", "-",
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        except OSError as exc:
            stderr.close()
            raise DecodeError(f"cannot decode {uri}: cannot start ffmpeg: {_one_line(exc)}") from exc
        self._proc = proc
        frame_bytes = 4 * channels
        done = 0
        try:
            assert proc.stdout is not None
            while True:
                self._ensure_current(generation)
                buf = bytearray(block_frames * frame_bytes)
                n = _read_full(proc.stdout, buf)
                n -= n % frame_bytes  # a partial frame can only be ffmpeg dying midway
                if n == 0:
                    break
                block = np.frombuffer(buf, dtype="<f4", count=n // 4).reshape(-1, channels)
                if self._end is not None:
                    block = block[: max(0, self._end - done)]
                    if not len(block):
                        continue  # the padding is read to the end, so that a decoding error still shows
                done += block.shape[0]
                yield block.astype(np.float32, copy=False)
            self._ensure_current(generation)
            rc = proc.wait()
            if rc != 0:
                stderr.seek(0)
                reason = _ffmpeg_reason(stderr.read(), self._local) or f"ffmpeg exited with {rc}"
                raise DecodeError(
                    f"cannot decode {uri}: decoding failed at {done / sample_rate:.2f} s: {reason}"
                )
            if done == 0:
                raise DecodeError(f"cannot decode {uri}: contains no audio (0 frames)")
        finally:
            if self._proc is proc:
                self._stop()
            else:
                _kill(proc)
            stderr.close()

    def _stop(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None

    def close(self) -> None:
        self._stop()
        if self._temp is not None:
            _remove(self._temp)
            self._temp = None
        super().close()


def _read_full(stream: Any, buf: bytearray) -> int:
    """Fill `buf` from `stream` unless it ends first; return the bytes read."""
    view = memoryview(buf)
    n = 0
    while n < len(buf):
        got = stream.readinto(view[n:])
        if not got:
            break
        n += got
    return n


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    if proc.stdout is not None:
        proc.stdout.close()
    proc.wait()


# --------------------------------------------------------------------------
# Small helpers


def _which(name: str) -> str | None:
    return shutil.which(name)


def _ffmpeg_input(local_path: str) -> str:
    # "file:" keeps a path with a colon from being taken for a protocol.
    return "file:" + os.path.abspath(local_path)


def _ffmpeg_reason(stderr: bytes, local_path: str) -> str:
    """ffmpeg's complaint in one line, without addresses or the temp file's name."""
    lines: list[str] = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", raw.strip())
        for name in (_ffmpeg_input(local_path), os.path.abspath(local_path), local_path):
            if line.startswith(name + ":"):
                line = line[len(name) + 1 :].strip()
        if line and line not in lines:
            lines.append(line)
    return _one_line("; ".join(lines[:2]))


def _ffmpeg_failure(ffmpeg_reason: str, libsndfile: _Libsndfile, size: int | None) -> str:
    """The most useful reason when neither libsndfile nor ffmpeg can open a file."""
    size_note = f"; the file is only {size} bytes" if size is not None and size < 1024 else ""
    generic = ffmpeg_reason.lower() in {"", "invalid data found when processing input"}
    sf_reason = libsndfile.reason
    if sf_reason.lower() in _SF_UNRECOGNISED:
        if generic:
            return f"not an audio file (neither libsndfile nor ffmpeg recognises it{size_note})"
        return f"not a readable audio file (ffmpeg: {ffmpeg_reason}{size_note})"
    if libsndfile.deferred:
        # libsndfile opened it but left it to ffmpeg, which failed: ffmpeg's
        # word describes the data.
        return f"corrupt or truncated (ffmpeg: {ffmpeg_reason}{size_note})"
    # libsndfile knew the format and found it broken: its word is the precise one.
    return f"corrupt or truncated header (libsndfile: {sf_reason}; ffmpeg: {ffmpeg_reason}{size_note})"


def _sniff(fileobj: _GuardedFile) -> bytes:
    try:
        fileobj.seek(0)
        return fileobj.raw.read(_SNIFF_BYTES)
    except Exception:  # noqa: BLE001 - sniffing only refines an error message
        return b""


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end
            return False
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable >= 0.95 * len(text)


def _open_error(uri: str, exc: BaseException) -> DecodeError:
    """A missing, forbidden or directory path is the input's fault; anything
    else (connection reset, server error, time-out) is the storage's."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return DecodeError(f"cannot open {uri}: {_os_reason(exc)}")
    return SourceUnavailableError(f"cannot open {uri}: {_os_reason(exc)}")


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return _one_line(getattr(exc, "strerror", None) or exc)


def _one_line(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _to_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
