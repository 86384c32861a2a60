"""The two result tables of an output location, written atomically and idempotently.

An output location ``OUT`` is any fsspec URL or local path (a folder,
``s3://bucket/prefix``, ``memory://x``). It holds two Parquet datasets that
``pandas.read_parquet`` reads as they are:

``OUT/segments/``
    One row per classified segment: ``recording`` (str, URI), ``channel``
    (int32, -1 for the mono mix), ``segment`` (int32, index within recording and
    channel), ``start_s``, ``end_s`` (float64, seconds), ``label`` (str),
    ``confidence`` (float32), one ``p_<label>`` float32 column per class in label
    order, ``model``, ``model_version``, ``model_sha256`` (str).
``OUT/recordings/``
    One row per input recording: ``recording``, ``status`` (``ok`` or
    ``error``), ``error`` (str, null when ok), ``duration_s`` (float64,
    nullable), ``sample_rate``, ``channels`` (int32, nullable; pandas reads them
    as ``Int32``), ``n_segments`` (int32), one ``<label>_s`` float64 column per
    class (seconds of audio given that label), ``silence_s`` (float64; these
    are null on an error row),
    ``processed_at`` (timestamp[us, UTC]), ``channel_mode`` (str), ``model``,
    ``model_version``, ``model_sha256`` (str).

Each dataset is a set of part files, ``part-<name>.parquet``; the same name in
both folders is one *part*, written by one :meth:`ResultStore.write`. Within a
part, the segments' recordings are a subset of the recordings' recordings, and
a recording's row in ``recordings/`` is written after its segments, so a row
there means its segments are complete.

Guarantees:

- A reader never sees a half-written file: local files are written under a
  hidden name (``.`` prefix, which pyarrow's dataset discovery skips) and moved
  into place with ``os.replace``; on object stores a file is one PUT.
- Writing the same recordings again replaces their rows, in whatever parts they
  were before. Between the new part landing and the old rows being removed a
  reader may briefly see both; no state is ever missing a recording.
- ``write(..., replace=True)`` assumes one writer at a time. Concurrent writers
  pass ``replace=False`` and one of them calls :meth:`ResultStore.replace_older`
  when all are done.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import posixpath
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import TypeVar, get_args

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .errors import AudioClfError, OutputConflictError, OutputError, ParameterError
from .params import ChannelMode
from .storage import storage_errors

__all__ = [
    "LABELS_METADATA_KEY",
    "ResultStore",
    "recording_columns",
    "recordings_schema",
    "segment_columns",
    "segments_schema",
]

LABELS_METADATA_KEY = b"audioclf.labels"
SEGMENTS = "segments"
RECORDINGS = "recordings"
STATUSES = ("ok", "error")

_PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PART_FILE = re.compile(r"part-([A-Za-z0-9][A-Za-z0-9._-]*)\.parquet")
# Labels whose per-class seconds column would collide with a fixed column.
_RESERVED_LABELS = frozenset({"duration", "silence"})
# Remote part files up to this size are fetched in one GET: fewer round trips
# than a footer read followed by a column read.
_WHOLE_FILE_BYTES = 8 * 2**20
_MAX_THREADS = 16

_STR = (pa.string(), "str")
_I32 = (pa.int32(), "int32")
_NULLABLE_I32 = (pa.int32(), "Int32")
_NULLABLE_I64 = (pa.int64(), "Int64")
STALE_TEMP_S = 3600.0  # a temp file this old belongs to no live writer
_F32 = (pa.float32(), "float32")
_F64 = (pa.float64(), "float64")
_UTC = (pa.timestamp("us", tz="UTC"), "datetime64[us, UTC]")

# (name, (arrow type, pandas dtype), nullable)
_MODEL_COLUMNS = [("model", _STR, False), ("model_version", _STR, False), ("model_sha256", _STR, False)]


def _segment_spec(labels: tuple[str, ...]) -> list[tuple[str, tuple, bool]]:
    return [
        ("recording", _STR, False),
        ("channel", _I32, False),
        ("segment", _I32, False),
        ("start_s", _F64, False),
        ("end_s", _F64, False),
        ("label", _STR, False),
        ("confidence", _F32, False),
        *[(f"p_{label}", _F32, False) for label in labels],
        *_MODEL_COLUMNS,
    ]


def _recording_spec(labels: tuple[str, ...]) -> list[tuple[str, tuple, bool]]:
    return [
        ("recording", _STR, False),
        ("status", _STR, False),
        ("error", _STR, True),
        ("duration_s", _F64, True),
        ("sample_rate", _NULLABLE_I32, True),
        ("channels", _NULLABLE_I32, True),
        ("n_segments", _I32, False),
        # Nullable so that an error row may leave the per-class seconds unknown.
        *[(f"{label}_s", _F64, True) for label in labels],
        ("silence_s", _F64, True),
        ("processed_at", _UTC, False),
        ("channel_mode", _STR, False),
        # What the recording was when processed, and with which parameters:
        # together with the model hash, what tells done work from new work.
        ("source_size", _NULLABLE_I64, True),
        ("source_etag", _STR, True),
        ("params_sha256", _STR, False),
        *_MODEL_COLUMNS,
    ]


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str | bytes) or not isinstance(labels, Iterable):
        raise ParameterError(f"labels must be a sequence of class names, got {labels!r}")
    labels = tuple(labels)
    if not labels:
        raise ParameterError("labels is empty: a model has at least one class")
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ParameterError(f"labels must be non-empty strings, got {bad!r}")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ParameterError(f"labels must be unique, {dupes!r} repeat")
    reserved = sorted(_RESERVED_LABELS.intersection(labels))
    if reserved:
        raise ParameterError(
            f"labels {reserved!r} are reserved: their '<label>_s' column would collide with "
            "recordings' duration_s/silence_s"
        )
    return labels


def segment_columns(labels: Sequence[str]) -> list[str]:
    """Column names of ``OUT/segments/`` for a model with ``labels``, in order.

    Parameters
    ----------
    labels : sequence of str
        The model's class names, in output order.

    Returns
    -------
    list of str
        ``recording, channel, segment, start_s, end_s, label, confidence,
        p_<label>..., model, model_version, model_sha256``.
    """
    return [name for name, _, _ in _segment_spec(_check_labels(labels))]


def recording_columns(labels: Sequence[str]) -> list[str]:
    """Column names of ``OUT/recordings/`` for a model with ``labels``, in order.

    Parameters
    ----------
    labels : sequence of str
        The model's class names, in output order. ``duration`` and ``silence``
        are refused: their seconds column would collide with a fixed one.

    Returns
    -------
    list of str
        ``recording, status, error, duration_s, sample_rate, channels,
        n_segments, <label>_s..., silence_s, processed_at, channel_mode, model,
        model_version, model_sha256``.
    """
    return [name for name, _, _ in _recording_spec(_check_labels(labels))]


@lru_cache(maxsize=32)
def _schema(table: str, labels: tuple[str, ...]) -> pa.Schema:
    spec = (_segment_spec if table == SEGMENTS else _recording_spec)(labels)
    # pandas metadata from a template frame, rather than from each caller's
    # frame, so every part tells pandas the same dtypes (notably Int32 for the
    # nullable integers, which would otherwise come back as float64 or int32
    # depending on whether a part happened to hold a null).
    template = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, (_, dtype), _ in spec})
    pandas_meta = pa.Schema.from_pandas(template, preserve_index=False).metadata[b"pandas"]
    return pa.schema(
        [pa.field(name, arrow_type, nullable=nullable) for name, (arrow_type, _), nullable in spec],
        metadata={b"pandas": pandas_meta, LABELS_METADATA_KEY: json.dumps(list(labels)).encode()},
    )


def segments_schema(labels: Sequence[str]) -> pa.Schema:
    """Arrow schema of a part file in ``OUT/segments/``.

    The label list travels in the schema metadata under
    :data:`LABELS_METADATA_KEY` (a JSON list), so one footer tells which model's
    classes a location holds.

    Parameters
    ----------
    labels : sequence of str
        The model's class names, in output order.

    Returns
    -------
    pyarrow.Schema
        Columns of :func:`segment_columns`; every column is non-nullable.
    """
    return _schema(SEGMENTS, _check_labels(labels))


def recordings_schema(labels: Sequence[str]) -> pa.Schema:
    """Arrow schema of a part file in ``OUT/recordings/``.

    Parameters
    ----------
    labels : sequence of str
        The model's class names, in output order.

    Returns
    -------
    pyarrow.Schema
        Columns of :func:`recording_columns`. ``error``, ``duration_s``,
        ``sample_rate``, ``channels``, the ``<label>_s`` columns and
        ``silence_s`` are nullable; the rest are not.
    """
    return _schema(RECORDINGS, _check_labels(labels))


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_table(frame: pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    """Check ``frame``'s columns against ``schema`` and convert it, naming what is wrong."""
    if not isinstance(frame, pd.DataFrame):
        raise ParameterError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.columns.has_duplicates:
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise ParameterError(f"{what} has duplicate columns {dupes}")
    expected = set(schema.names)
    missing = [name for name in schema.names if name not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in expected]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"unexpected columns {extra}")
        raise ParameterError(f"{what} does not match the result schema: " + "; ".join(problems))
    arrays = []
    for field in schema:
        column = frame[field.name]
        try:
            if pa.types.is_timestamp(field.type):
                # Naive times are taken as UTC; sub-microsecond digits are dropped
                # rather than refused, since no reader needs them.
                column = pd.to_datetime(column, utc=True).dt.as_unit("us")
            array = pa.array(column, type=field.type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise ParameterError(
                f"{what} column {field.name!r} cannot be stored as {field.type}: {_one_line(exc)}"
            ) from None
        if not field.nullable and array.null_count:
            first = int(pc.index(pc.is_null(array), True).as_py())
            raise ParameterError(
                f"{what} column {field.name!r} has {array.null_count} missing values "
                f"(first at row {first}); it may not be null"
            )
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


def _refuse_unknown(table: pa.Table, column: str, allowed: Iterable[str], what: str) -> None:
    values = set(pc.unique(table[column]).to_pylist())
    unknown = sorted(values.difference(allowed))
    if unknown:
        raise ParameterError(f"{what} column {column!r} has {unknown!r}; allowed: {sorted(allowed)!r}")


def _validate_batch(segments: pa.Table, recordings: pa.Table) -> list[str]:
    """Check what a schema cannot express; return the batch's recordings."""
    if recordings.num_rows == 0:
        raise ParameterError("recordings is empty: a part needs at least one recording")
    uris = recordings["recording"].to_pylist()
    dupes = sorted(uri for uri, count in Counter(uris).items() if count > 1)
    if dupes:
        raise ParameterError(f"recordings lists {dupes[:3]!r} more than once")
    _refuse_unknown(recordings, "status", STATUSES, "recordings")
    _refuse_unknown(recordings, "channel_mode", get_args(ChannelMode), "recordings")
    orphans = pc.unique(
        segments["recording"].filter(pc.invert(pc.is_in(segments["recording"], pa.array(uris, pa.string()))))
    ).to_pylist()
    if orphans:
        raise ParameterError(
            f"segments of {sorted(orphans)[:3]!r} have no row in recordings; every recording "
            "with segments needs one"
        )
    return uris


def _default_part(uris: Iterable[str]) -> str:
    # A NUL cannot occur in a URI, so the joined text identifies the set.
    digest = hashlib.sha256("\0".join(sorted(uris)).encode()).hexdigest()
    return digest[:20]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


_T = TypeVar("_T")
_R = TypeVar("_R")


def _parallel(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    # Scanning parts is latency-bound on object stores; threads overlap the
    # round trips (s3fs runs them on its own event loop, pyarrow drops the GIL).
    if len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(_MAX_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


class ResultStore:
    """Reads and writes the result tables of one output location.

    Parameters
    ----------
    out : str
        fsspec URL or local path of the output location. Nothing is touched
        until the first read or write; local folders are created on write,
        buckets never are.
    storage_options : mapping, optional
        Passed to the fsspec filesystem (for ``s3://``: ``key``, ``secret``,
        ``client_kwargs={"endpoint_url": ...}``...).

    Attributes
    ----------
    out : str
        The normalised location: an absolute path for local folders, else
        ``protocol://path`` without a trailing slash.

    Raises
    ------
    ParameterError
        ``out`` is empty or names an unknown protocol.
    OutputError
        The filesystem for ``out`` cannot be created (e.g. s3fs missing).
    """

    def __init__(self, out: str, *, storage_options: Mapping | None = None) -> None:
        if not isinstance(out, str | os.PathLike) or not str(out).strip():
            raise ParameterError(f"out must be a non-empty path or URL, got {out!r}")
        out = os.fspath(out)
        try:
            fs, root = fsspec.core.url_to_fs(out, **dict(storage_options or {}))
        except ValueError as exc:
            raise ParameterError(f"unsupported output location {out!r}: {_one_line(exc)}") from None
        except ImportError as exc:
            raise OutputError(f"cannot use output location {out!r}: {_one_line(exc)}") from exc
        self._fs = fs
        self._local = isinstance(fs, LocalFileSystem)
        self._root = root.rstrip("/") or root
        self.out = self._root if self._local else fs.unstrip_protocol(self._root).rstrip("/")

    def __repr__(self) -> str:
        return f"ResultStore({self.out!r})"

    # -- public API -------------------------------------------------------

    def write(
        self,
        segments: pd.DataFrame,
        recordings: pd.DataFrame,
        *,
        labels: Sequence[str],
        part: str | None = None,
        replace: bool = True,
    ) -> str:
        """Write one part (both tables) and make it the only holder of its recordings.

        Parameters
        ----------
        segments : pandas.DataFrame
            Exactly the columns of :func:`segment_columns` (any order, any
            index); dtypes are cast to the schema. May have no rows (a frame
            with no rows and no columns is accepted too).
        recordings : pandas.DataFrame
            Exactly the columns of :func:`recording_columns`, one row per
            recording, at least one row. Naive ``processed_at`` is taken as UTC.
        labels : sequence of str
            The model's class names, in output order.
        part : str, optional
            Name of the part files (``[A-Za-z0-9][A-Za-z0-9._-]*``, at most 128
            characters). Writing a part replaces whatever that part held before.
            Default: a hash of the sorted recording URIs, so that the same
            inputs land on the same files.
        replace : bool
            Remove these recordings' rows from every other part (default): the
            last write wins, whatever its ``processed_at``. Pass False when
            several writers run at once (two replacing writers could each remove
            the other's rows), then call :meth:`replace_older` once they are done.

        Returns
        -------
        str
            The part name.

        Raises
        ------
        ParameterError
            Missing or unexpected columns, a value that does not convert, a
            null in a required column, an unknown status or channel mode,
            duplicate recordings, segments without a recordings row, bad labels
            or part name.
        OutputError
            ``OUT`` already holds results for other labels, or cannot be
            written.
        """
        labels = _check_labels(labels)
        if part is not None and (not isinstance(part, str) or not _PART_NAME.fullmatch(part)):
            raise ParameterError(
                f"part name {part!r} must match [A-Za-z0-9][A-Za-z0-9._-]* (at most 128 characters)"
            )
        if isinstance(segments, pd.DataFrame) and len(segments) == 0 and len(segments.columns) == 0:
            # pd.DataFrame([]) from a recording that had no segments.
            segments = pd.DataFrame({name: [] for name in segment_columns(labels)})
        seg_table = _to_table(segments, _schema(SEGMENTS, labels), "segments")
        rec_table = _to_table(recordings, _schema(RECORDINGS, labels), "recordings")
        uris = _validate_batch(seg_table, rec_table)
        part = part or _default_part(uris)

        with self._guard("write results to"):
            self._refuse_other_labels(labels)
            # Segments first: a recordings row is the mark that its segments are complete.
            self._put(self._part_path(SEGMENTS, part), _parquet_bytes(seg_table))
            self._put(self._part_path(RECORDINGS, part), _parquet_bytes(rec_table))
            if replace:
                self._remove_elsewhere(set(uris), keep=part)
        return part

    def check_writable(self, labels: Sequence[str]) -> None:
        """Fail now, not after hours of work, if results cannot go to ``OUT``.

        Checks that ``OUT`` holds no results for other labels and that a file
        can be created there (a hidden probe, removed at once), and, on a
        local disk, in each table folder ``OUT`` already has: results go there.

        Raises
        ------
        OutputConflictError
            ``OUT`` holds results for other labels.
        OutputError
            ``OUT`` not writable (missing bucket, a path under a file, no
            permission, the store down).
        """
        labels = _check_labels(labels)
        with self._guard("write results to"):
            self._refuse_other_labels(labels)
            folders = [self._root]
            if self._local:
                os.makedirs(self._root, exist_ok=True)
                folders += [d for d in map(self._dir, (SEGMENTS, RECORDINGS)) if os.path.isdir(d)]
            for folder in folders:
                probe = posixpath.join(folder, f".audioclf-probe-{uuid.uuid4().hex}")
                self._put(probe, b"")
                self._delete(probe)

    def replace_older(self) -> int:
        """Keep each recording's rows only in the newest part that holds it.

        The newest part is the one with the latest ``max(processed_at)`` in
        ``recordings/``; ties go to the greater part name. Segment rows of a
        recording outside its newest part (left by an interrupted write) go too.

        Returns
        -------
        int
            Rows removed, both tables together.

        Raises
        ------
        OutputError
            A part cannot be read, rewritten or deleted.
        """
        with self._guard("replace older results in"):
            self._sweep_temps()
            rec_paths = self._list(RECORDINGS)
            seg_paths = self._list(SEGMENTS)
            rec_tables = self._scan(rec_paths, ["recording", "processed_at"])
            newest: dict[str, tuple[int, str]] = {}
            for name, table in rec_tables.items():
                stamp = pc.max(table["processed_at"]).cast(pa.int64()).as_py()
                key = (stamp if stamp is not None else -(2**63), name)
                for uri in table["recording"].to_pylist():
                    if uri not in newest or key > newest[uri]:
                        newest[uri] = key
            winner = {uri: key[1] for uri, key in newest.items()}
            seg_tables = self._scan(seg_paths, ["recording"])

            def stale(tables: dict[str, pa.Table]) -> dict[str, set[str]]:
                found = {}
                for name, table in tables.items():
                    losers = {u for u in table["recording"].to_pylist() if winner.get(u, name) != name}
                    if losers:
                        found[name] = losers
                return found

            return self._apply(stale(seg_tables), stale(rec_tables), rec_tables)

    def _sweep_temps(self, older_than_s: float = STALE_TEMP_S) -> None:
        """Delete hidden temp files that a killed local writer left behind.

        Only old ones: a young temp file may belong to a writer still running.
        Object stores need no sweep (they are written with one atomic PUT).
        """
        if not self._local:
            return
        cutoff = time.time() - older_than_s
        for folder in (self._root, self._dir(SEGMENTS), self._dir(RECORDINGS)):
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file() and e.stat().st_mtime < cutoff:
                    with suppress(FileNotFoundError):
                        os.unlink(e.path)

    def update_csv(self, *, asked: bool) -> bool:
        """Write the CSV copies (:meth:`write_csv`) when ``asked``, or when ``OUT`` already
        has them: a copy left as it was after the tables changed would be read as current.

        Returns
        -------
        bool
            Whether they were written.
        """
        if not asked:
            with self._guard("read"):
                asked = any(self._fs.exists(posixpath.join(self._root, f"{name}.csv"))
                            for name in (SEGMENTS, RECORDINGS))
        if asked:
            self.write_csv()
        return asked

    def write_csv(self) -> None:
        """Write ``OUT/segments.csv`` and ``OUT/recordings.csv`` from the current datasets.

        Each file holds its whole table (sorted as by :meth:`read_segments` and
        :meth:`read_recordings`) and replaces the previous one atomically. Text
        fields are quoted, numbers are not (``csv.QUOTE_NONNUMERIC``).

        Raises
        ------
        OutputError
            The datasets cannot be read or the files cannot be written.
        """
        segments = self.read_segments()
        recordings = self.read_recordings()
        with self._guard("write CSV to"):
            for name, frame in ((SEGMENTS, segments), (RECORDINGS, recordings)):
                # Every text field quoted: a file name may hold a carriage return, which the
                # minimal quoting leaves bare and every CSV reader takes for the end of a row.
                data = frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode()
                self._put(posixpath.join(self._root, f"{name}.csv"), data)

    def read_segments(self) -> pd.DataFrame:
        """All segment rows, sorted by recording, channel and segment.

        Returns
        -------
        pandas.DataFrame
            Columns of :func:`segment_columns`; no rows (with the stored labels'
            columns, or none for an empty location) if nothing was written.
        """
        return self._read(SEGMENTS, ["recording", "channel", "segment"])

    def read_recordings(self) -> pd.DataFrame:
        """All recording rows, sorted by recording.

        Returns
        -------
        pandas.DataFrame
            Columns of :func:`recording_columns`; ``sample_rate`` and
            ``channels`` are ``Int32``, ``processed_at`` is
            ``datetime64[us, UTC]``.
        """
        return self._read(RECORDINGS, ["recording"])

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raise :class:`OutputConflictError` if ``OUT`` holds results for other labels
        (reads one part's footer; writes nothing)."""
        labels = _check_labels(labels)
        with self._guard("read results from"):
            self._refuse_other_labels(labels)

    def labels(self) -> list[str] | None:
        """The label list of the results already in ``OUT``.

        Read from the schema metadata of one part's footer, without scanning data.

        Returns
        -------
        list of str or None
            None when ``OUT`` holds no part yet.
        """
        with self._guard("read results from"):
            return self._labels()

    # -- internals --------------------------------------------------------

    def _refuse_other_labels(self, labels: tuple[str, ...]) -> None:
        existing = self._labels()
        if existing is not None and existing != list(labels):
            raise OutputConflictError(
                f"{self.out} has results for labels {existing}; this model has {list(labels)}: write to another output"
            )

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except AudioClfError:
            raise
        except (*storage_errors(), pa.ArrowException, ImportError) as exc:
            raise OutputError(f"cannot {action} {self.out}: {_one_line(exc)}") from exc

    def _dir(self, table: str) -> str:
        return posixpath.join(self._root, table)

    def _part_path(self, table: str, part: str) -> str:
        return posixpath.join(self._root, table, f"part-{part}.parquet")

    def _list(self, table: str) -> dict[str, tuple[str, int]]:
        """Part name -> (path, size in bytes) of the part files in ``OUT/<table>/``."""
        folder = self._dir(table)
        found: dict[str, tuple[str, int]] = {}
        if self._local:
            try:
                entries = [(e.path, e.name, e.stat().st_size) for e in os.scandir(folder) if e.is_file()]
            except FileNotFoundError:
                return {}
        else:
            try:
                # Other writers change the folder: never answer from a listing cache.
                self._fs.invalidate_cache(folder)
                infos = self._fs.ls(folder, detail=True, refresh=True)
            except FileNotFoundError:
                return {}
            entries = [
                (info["name"], posixpath.basename(info["name"].rstrip("/")), int(info.get("size") or 0))
                for info in infos
                if info.get("type") == "file"
            ]
        for path, base, size in entries:
            match = _PART_FILE.fullmatch(base)
            if match:
                found[match.group(1)] = (path, size)
        return found

    def _read_file(self, path: str, size: int = 0, columns: list[str] | None = None) -> pa.Table:
        """Read ``columns`` (default all) of one part file; ``size`` as listed, 0 if unknown."""
        if self._local:
            return pq.read_table(path, columns=columns)
        if columns is None or size <= _WHOLE_FILE_BYTES:
            return pq.read_table(pa.BufferReader(self._fs.cat_file(path)), columns=columns)
        # A big part read for one column: footer first, then only that column's pages.
        with self._fs.open(path, "rb") as handle:
            return pq.read_table(handle, columns=columns)

    def _scan(self, paths: Mapping[str, tuple[str, int]], columns: list[str]) -> dict[str, pa.Table]:
        """Read ``columns`` of every listed part; parts deleted meanwhile are skipped."""

        def one(name: str) -> tuple[str, pa.Table | None]:
            path, size = paths[name]
            try:
                return name, self._read_file(path, size, columns)
            except FileNotFoundError:
                return name, None

        return {name: table for name, table in _parallel(one, sorted(paths)) if table is not None}

    def _labels(self) -> list[str] | None:
        for table in (RECORDINGS, SEGMENTS):
            for name, (path, size) in sorted(self._list(table).items()):
                try:
                    if self._local:
                        schema = pq.read_schema(path)
                    else:
                        with self._fs.open(path, "rb") as handle:
                            schema = pq.read_schema(handle)
                except FileNotFoundError:
                    continue
                raw = (schema.metadata or {}).get(LABELS_METADATA_KEY)
                try:
                    labels = json.loads(raw) if raw is not None else None
                except ValueError:
                    labels = None
                if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                    raise OutputError(
                        f"{path} is not an audioclf part: no valid {LABELS_METADATA_KEY.decode()} "
                        "in its schema metadata"
                    )
                return labels
        return None

    def _put(self, path: str, data: bytes) -> None:
        """Make ``data`` appear at ``path`` whole or not at all."""
        if not self._local:
            # One PUT (or one completed multipart upload) is atomic on object
            # stores and in memory://, so no temporary name is needed.
            self._fs.pipe_file(path, data)
            return
        folder, base = posixpath.split(path)
        os.makedirs(folder, exist_ok=True)
        # Hidden name in the same folder: same filesystem for os.replace, and
        # dataset discovery skips names starting with '.'.
        tmp = posixpath.join(folder, f".{base}.{uuid.uuid4().hex}.tmp")
        done = False
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            done = True
        finally:
            if not done:
                with suppress(OSError):
                    os.unlink(tmp)

    def _delete(self, path: str) -> None:
        with suppress(FileNotFoundError):
            if self._local:
                os.unlink(path)
            else:
                self._fs.rm_file(path)

    def _remove_elsewhere(self, uris: set[str], *, keep: str) -> int:
        """Remove the rows of ``uris`` from every part except ``keep``."""
        rec_paths = {n: p for n, p in self._list(RECORDINGS).items() if n != keep}
        seg_paths = {n: p for n, p in self._list(SEGMENTS).items() if n != keep}
        rec_tables = self._scan(rec_paths, ["recording"])
        seg_tables = self._scan(seg_paths, ["recording"])

        def hits(tables: dict[str, pa.Table]) -> dict[str, set[str]]:
            found = {}
            for name, table in tables.items():
                common = uris.intersection(pc.unique(table["recording"]).to_pylist())
                if common:
                    found[name] = common
            return found

        return self._apply(hits(seg_tables), hits(rec_tables), rec_tables)

    def _apply(
        self,
        seg_removals: Mapping[str, set[str]],
        rec_removals: Mapping[str, set[str]],
        rec_tables: Mapping[str, pa.Table],
    ) -> int:
        """Rewrite the named parts without the named recordings; return rows removed.

        A part's segments file is kept (if need be with no rows) as long as its
        recordings file keeps a row, so every recording row has a segments part.
        """
        removed = 0
        for name in sorted(set(seg_removals) | set(rec_removals)):
            rec_left = 0
            if name in rec_tables:
                recs = rec_tables[name]["recording"]
                gone = pa.array(sorted(rec_removals.get(name, ())), pa.string())
                rec_left = len(recs) - pc.sum(pc.is_in(recs, gone)).as_py() if len(gone) else len(recs)
            # Segments before recordings, as in write().
            if name in seg_removals:
                removed += self._rewrite(SEGMENTS, name, seg_removals[name], delete_if_empty=rec_left == 0)
            if name in rec_removals:
                removed += self._rewrite(RECORDINGS, name, rec_removals[name], delete_if_empty=True)
        return removed

    def _rewrite(self, table: str, part: str, uris: set[str], *, delete_if_empty: bool) -> int:
        path = self._part_path(table, part)
        try:
            data = self._read_file(path)
        except FileNotFoundError:
            return 0
        keep = pc.invert(pc.is_in(data["recording"], pa.array(sorted(uris), pa.string())))
        kept = data.filter(keep)
        if kept.num_rows == data.num_rows:
            return 0
        if kept.num_rows == 0 and delete_if_empty:
            self._delete(path)
        else:
            self._put(path, _parquet_bytes(kept))
        return data.num_rows - kept.num_rows

    def _read(self, table: str, sort_by: list[str]) -> pd.DataFrame:
        with self._guard("read results from"):
            for attempt in range(3):
                paths = self._list(table)
                try:
                    tables = _parallel(lambda name: self._read_file(*paths[name]), sorted(paths))
                    break
                except FileNotFoundError:
                    # A part vanished under a concurrent rewrite; list again.
                    if attempt == 2:
                        raise
            if tables:
                data = pa.concat_tables(tables)
            else:
                labels = self._labels() or ()
                data = _schema(table, tuple(labels)).empty_table()
        data = data.sort_by([(column, "ascending") for column in sort_by])
        return data.to_pandas()
