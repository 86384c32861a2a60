"""``classify-archive`` and ``backfill`` over an S3 archive: real Prefect API, real S3 server, real model."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from audioclf_core.bundle import DEFAULT_MODEL
from flows.archive import ArchiveOptions, backfill, classify_archive

from .conftest import BAD_FILES, SAMPLE_NAMES, SAMPLES, artifacts_of, copy_samples, run, table_rows

pytestmark = pytest.mark.slow


def put_archive(fs, bucket: str, prefix: str, names=SAMPLE_NAMES, *, bad: bool = False) -> list[str]:
    """Upload samples (and the bad files) under ``prefix``; return their ``s3://`` URIs."""
    uris = []
    for name in names:
        fs.put_file(str(SAMPLES / name), f"{bucket}/{prefix}/{name}")
        uris.append(f"s3://{bucket}/{prefix}/{name}")
    for name, (make, _) in BAD_FILES.items() if bad else ():
        fs.pipe_file(f"{bucket}/{prefix}/{name}", make())
        uris.append(f"s3://{bucket}/{prefix}/{name}")
    return uris


def read_tables(out: str, s3_server) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``recordings`` and ``segments`` as a user reads them: pandas on the S3 URLs."""
    opts = {**s3_server.storage_options, "use_listings_cache": False}  # as a fresh reader sees it
    return (pd.read_parquet(f"{out}/recordings", storage_options=opts),
            pd.read_parquet(f"{out}/segments", storage_options=opts))


def test_s3_archive_gives_the_truth_rows_and_artifacts(s3, s3_server, s3_env, truth):
    fs, bucket = s3
    prefix = "calls/2026/11/22"
    put_archive(fs, bucket, prefix, bad=True)
    out = f"s3://{bucket}/results"

    state, summary = run(classify_archive, f"s3://{bucket}/calls/", out, options=ArchiveOptions())

    assert state.is_completed(), state.message
    n_files = len(SAMPLE_NAMES) + len(BAD_FILES)
    assert (summary.listed, summary.skipped, summary.processed, summary.failed) == (n_files, 0, n_files, len(BAD_FILES))
    assert summary.failed_batches == 0 and summary.segments == sum(truth.values())

    recs, segs = read_tables(out, s3_server)
    assert len(recs) == n_files and recs.recording.is_unique
    by_name = recs.assign(name=recs.recording.str.rsplit("/", n=1).str[1]).set_index("name")
    assert all(by_name.recording == f"s3://{bucket}/{prefix}/" + by_name.index)
    for name, n in truth.items():
        row = by_name.loc[name]
        assert row.status == "ok" and pd.isna(row.error), (name, row.error)  # null on ok rows
        assert row.n_segments == n, name
    for name, (_, reason) in BAD_FILES.items():
        row = by_name.loc[name]
        assert row.status == "error" and row.n_segments == 0
        assert row.error.startswith(f"cannot decode s3://{bucket}/{prefix}/{name}: {reason}"), row.error
    # Segments: exactly the counted rows, each key once, in time order, with the model's columns.
    assert segs.groupby("recording").size().to_dict() == {
        f"s3://{bucket}/{prefix}/{name}": n for name, n in truth.items()
    }
    assert not segs.duplicated(["recording", "channel", "segment"]).any()
    assert (segs.end_s > segs.start_s).all() and (segs.channel == -1).all()
    probs = segs[["p_speech", "p_music", "p_noise"]].to_numpy()
    assert abs(probs.sum(axis=1) - 1).max() < 1e-4
    # Each row knows what it was made from: the object's size and ETag, the parameters.
    ok = by_name[by_name.status == "ok"]
    for name in SAMPLE_NAMES:
        assert ok.loc[name].source_size == (SAMPLES / name).stat().st_size
        assert ok.loc[name].source_etag == fs.info(f"{bucket}/{prefix}/{name}")["ETag"].strip('"')
    assert recs.params_sha256.nunique() == 1 and (recs.model == DEFAULT_MODEL).all()

    arts = artifacts_of(state.state_details.flow_run_id)
    assert set(arts) == {"audioclf-labels", "audioclf-failures", "audioclf-run"}
    labels = table_rows(arts["audioclf-labels"])
    assert [r["label"] for r in labels] == ["speech", "music", "noise"]
    assert sum(r["segments"] for r in labels) == len(segs)
    covered_h = (segs.end_s - segs.start_s).sum() / 3600
    assert sum(r["hours"] for r in labels) == pytest.approx(covered_h, abs=5e-4)
    failures = {r["recording"]: r["reason"] for r in table_rows(arts["audioclf-failures"])}
    assert failures == {f"s3://{bucket}/{prefix}/{n}": by_name.loc[n].error for n in BAD_FILES}
    report = arts["audioclf-run"].data
    assert f"`{out}/segments/`" in report and f"`s3://{bucket}/calls/`" in report
    assert f"{n_files} listed, 0 already done, {n_files} classified, {len(BAD_FILES)} failed" in report
    # Credentials never reach the UI.
    for art in arts.values():
        assert "testing" not in f"{art.data} {art.description} {art.metadata_}"


def test_rerun_skips_done_work_and_picks_up_a_new_recording(s3, s3_server, s3_env, truth):
    fs, bucket = s3
    prefix = "calls/2026/11/22"
    first_names = ["call-003.flac", "call-004-ulaw.wav"]
    put_archive(fs, bucket, prefix, first_names)
    fs.pipe_file(f"{bucket}/{prefix}/empty.wav", b"")
    out = f"s3://{bucket}/results"
    source = f"s3://{bucket}/calls/"

    state, first = run(classify_archive, source, out)
    assert state.is_completed(), state.message
    assert (first.processed, first.failed) == (3, 1)
    recs_1, segs_1 = read_tables(out, s3_server)

    state, again = run(classify_archive, source, out)
    assert state.is_completed(), state.message
    assert (again.listed, again.skipped, again.processed, again.batches) == (3, 3, 0, 0)
    recs_2, segs_2 = read_tables(out, s3_server)
    pd.testing.assert_frame_equal(recs_2, recs_1)  # untouched: same rows, same processed_at
    pd.testing.assert_frame_equal(segs_2, segs_1)

    put_archive(fs, bucket, prefix, ["call-001.wav"])
    state, third = run(classify_archive, source, out)
    assert state.is_completed(), state.message
    assert (third.listed, third.skipped, third.processed) == (4, 3, 1)
    recs_3, segs_3 = read_tables(out, s3_server)
    new = f"s3://{bucket}/{prefix}/call-001.wav"
    assert sorted(recs_3.recording) == sorted([*recs_1.recording, new]) and recs_3.recording.is_unique
    assert recs_3.set_index("recording").loc[new].n_segments == truth["call-001.wav"]
    old = recs_3[recs_3.recording != new].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, recs_1)
    assert not segs_3.duplicated(["recording", "channel", "segment"]).any()
    assert len(segs_3) == len(segs_1) + truth["call-001.wav"]


def test_backfill_over_days_with_an_empty_one(s3, s3_server, s3_env, truth):
    fs, bucket = s3
    days = {
        "2026/11/20": ["call-003.flac", "call-004-ulaw.wav"],
        "2026/11/21": [],  # nothing recorded that day: no objects under the prefix at all
        "2026/11/22": ["call-004-ulaw.wav"],
        "2026/11/23": ["call-004-ulaw.wav"],  # outside the range
    }
    for day, names in days.items():
        put_archive(fs, bucket, f"calls/{day}", names)
    assert not fs.exists(f"{bucket}/calls/2026/11/21")
    out = f"s3://{bucket}/results"

    state, summary = run(backfill, out, source_template=f"s3://{bucket}/calls/{{date:%Y/%m/%d}}/",
                         date_from=date(2026, 11, 20), date_to=date(2026, 11, 22))

    assert state.is_completed(), state.message
    assert summary.sources == [f"s3://{bucket}/calls/2026/11/{d}/" for d in (20, 21, 22)]
    assert (summary.listed, summary.processed, summary.failed, summary.failed_batches) == (3, 3, 0, 0)
    recs, segs = read_tables(out, s3_server)
    expected = {f"s3://{bucket}/calls/{day}/{n}" for day in ("2026/11/20", "2026/11/22") for n in days[day]}
    assert set(recs.recording) == expected and len(recs) == 3
    assert (recs.status == "ok").all()
    assert recs.set_index("recording").n_segments.to_dict() == {u: truth[u.rsplit("/", 1)[1]] for u in expected}
    assert len(segs) == recs.n_segments.sum()


def test_backfill_over_local_days_with_a_missing_folder(tmp_path, truth):
    # On a local disk a day without calls may have no folder at all: it has no recordings.
    for day in ("2026/11/20", "2026/11/22"):
        copy_samples(tmp_path / "calls" / day, ["call-004-ulaw.wav"])
    assert not (tmp_path / "calls" / "2026/11/21").exists()
    state, summary = run(backfill, str(tmp_path / "results"), source_template=str(tmp_path / "calls") + "/{date:%Y/%m/%d}/",
                         date_from=date(2026, 11, 20), date_to=date(2026, 11, 22))
    assert state.is_completed(), state.message
    assert (summary.listed, summary.processed, summary.failed) == (2, 2, 0)
    assert len(summary.sources) == 3
    # An explicit source must exist: a missing one is a mistake, refused before any listing.
    state, _ = run(backfill, str(tmp_path / "results2"), sources=[str(tmp_path / "calls" / "2026/11/21")])
    assert state.is_failed() and "no such folder or file" in state.message, state.message
    assert not (tmp_path / "results2").exists()


def test_recordings_inside_a_zip_archive_in_the_bucket_are_classified_once(s3, s3_server, s3_env, truth, tmp_path,
                                                                            monkeypatch):
    """Archives often arrive as zip files: ``zip://PREFIX::s3://bucket/archive.zip`` lists the members,
    the endpoint reaches the bucket under the archive, and each member is a recording of its own."""
    import zipfile

    # Only the deployment's endpoint setting may lead to the store (the session's fallback goes nowhere).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    fs, bucket = s3
    archive = tmp_path / "calls.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in SAMPLE_NAMES:
            z.write(SAMPLES / name, f"calls/{name}")
        z.writestr("calls/README.txt", "not audio")
    fs.put_file(str(archive), f"{bucket}/archives/calls.zip")
    src, out = f"zip://calls::s3://{bucket}/archives/calls.zip", f"s3://{bucket}/zip-results"

    state, summary = run(classify_archive, src, out, options=ArchiveOptions())
    assert state.is_completed(), state.message
    assert (summary.listed, summary.processed, summary.failed) == (len(SAMPLE_NAMES), len(SAMPLE_NAMES), 0)
    recs, segs = read_tables(out, s3_server)
    want = {f"zip://calls/{name}::s3://{bucket}/archives/calls.zip": n for name, n in truth.items()}
    assert dict(zip(recs.recording, recs.n_segments)) == want and (recs.status == "ok").all()
    assert segs.groupby("recording").size().to_dict() == want
    with zipfile.ZipFile(archive) as z:  # a member's identity is its CRC-32
        assert set(recs.source_etag) == {f"crc32:{z.getinfo(f'calls/{n}').CRC:08x}" for n in SAMPLE_NAMES}

    state, again = run(classify_archive, src, out, options=ArchiveOptions())
    assert state.is_completed(), state.message
    assert (again.listed, again.skipped, again.processed) == (len(SAMPLE_NAMES), len(SAMPLE_NAMES), 0)
