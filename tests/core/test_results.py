"""The result contract: both tables round-trip, rewrites replace, writes are atomic.

Runs against a local folder, fsspec's memory filesystem and a real S3 server
(moto on 127.0.0.1), since users point OUT at all three.
"""

from __future__ import annotations

import csv
import io
import os
import threading
import uuid
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audioclf_core import OutputError, ParameterError
from audioclf_core.results import (
    LABELS_METADATA_KEY,
    ResultStore,
    recording_columns,
    recordings_schema,
    segment_columns,
    segments_schema,
)

LABELS = ["speech", "music", "noise"]
SHA = "ab" * 32
T0 = pd.Timestamp("2026-01-01T00:00:00Z")

SEGMENT_DTYPES = {
    "recording": "str",
    "channel": "int32",
    "segment": "int32",
    "start_s": "float64",
    "end_s": "float64",
    "label": "str",
    "confidence": "float32",
    "p_speech": "float32",
    "p_music": "float32",
    "p_noise": "float32",
    "model": "str",
    "model_version": "str",
    "model_sha256": "str",
}
RECORDING_DTYPES = {
    "recording": "str",
    "status": "str",
    "error": "str",
    "duration_s": "float64",
    "sample_rate": "Int32",
    "channels": "Int32",
    "n_segments": "int32",
    "speech_s": "float64",
    "music_s": "float64",
    "noise_s": "float64",
    "silence_s": "float64",
    "processed_at": "datetime64[us, UTC]",
    "channel_mode": "str",
    "source_size": "Int64",
    "source_etag": "str",
    "params_sha256": "str",
    "model": "str",
    "model_version": "str",
    "model_sha256": "str",
}


def batch(
    uris: list[str],
    *,
    version: str = "1",
    n_segments: int = 2,
    processed_at: pd.Timestamp = T0,
    labels: list[str] = LABELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results for ``uris`` whose values all carry ``version``, to tell writes apart."""
    seg_rows, rec_rows = [], []
    for uri in uris:
        for i in range(n_segments):
            probs = np.full(len(labels), 0.1)
            probs[i % len(labels)] = 0.8
            seg_rows.append(
                {
                    "recording": uri,
                    "channel": -1,
                    "segment": i,
                    "start_s": 1.5 * i,
                    "end_s": 1.5 * i + 1.0,
                    "label": labels[i % len(labels)],
                    "confidence": 0.8,
                    **{f"p_{label}": p for label, p in zip(labels, probs)},
                    "model": "tiny",
                    "model_version": version,
                    "model_sha256": SHA,
                }
            )
        rec_rows.append(
            {
                "recording": uri,
                "status": "ok",
                "error": None,
                "duration_s": 10.0,
                "sample_rate": 16000,
                "channels": 1,
                "n_segments": n_segments,
                **{f"{label}_s": 1.0 * (k + 1) for k, label in enumerate(labels)},
                "silence_s": 4.0,
                "processed_at": processed_at,
                "channel_mode": "mix",
                "source_size": 320_044,
                "source_etag": f"etag-{uri}",
                "params_sha256": "p" * 64,
                "model": "tiny",
                "model_version": version,
                "model_sha256": SHA,
            }
        )
    segments = pd.DataFrame(seg_rows, columns=segment_columns(labels))
    return segments, pd.DataFrame(rec_rows)


@dataclass
class Location:
    """An empty output location, its store, and a way to look inside it."""

    store: ResultStore
    options: dict | None = None

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.store.out, **(self.options or {}))[0]

    def path(self, *names: str) -> str:
        root = fsspec.core.url_to_fs(self.store.out, **(self.options or {}))[1]
        return "/".join([root, *names])

    def files(self, table: str) -> list[str]:
        """Every file name in ``OUT/<table>/``, hidden ones included."""
        try:
            listed = self.fs.ls(self.path(table), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(p) for p in listed)


@pytest.fixture(params=["local", "memory", "s3"])
def loc(request, tmp_path) -> Location:
    """An empty output location of each kind users point OUT at."""
    if request.param == "local":
        yield Location(ResultStore(str(tmp_path / "out")), None)
    elif request.param == "memory":
        root = f"/results-{uuid.uuid4().hex}"
        yield Location(ResultStore(f"memory://{root}"), None)
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        options = request.getfixturevalue("s3_server").storage_options
        bucket = request.getfixturevalue("s3_bucket")
        yield Location(ResultStore(f"s3://{bucket}/run1", storage_options=options), options)


def rows_of(frame: pd.DataFrame, uri: str) -> pd.DataFrame:
    return frame[frame["recording"] == uri]


# -- schema ------------------------------------------------------------------


def test_columns_follow_the_contract_in_label_order():
    assert segment_columns(LABELS) == list(SEGMENT_DTYPES)
    assert recording_columns(LABELS) == list(RECORDING_DTYPES)
    seg = segments_schema(LABELS)
    rec = recordings_schema(LABELS)
    assert seg.names == list(SEGMENT_DTYPES) and rec.names == list(RECORDING_DTYPES)
    assert seg.field("channel").type == pa.int32() and seg.field("p_noise").type == pa.float32()
    assert rec.field("processed_at").type == pa.timestamp("us", tz="UTC")
    assert rec.field("sample_rate").nullable and not rec.field("n_segments").nullable
    assert seg.metadata[LABELS_METADATA_KEY] == b'["speech", "music", "noise"]'


@pytest.mark.parametrize(
    "labels, match",
    [
        ([], "empty"),
        ("speech", "sequence"),
        (["a", "b", "a"], "unique"),
        (["a", ""], "non-empty"),
        (["speech", "silence"], "reserved"),
        (["duration"], "reserved"),
    ],
)
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(ParameterError, match=match):
        segment_columns(labels)


def test_out_is_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ResultStore("rel/out/").out == str(tmp_path / "rel" / "out")
    assert ResultStore("s3://bucket/prefix/", storage_options={"anon": True}).out == "s3://bucket/prefix"
    with pytest.raises(ParameterError, match="nosuchproto"):
        ResultStore("nosuchproto://x")
    with pytest.raises(ParameterError):
        ResultStore("")


# -- round trip and idempotence ------------------------------------------------


def test_round_trip_keeps_columns_dtypes_and_values(loc):
    store = loc.store
    segments, recordings = batch(["s3://calls/a.wav", "s3://calls/b.flac"])
    recordings.loc[1, ["status", "error", "duration_s", "sample_rate", "channels", "n_segments"]] = [
        "error",
        "cannot decode s3://calls/b.flac: not an audio file",
        None,
        None,
        None,
        0,
    ]
    segments = segments[segments["recording"] != "s3://calls/b.flac"]
    assert store.labels() is None

    part = store.write(segments, recordings, labels=LABELS)

    got_seg = store.read_segments()
    got_rec = store.read_recordings()
    assert {c: str(t) for c, t in got_seg.dtypes.items()} == SEGMENT_DTYPES
    assert {c: str(t) for c, t in got_rec.dtypes.items()} == RECORDING_DTYPES
    pd.testing.assert_frame_equal(
        got_seg, segments.astype(SEGMENT_DTYPES).reset_index(drop=True), check_dtype=True
    )
    assert got_rec["status"].tolist() == ["ok", "error"]
    assert got_rec["sample_rate"].tolist() == [16000, pd.NA]
    assert got_rec["error"].isna().tolist() == [True, False]
    assert (got_rec["processed_at"] == T0).all()
    assert store.labels() == LABELS
    assert loc.files("segments") == [f"part-{part}.parquet"]
    assert loc.files("recordings") == [f"part-{part}.parquet"]

    # The user-facing promise: plain pandas reads the folders as they are.
    plain = pd.read_parquet(f"{store.out}/recordings", storage_options=loc.options)
    assert {c: str(t) for c, t in plain.dtypes.items()} == RECORDING_DTYPES
    plain_seg = pd.read_parquet(f"{store.out}/segments", storage_options=loc.options)
    assert len(plain_seg) == 2 and list(plain_seg.columns) == list(SEGMENT_DTYPES)


def test_rewriting_the_same_recordings_replaces_them(loc):
    store = loc.store
    first = store.write(*batch(["a", "b"], version="1"), labels=LABELS)
    second = store.write(*batch(["b", "a"], version="2", n_segments=3), labels=LABELS)

    assert first == second  # same inputs, same part, whatever their order
    seg, rec = store.read_segments(), store.read_recordings()
    assert len(rec) == 2 and len(seg) == 6
    assert set(seg["model_version"]) == set(rec["model_version"]) == {"2"}
    assert loc.files("segments") == [f"part-{first}.parquet"]


def test_regrouped_batches_leave_one_row_set_per_recording(loc):
    store = loc.store
    old = store.write(*batch(["a", "b"], version="old"), labels=LABELS)
    new = store.write(*batch(["b", "c"], version="new", n_segments=3), labels=LABELS)
    assert old != new

    seg, rec = store.read_segments(), store.read_recordings()
    assert rec["recording"].tolist() == ["a", "b", "c"]
    assert rec.set_index("recording")["model_version"].to_dict() == {"a": "old", "b": "new", "c": "new"}
    assert seg.groupby("recording").size().to_dict() == {"a": 2, "b": 3, "c": 3}
    assert set(rows_of(seg, "b")["model_version"]) == {"new"}
    # The old part now holds only a.
    old_part = pq.read_table(loc.path("recordings", f"part-{old}.parquet"), filesystem=loc.fs)
    assert old_part["recording"].to_pylist() == ["a"]


def test_a_part_emptied_by_a_newer_write_is_deleted(loc):
    store = loc.store
    old = store.write(*batch(["a", "b"], version="old"), labels=LABELS)
    new = store.write(*batch(["a", "b", "c"], version="new"), labels=LABELS)
    assert loc.files("segments") == loc.files("recordings") == [f"part-{new}.parquet"]
    assert old != new
    assert len(store.read_recordings()) == 3


def test_replace_older_keeps_the_newest_part_of_concurrent_writers(loc):
    store = loc.store
    t1, t2 = T0, T0 + pd.Timedelta(minutes=5)
    # The newer results land first, so write order cannot be what decides.
    store.write(*batch(["b", "c"], version="new", processed_at=t2), labels=LABELS, part="w1", replace=False)
    store.write(*batch(["a", "b"], version="old", processed_at=t1), labels=LABELS, part="w2", replace=False)
    assert store.read_recordings()["recording"].tolist() == ["a", "b", "b", "c"]

    removed = store.replace_older()

    assert removed == 1 + 2  # b's recordings row and its two segments in w2
    seg, rec = store.read_segments(), store.read_recordings()
    assert rec["recording"].tolist() == ["a", "b", "c"]
    assert rec.set_index("recording")["model_version"].to_dict() == {"a": "old", "b": "new", "c": "new"}
    assert set(rows_of(seg, "b")["model_version"]) == {"new"} and len(rows_of(seg, "b")) == 2
    assert store.replace_older() == 0


def test_a_parts_age_is_its_latest_row(loc):
    """A part written over a long run holds rows of many times; what it last wrote counts."""
    store = loc.store
    early, late = batch(["a"], version="w1", processed_at=T0), batch(["b"], version="w1", processed_at=T0 + pd.Timedelta(minutes=10))
    store.write(pd.concat([early[0], late[0]]), pd.concat([early[1], late[1]]), labels=LABELS, part="w1", replace=False)
    store.write(*batch(["a"], version="w2", processed_at=T0 + pd.Timedelta(minutes=5)), labels=LABELS, part="w2",
                replace=False)
    store.replace_older()
    assert store.read_recordings().set_index("recording")["model_version"].to_dict() == {"a": "w1", "b": "w1"}


def test_replace_older_breaks_ties_by_part_name_and_deletes_emptied_parts(loc):
    store = loc.store
    store.write(*batch(["a"], version="x"), labels=LABELS, part="x", replace=False)
    store.write(*batch(["a"], version="y"), labels=LABELS, part="y", replace=False)
    assert store.replace_older() == 3
    assert store.read_recordings()["model_version"].tolist() == ["y"]
    assert loc.files("recordings") == loc.files("segments") == ["part-y.parquet"]


# -- recordings without segments ------------------------------------------------


@pytest.mark.parametrize("empty", ["with_columns", "bare"])
def test_a_batch_without_segments_writes_a_valid_empty_part(loc, empty):
    store = loc.store
    segments, recordings = batch(["quiet.wav"], n_segments=0)
    if empty == "bare":
        segments = pd.DataFrame([])  # what pd.DataFrame(rows) gives for no rows
    part = store.write(segments, recordings, labels=LABELS)

    assert loc.files("segments") == [f"part-{part}.parquet"]
    seg = store.read_segments()
    assert len(seg) == 0 and {c: str(t) for c, t in seg.dtypes.items()} == SEGMENT_DTYPES
    assert store.read_recordings()["n_segments"].tolist() == [0]
    assert store.labels() == LABELS


def test_a_part_keeps_an_empty_segments_file_while_it_has_recordings(tmp_path):
    store = ResultStore(str(tmp_path / "out"))
    seg_a, rec_a = batch(["a"], n_segments=0)
    seg_b, rec_b = batch(["b"])
    old = store.write(seg_b, pd.concat([rec_a, rec_b]), labels=LABELS)
    store.write(*batch(["b"], version="2"), labels=LABELS)

    # a (no segments) still lives in the old part, which keeps a 0-row segments file.
    assert pq.read_table(tmp_path / "out" / "segments" / f"part-{old}.parquet").num_rows == 0
    assert sorted(pd.read_parquet(tmp_path / "out" / "recordings")["recording"]) == ["a", "b"]


def test_reading_an_empty_location_gives_empty_frames(loc):
    assert loc.store.labels() is None
    segments, recordings = loc.store.read_segments(), loc.store.read_recordings()
    assert segments.empty and recordings.empty
    # Without a model's labels only the fixed columns are known.
    per_class = {f"{label}_s" for label in LABELS}
    assert list(recordings.columns) == [c for c in RECORDING_DTYPES if c not in per_class]
    assert list(segments.columns) == [c for c in SEGMENT_DTYPES if not c.startswith("p_")]


# -- refusals -----------------------------------------------------------------


def test_a_different_label_set_is_refused(loc):
    store = loc.store
    store.write(*batch(["a"]), labels=LABELS)
    other = ["speech", "noise", "music"]  # same classes, other order: other p_ columns
    with pytest.raises(OutputError) as info:
        store.write(*batch(["b"], labels=other), labels=other)
    message = str(info.value)
    assert message == (
        f"{store.out} has results for labels {LABELS}; this model has {other}: write to another output"
    )
    assert store.read_recordings()["recording"].tolist() == ["a"]


def test_bad_frames_are_refused_naming_the_problem(tmp_path):
    store = ResultStore(str(tmp_path / "out"))
    segments, recordings = batch(["a"])

    with pytest.raises(ParameterError, match=r"missing columns \['p_noise'\]"):
        store.write(segments.drop(columns="p_noise"), recordings, labels=LABELS)
    with pytest.raises(ParameterError, match=r"unexpected columns \['extra'\]"):
        store.write(segments, recordings.assign(extra=1), labels=LABELS)
    with pytest.raises(ParameterError, match="'confidence'.*float"):
        store.write(segments.assign(confidence="high"), recordings, labels=LABELS)
    with pytest.raises(ParameterError, match="'channel'.*int32"):
        store.write(segments.assign(channel=2**40), recordings, labels=LABELS)
    with pytest.raises(ParameterError, match="'model_version' has 1 missing"):
        store.write(segments, recordings.assign(model_version=None), labels=LABELS)
    with pytest.raises(ParameterError, match="'status'.*'done'"):
        store.write(segments, recordings.assign(status="done"), labels=LABELS)
    with pytest.raises(ParameterError, match="no row in recordings"):
        store.write(segments.assign(recording="z"), recordings, labels=LABELS)
    with pytest.raises(ParameterError, match="more than once"):
        store.write(segments, pd.concat([recordings, recordings]), labels=LABELS)
    with pytest.raises(ParameterError, match="recordings is empty"):
        store.write(segments.iloc[:0], recordings.iloc[:0], labels=LABELS)
    with pytest.raises(ParameterError, match="part name '../x'"):
        store.write(segments, recordings, labels=LABELS, part="../x")
    assert not (tmp_path / "out").exists()


def test_an_unwritable_location_gives_a_one_line_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = ResultStore(str(blocker / "out"))
    with pytest.raises(OutputError) as info:
        store.write(*batch(["a"]), labels=LABELS)
    message = str(info.value)
    assert "\n" not in message and str(blocker / "out") in message and "Not a directory" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_gives_an_output_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="Permission denied"):
        ResultStore(str(out)).write(*batch(["a"]), labels=LABELS)


def test_a_missing_bucket_gives_a_one_line_output_error(s3_server):
    out = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/run"
    store = ResultStore(out, storage_options=s3_server.storage_options)
    with pytest.raises(OutputError) as info:
        store.write(*batch(["a"]), labels=LABELS)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"cannot write results to {out}: The specified bucket does not exist"


# -- CSV -----------------------------------------------------------------------


def test_csv_holds_the_current_tables(loc):
    store = loc.store
    store.write(*batch(["a", "b"], version="old"), labels=LABELS)
    store.write(*batch(["b", "c"], version="new"), labels=LABELS)
    store.write_csv()

    for name, parquet in (("segments", store.read_segments()), ("recordings", store.read_recordings())):
        with loc.fs.open(loc.path(f"{name}.csv"), "r") as handle:
            csv = pd.read_csv(handle)
        assert list(csv.columns) == list(parquet.columns)
        assert len(csv) == len(parquet)
        for column in parquet.columns:
            expected = parquet[column]
            if column == "processed_at":
                parsed = pd.to_datetime(csv[column], utc=True).dt.as_unit("us")
                pd.testing.assert_series_equal(parsed, expected)
            elif expected.dtype == "float32":
                np.testing.assert_array_equal(csv[column].astype("float32"), expected)
            else:
                np.testing.assert_array_equal(
                    csv[column].astype(object).where(csv[column].notna(), None),
                    expected.astype(object).where(expected.notna(), None),
                )
    assert csv["recording"].tolist() == ["a", "b", "c"]


def test_csv_rows_survive_any_character_a_file_name_can_hold(loc):
    store = loc.store
    names = ["agent\r17.wav", "a,b.wav", 'say "hi".wav', "two\nlines.wav", "tab\there.wav", " lead.wav", "日本.wav"]
    store.write(*batch(names), labels=LABELS)
    store.write_csv()
    for name, parquet in (("segments", store.read_segments()), ("recordings", store.read_recordings())):
        with loc.fs.open(loc.path(f"{name}.csv"), "rb") as handle:
            text = handle.read().decode()
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert len(rows) == 1 + len(parquet), name
        assert [r[0] for r in rows[1:]] == parquet.recording.tolist()
        assert pd.read_csv(io.StringIO(text)).recording.tolist() == parquet.recording.tolist()


def test_csv_copies_once_written_follow_every_later_write(loc):
    store = loc.store
    store.write(*batch(["a"], version="old"), labels=LABELS)
    assert store.update_csv(asked=False) is False  # never asked for: none written
    assert not loc.fs.exists(loc.path("recordings.csv"))
    assert store.update_csv(asked=True) is True
    store.write(*batch(["b"], version="new"), labels=LABELS)
    assert store.update_csv(asked=False) is True  # asked for once: kept current
    for name, parquet in (("segments", store.read_segments()), ("recordings", store.read_recordings())):
        with loc.fs.open(loc.path(f"{name}.csv"), "r") as handle:
            csv = pd.read_csv(handle)
        assert csv.recording.tolist() == parquet.recording.tolist()
        assert set(csv.recording) == {"a", "b"}


# -- atomicity -----------------------------------------------------------------


def local_files(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(folder)
        for f in files
    }


def test_a_refused_write_changes_nothing(tmp_path):
    out = tmp_path / "out"
    store = ResultStore(str(out))
    store.write(*batch(["a", "b"]), labels=LABELS)
    before = local_files(out)

    segments, recordings = batch(["b", "c"], version="2")
    segments["start_s"] = segments["start_s"].astype(object)
    segments.loc[3, "start_s"] = "not a number"
    with pytest.raises(ParameterError, match="start_s"):
        store.write(segments, recordings, labels=LABELS)

    assert local_files(out) == before


def test_a_write_failing_midway_leaves_no_temp_file_and_the_old_data(tmp_path, monkeypatch):
    out = tmp_path / "out"
    store = ResultStore(str(out))
    store.write(*batch(["a", "b"]), labels=LABELS)
    before = local_files(out)

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        store.write(*batch(["b", "c"], version="2"), labels=LABELS)
    monkeypatch.undo()

    assert local_files(out) == before
    assert store.read_recordings()["model_version"].tolist() == ["1", "1"]


def test_a_write_failing_between_its_two_files_leaves_no_recordings_row(tmp_path, monkeypatch):
    """Segments go first: a recordings row must never stand for segments that were not written."""
    out = tmp_path / "out"
    store = ResultStore(str(out))
    real_replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OutputError, match="No space left on device"):
        store.write(*batch(["a"]), labels=LABELS, part="p")
    monkeypatch.undo()
    assert [os.path.basename(os.path.dirname(d)) for d in calls] == ["segments", "recordings"]
    assert store.read_recordings().empty


def test_a_file_being_written_is_hidden_from_readers(tmp_path, monkeypatch):
    """Until it is complete, a part has a hidden name that dataset readers skip."""
    out = tmp_path / "out"
    store = ResultStore(str(out))
    store.write(*batch(["a"]), labels=LABELS)
    real_replace, seen = os.replace, []

    def look_first(src, dst):
        seen.append((os.path.basename(src), len(pd.read_parquet(out / "recordings"))))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", look_first)
    store.write(*batch(["b"]), labels=LABELS)
    monkeypatch.undo()
    assert len(seen) == 2 and all(name.startswith(".") for name, _ in seen)
    assert [rows for _, rows in seen] == [1, 1]


def test_no_hidden_or_temporary_files_remain(tmp_path):
    out = tmp_path / "out"
    store = ResultStore(str(out))
    store.write(*batch(["a", "b"]), labels=LABELS)
    store.write(*batch(["b", "c"]), labels=LABELS, replace=False)
    store.replace_older()
    store.write_csv()
    names = set(local_files(out))
    assert not [n for n in names if os.path.basename(n).startswith((".", "_"))]
    assert {"segments.csv", "recordings.csv"} <= names


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
    out = tmp_path / "out"
    store = ResultStore(str(out))
    store.write(*batch(["seed"]), labels=LABELS)
    failures: list[BaseException] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                pd.read_parquet(out / "segments")
                pd.read_parquet(out / "recordings")
                reads += 1
            except Exception as exc:  # any failure is the finding
                failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        # Big enough parts that a non-atomic write would be caught half-done;
        # rewrites of the same groups overwrite files in place.
        for i in range(24):
            uris = [f"r{i % 6}-{k}" for k in range(40)]
            store.write(*batch(uris, version=str(i), n_segments=25), labels=LABELS)
    finally:
        done.set()
        thread.join()
    assert reads > 0 and failures == []
    assert len(store.read_recordings()) == 1 + 6 * 40


def test_check_writable_refuses_early_and_leaves_nothing(tmp_path, s3_server, s3_bucket):
    import os

    from audioclf_core.results import ResultStore as Store

    ok = Store(str(tmp_path / "new"))
    ok.check_writable(["a", "b"])
    assert os.listdir(tmp_path / "new") == []  # the probe is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write results to"):
        Store(str(tmp_path / "file" / "out")).check_writable(["a", "b"])
    with pytest.raises(OutputError, match="cannot write results to"):
        Store("s3://no-such-bucket-here/out", storage_options=s3_server.storage_options).check_writable(["a", "b"])
    remote = Store(f"s3://{s3_bucket}/out", storage_options=s3_server.storage_options)
    remote.check_writable(["a", "b"])
    import fsspec

    assert fsspec.filesystem("s3", **s3_server.storage_options).ls(s3_bucket) == []


def test_replace_older_sweeps_temp_files_left_by_killed_writers(tmp_path):
    import time as _time

    store = ResultStore(str(tmp_path / "out"))
    segments, recordings = batch(["a.wav"])
    store.write(segments, recordings, labels=LABELS)
    seg_dir = tmp_path / "out" / "segments"
    old = seg_dir / ".part-x.parquet.dead.tmp"
    young = seg_dir / ".part-y.parquet.live.tmp"
    old.write_bytes(b"half a part")
    young.write_bytes(b"being written")
    past = _time.time() - 2 * 3600
    os.utime(old, (past, past))
    store.replace_older()
    assert not old.exists() and young.exists()
    assert len(store.read_recordings()) == 1
