"""What a re-run does: skip done work, redo what changed, finish what a killed run left."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from audioclf_core.bundle import load_bundle
from audioclf_core.results import ResultStore
from flows.archive import ArchiveOptions, backfill, classify_archive, plan_run

from .conftest import BAD_FILES, ROOT, artifacts_of, copy_samples, run, sample_of, task_runs_under

pytestmark = pytest.mark.slow

OK_NAMES = ["call-003.flac", "call-004-ulaw.wav"]
BAD_NAMES = ["empty.wav", "notes.mp3"]
KEY = ["recording", "channel", "segment"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A folder of two samples and two bad files, and the results of one run over it."""
    root = tmp_path_factory.mktemp("baseline")
    src = root / "calls"
    copy_samples(src, OK_NAMES)
    for name in BAD_NAMES:
        (src / name).write_bytes(BAD_FILES[name][0]())
    state, summary = run(classify_archive, str(src), str(root / "out"))
    assert state.is_completed() and (summary.processed, summary.failed) == (4, 2)
    store = ResultStore(str(root / "out"))
    return src, root / "out", store.read_recordings(), store.read_segments()


@pytest.fixture
def results(baseline, tmp_path):
    """A copy of the baseline's results, for a test to run over again."""
    _, out, _, _ = baseline
    shutil.copytree(out, tmp_path / "out")
    return str(tmp_path / "out")


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory):
    """The placeholder's contract with other weights: a model built from another seed."""
    import keras

    from audioclf_core.architectures import build_model
    from audioclf_core.bundle import save_bundle

    src = load_bundle("placeholder")
    keras.utils.set_random_seed(1)
    model = build_model(src.manifest.architecture, src.input_shape, len(src.labels), width=8)
    fields = src.manifest.model_dump(exclude={"sha256", "created_at"})
    fields.update(name="placeholder-seed1", version="0.0.1",
                  provenance={"training": "none (seeded random initialisation, seed 1)", "built_by": "tests/flows"})
    bundle = save_bundle(model, tmp_path_factory.mktemp("bundles") / "seed1", **fields)
    assert bundle.sha256 != src.sha256
    return bundle


def one_row_set_each(recs: pd.DataFrame, segs: pd.DataFrame) -> None:
    assert recs.recording.is_unique
    assert not segs.duplicated(KEY).any()
    counts = segs.groupby("recording").size()
    assert all(counts.get(r.recording, 0) == r.n_segments for r in recs.itertuples())


def test_another_model_reclassifies_everything(baseline, results, other_bundle):
    src, _, recs_0, segs_0 = baseline
    state, summary = run(classify_archive, str(src), results, model=str(other_bundle.path))
    assert state.is_completed(), state.message
    assert (summary.listed, summary.skipped, summary.processed) == (4, 0, 4)
    assert summary.model == "placeholder-seed1 0.0.1"

    store = ResultStore(results)
    recs, segs = store.read_recordings(), store.read_segments()
    one_row_set_each(recs, segs)
    assert list(recs.recording) == list(recs_0.recording)
    assert set(recs.model_sha256) == set(segs.model_sha256) == {other_bundle.sha256}
    # Same cuts (same silence parameters), other weights: other probabilities.
    pd.testing.assert_frame_equal(segs[[*KEY, "start_s", "end_s"]], segs_0[[*KEY, "start_s", "end_s"]])
    assert (segs.p_speech != segs_0.p_speech).all()
    # The error rows were redone too: made by the new model, with the same reasons.
    assert recs[recs.status == "error"].error.tolist() == recs_0[recs_0.status == "error"].error.tolist()


def test_other_silence_parameters_reclassify_everything(baseline, results):
    src, _, recs_0, _ = baseline
    state, summary = run(classify_archive, str(src), results, options=ArchiveOptions(silence={"min_silence_ms": 700.0}))
    assert state.is_completed(), state.message
    assert (summary.skipped, summary.processed) == (0, 4)

    store = ResultStore(results)
    recs, segs = store.read_recordings(), store.read_segments()
    one_row_set_each(recs, segs)
    assert recs.params_sha256.nunique() == 1
    assert recs.params_sha256.iloc[0] != recs_0.params_sha256.iloc[0]
    assert (recs.processed_at > recs_0.processed_at.max()).all()


def test_retry_errors_reclassifies_only_the_error_rows(baseline, results):
    src, _, recs_0, _ = baseline
    state, summary = run(classify_archive, str(src), results, options=ArchiveOptions(retry_errors=True))
    assert state.is_completed(), state.message
    assert (summary.listed, summary.skipped, summary.processed, summary.failed) == (4, 2, 2, 2)
    assert sorted(uri for uri, _ in summary.failures) == sorted(str(src / n) for n in BAD_NAMES)

    recs = ResultStore(results).read_recordings().set_index("recording")
    before = recs_0.set_index("recording")
    assert list(recs.index) == list(before.index)
    ok = before.status == "ok"
    assert (recs.processed_at[ok] == before.processed_at[ok]).all()  # untouched
    assert (recs.processed_at[~ok] > before.processed_at.max()).all()  # made again
    assert not any("error row" in w for w in summary.warnings)  # none left skipped
    # Without retry_errors, the error rows count as done, and the run says so (as --dry-run does).
    state, plain = run(classify_archive, str(src), results)
    assert state.is_completed(), state.message
    assert (plain.skipped, plain.processed) == (4, 0)
    said = "2 of the recordings already done are error rows, skipped until the file changes: --retry-errors"
    assert [w for w in plain.warnings if "error row" in w] == [w for w in plain.warnings if w.startswith(said)] != []
    plan = plan_run([str(src)], results, model=None, options=ArchiveOptions())
    assert any(w.startswith(said) for w in plan.warnings), plan.warnings


def test_a_killed_run_is_completed_by_the_next_without_duplicates(tmp_path, prefect_api, truth):
    src = tmp_path / "calls"
    copy_samples(src, ["call-004-ulaw.wav"], copies=40)
    out = tmp_path / "out"
    code = (
        "from flows.archive import ArchiveOptions, classify_archive\n"
        f"classify_archive({str(src)!r}, {str(out)!r}, options=ArchiveOptions(recordings_per_task=2))\n"
    )
    # The same API as this session: the killed run is recorded where the next one is.
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=log,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and not list((out / "recordings").glob("part-*.parquet")):
                assert time.monotonic() < deadline, "no part written in 300 s"
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]

    done = ResultStore(str(out)).read_recordings()
    assert 1 <= len(done) < 40
    summary = classify_archive(str(src), str(out), options=ArchiveOptions(recordings_per_task=2))
    assert (summary.listed, summary.skipped, summary.processed, summary.failed) == (40, len(done), 40 - len(done), 0)

    store = ResultStore(str(out))
    recs, segs = store.read_recordings(), store.read_segments()
    assert len(recs) == 40 and recs.recording.is_unique and (recs.status == "ok").all()
    assert not segs.duplicated(KEY).any()
    assert len(segs) == sum(truth[sample_of(uri)] for uri in recs.recording)
    one_row_set_each(recs, segs)
    # What the killed run finished was kept as it was, not made again.
    kept = recs.set_index("recording").loc[done.recording, "processed_at"]
    assert (kept.to_numpy() == done.processed_at.to_numpy()).all()


def test_a_model_with_other_labels_is_refused_at_once_and_the_results_stay(baseline, results):
    src, _, ref_recs, _ = baseline
    state, _ = run(classify_archive, str(src), results, model="digits")
    assert state.is_failed()
    assert "has results for labels ['speech', 'music', 'noise']" in state.message, state.message
    done = task_runs_under(state.state_details.flow_run_id, expect=1, name_prefix="find-done")
    assert [t.run_count for t in done] == [1]  # not tried again: another try cannot mend it
    # No batch was classified: wait a few seconds for one to be recorded (none should be).
    assert not task_runs_under(state.state_details.flow_run_id, expect=1, name_prefix="classify-", timeout_s=5)
    recs = ResultStore(results).read_recordings()
    pd.testing.assert_frame_equal(recs.sort_values("recording").reset_index(drop=True),
                                  ref_recs.sort_values("recording").reset_index(drop=True))


def test_listing_filters_batching_and_a_file_changed_in_place(tmp_path):
    """What a nightly or ad-hoc run lists, how it cuts the work, and what it redoes: a file whose
    identity changed (a local file's etag is its modification time), and nothing it has done."""
    from datetime import datetime, timedelta, timezone

    src, out = tmp_path / "calls", str(tmp_path / "out")
    copy_samples(src / "a", ["call-004-ulaw.wav"], copies=4)
    copy_samples(src / "b", ["call-004-ulaw.wav"], copies=1)
    day_ago = time.time() - 24 * 3600
    os.utime(src / "a" / "call-004-ulaw-03.wav", (day_ago, day_ago))

    # pattern and modified_since reach the listing; a dry run (no flow run) foresees what the run does
    filters = ArchiveOptions(pattern="a/*", modified_since=datetime.now(timezone.utc) - timedelta(hours=1),
                             recordings_per_task=1, workers=1)
    plan = plan_run([str(src)], out, model=None, options=filters)
    assert not os.path.exists(out)  # nothing written
    state, s = run(classify_archive, str(src), out, options=filters)
    assert state.is_completed(), state.message
    assert (s.listed, s.processed) == (3, 3)  # a/-00 to a/-02: not b/, not the day-old a/-03
    assert s.batches == 3  # one recording per task, as asked (two tasks would keep one worker busy)
    assert (plan.listed, plan.skipped, plan.to_classify, plan.tasks) == (s.listed, s.skipped, s.processed, s.batches)
    assert plan.bytes_to_classify == 3 * os.path.getsize(src / "a" / "call-004-ulaw-00.wav")

    # a filter that leaves nothing says so: a typo in a nightly's pattern is not a quiet night
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("prefect.task_runs").addHandler(handler)
    try:
        state, s = run(classify_archive, str(src), out, options=ArchiveOptions(pattern="c/*", modified_since=day_ago))
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(handler)
    assert state.is_completed() and s.listed == 0
    when = datetime.fromtimestamp(day_ago, timezone.utc).isoformat()
    warning = f"none of the 5 recordings under {src} match pattern 'c/*' and modified since {when}"
    assert [r.getMessage() for r in records] == [warning] and s.warnings == [warning]  # logged, and in the summary
    assert f"- **warning**: {warning}" in artifacts_of(state.state_details.flow_run_id)["audioclf-run"].data

    # overlapping sources list each recording once; what is done is skipped, and only what this run listed counts
    plan = plan_run([str(src / "a"), str(src)], out, model=None, options=ArchiveOptions())
    state, s = run(backfill, out, sources=[str(src / "a"), str(src)])
    assert state.is_completed(), state.message
    assert (s.listed, s.skipped, s.processed) == (5, 3, 2)
    assert (plan.listed, plan.skipped, plan.to_classify, plan.tasks) == (5, 3, 2, s.batches)
    state, s = run(classify_archive, str(src / "b"), out)
    assert (s.listed, s.skipped, s.processed) == (1, 1, 0)  # the output holds 5 done; 1 of them is listed here
    run_md = artifacts_of(state.state_details.flow_run_id)["audioclf-run"].data
    assert "1 listed, 1 already done, 0 classified, 0 failed" in run_md

    # the same size but a new modification time: the recording changed, so it is classified again
    before = ResultStore(out).read_recordings().set_index("recording")
    changed = src / "b" / "call-004-ulaw.wav"
    os.utime(changed, (time.time() + 5, time.time() + 5))
    state, s = run(classify_archive, str(src), out)
    assert (s.listed, s.skipped, s.processed) == (5, 4, 1)
    after = ResultStore(out).read_recordings().set_index("recording")
    assert after.loc[str(changed), "source_etag"] != before.loc[str(changed), "source_etag"]
    assert after.loc[str(changed), "processed_at"] > before.processed_at.max()
    one_row_set_each(ResultStore(out).read_recordings(), ResultStore(out).read_segments())
