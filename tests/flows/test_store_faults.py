"""Object-store failures: a proxy between the flow and the S3 server fails chosen requests.

Faults are decided per request (no timing): the first N GETs of one recording,
or every PUT under the results prefix.
"""

from __future__ import annotations

import pandas as pd
import pytest

import flows.archive
from flows.archive import STOP_AFTER_FAILED_BATCHES, ArchiveOptions, classify_archive
from tasks.classify import IO_RETRIES, classify_batch, list_source

from .conftest import SAMPLES, artifacts_of, batch_runs, run, table_rows, task_runs_under

pytestmark = pytest.mark.slow

NAMES = ["call-003.flac", "call-004-ulaw.wav"]
BOTOCORE_ATTEMPTS = 2
# One attempt to decode a recording whose GETs all fail reads it three times
# (libsndfile's read, then two reads while copying it for ffmpeg), each read
# BOTOCORE_ATTEMPTS GETs (s3fs does not retry a 500): 6 GETs. 12 failed GETs
# outlast two attempts of the task; its third attempt reads the recording.
GETS_PER_ATTEMPT = 3 * BOTOCORE_ATTEMPTS
FAILED_GETS = 2 * GETS_PER_ATTEMPT


@pytest.fixture
def fast_retries(monkeypatch):
    """Retries as deployed, minus the waits.

    The batch task keeps its retries but waits 0 s between them (the flow looks
    ``classify_batch`` up at call time). botocore makes BOTOCORE_ATTEMPTS
    attempts per call in its standard mode (the deployment's own knob, in the
    environment): its legacy default of 5 attempts with up to 8 s of backoff
    would spend ~20 s per failed read.
    """
    monkeypatch.setattr(flows.archive, "classify_batch", classify_batch.with_options(retry_delay_seconds=0))
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(BOTOCORE_ATTEMPTS))


def read(out: str, s3_server) -> tuple[pd.DataFrame, pd.DataFrame]:
    opts = {**s3_server.storage_options, "use_listings_cache": False}
    return (pd.read_parquet(f"{out}/recordings", storage_options=opts),
            pd.read_parquet(f"{out}/segments", storage_options=opts))


@pytest.fixture
def archive(s3, s3_env):
    fs, bucket = s3
    for name in NAMES:
        fs.put_file(str(SAMPLES / name), f"{bucket}/calls/{name}")
    return bucket


def test_transient_read_failures_are_retried_to_complete_results(archive, s3_server, faulty_proxy, fast_retries):
    bucket = archive
    victim = f"/{bucket}/calls/call-004-ulaw.wav"

    def fault(method, path):
        if method == "GET" and path == victim and faulty_proxy.failed[method, path] < FAILED_GETS:
            return 500
        return None

    faulty_proxy.fault = fault
    state, summary = run(classify_archive, f"s3://{bucket}/calls/", f"s3://{bucket}/faulty",
                         options=ArchiveOptions(endpoint_url=faulty_proxy.endpoint_url))

    assert faulty_proxy.failed["GET", victim] == FAILED_GETS  # the outage happened, and was outlasted
    assert faulty_proxy.seen["GET", victim] > FAILED_GETS
    assert state.is_completed(), state.message
    assert (summary.processed, summary.failed, summary.failed_batches) == (2, 0, 0)
    # The task, not only botocore, had to try again: its run count says how often.
    batches = {t.name: t.run_count for t in batch_runs(state.state_details.flow_run_id, 2)}
    assert sorted(batches.values()) == [1, 3], batches

    # The same rows as a run straight to the server, without the proxy.
    state, clean = run(classify_archive, f"s3://{bucket}/calls/", f"s3://{bucket}/clean",
                       options=ArchiveOptions(endpoint_url=s3_server.endpoint_url))
    assert state.is_completed(), state.message
    assert clean.processed == 2
    recs, segs = read(f"s3://{bucket}/faulty", s3_server)
    ref_recs, ref_segs = read(f"s3://{bucket}/clean", s3_server)
    assert (recs.status == "ok").all() and len(recs) == 2
    pd.testing.assert_frame_equal(recs.drop(columns="processed_at"), ref_recs.drop(columns="processed_at"))
    pd.testing.assert_frame_equal(segs, ref_segs, rtol=1e-5)


def test_a_store_that_stays_down_fails_the_run_clearly(archive, s3, s3_server, faulty_proxy, fast_retries):
    bucket = archive
    results = f"/{bucket}/results/"
    faulty_proxy.fault = lambda method, path: 500 if method == "PUT" and path.startswith(results) else None

    state, _ = run(classify_archive, f"s3://{bucket}/calls/", f"s3://{bucket}/results",
                   options=ArchiveOptions(endpoint_url=faulty_proxy.endpoint_url))

    assert state.is_failed()
    message = state.message
    assert "2 of 2 batches failed after their retries" in message, message
    assert f"cannot write results to s3://{bucket}/results" in message, message
    assert "injected by the test proxy" in message, message  # the server's own reason
    # Every attempt of every batch tried to write, and each was refused.
    attempts = 1 + IO_RETRIES["retries"]
    batches = batch_runs(state.state_details.flow_run_id, 2)
    assert [t.run_count for t in batches] == [attempts, attempts]
    assert all(t.state.is_failed() for t in batches)
    refused = sum(n for (method, _), n in faulty_proxy.failed.items() if method == "PUT")
    assert refused == 2 * attempts * BOTOCORE_ATTEMPTS  # each attempt's first PUT (segments) refused
    # Nothing half-written, and the failures are published for a person to read.
    fs, _ = s3
    assert fs.find(f"{bucket}/results") == []
    failures = table_rows(artifacts_of(state.state_details.flow_run_id)["audioclf-failures"])
    assert [r["recording"] for r in failures] == ["(batch)", "(batch)"]
    assert all("cannot write results" in r["reason"] for r in failures)


def test_a_run_stops_starting_batches_once_several_in_a_row_have_failed(s3, s3_server, faulty_proxy, fast_retries):
    """A store that stays down fails a large run in minutes: after STOP_AFTER_FAILED_BATCHES
    failures in a row, the batches not yet started are not started (each would spend its four
    attempts meeting the same outage)."""
    fs, bucket = s3
    for k in range(8):
        fs.put_file(str(SAMPLES / NAMES[k % 2]), f"{bucket}/many/{k}-{NAMES[k % 2]}")
    results = f"/{bucket}/results/"
    faulty_proxy.fault = lambda method, path: 500 if method == "PUT" and path.startswith(results) else None

    state, _ = run(classify_archive, f"s3://{bucket}/many/", f"s3://{bucket}/results",
                   options=ArchiveOptions(endpoint_url=faulty_proxy.endpoint_url, workers=1, recordings_per_task=1))

    assert state.is_failed()
    # One worker holds two batches: the third failure stops new starts, the fourth was already started.
    tried = STOP_AFTER_FAILED_BATCHES + 1
    assert (f"{tried} of 8 batches failed after their retries, and the other {8 - tried} were not started once "
            f"{STOP_AFTER_FAILED_BATCHES} had failed in a row") in state.message, state.message
    batches = batch_runs(state.state_details.flow_run_id, tried)
    assert sorted(t.run_count for t in batches) == [1 + IO_RETRIES["retries"]] * tried
    summary = artifacts_of(state.state_details.flow_run_id)
    assert f"{8 - tried} not started" in summary["audioclf-run"].data, summary["audioclf-run"].data


def test_an_explicit_source_in_a_missing_bucket_fails_the_run(s3_env, tmp_path, monkeypatch):
    """A mistyped bucket is not an empty night: only a backfill's template days may be missing."""
    monkeypatch.setattr(flows.archive, "list_source", list_source.with_options(retry_delay_seconds=0))
    state, _ = run(classify_archive, "s3://no-such-bucket-here/calls/", str(tmp_path / "out"))
    assert state.is_failed()
    assert "cannot list s3://no-such-bucket-here/calls/: no such folder, prefix or bucket" in state.message, state.message
    # ... at once: a bucket that is not there is not an outage, and no retry can make it appear
    listing = task_runs_under(state.state_details.flow_run_id, expect=1, name_prefix="list-recordings")
    assert [t.run_count for t in listing] == [1]
