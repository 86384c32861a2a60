"""Batches on a Dask LocalCluster give the thread runner's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audioclf_core.results import ResultStore
from flows.archive import ArchiveOptions, classify_archive

from .conftest import batch_runs, copy_samples, run, sample_of

pytestmark = pytest.mark.slow


def test_dask_gives_the_tables_of_the_thread_runner(tmp_path, truth):
    src = tmp_path / "calls"
    copy_samples(src, ["call-003.flac", "call-004-ulaw.wav"], copies=5)

    state, on_dask = run(classify_archive, str(src), str(tmp_path / "dask"), options=ArchiveOptions(dask=True, workers=2))
    assert state.is_completed(), state.message
    state_t, on_threads = run(classify_archive, str(src), str(tmp_path / "threads"), options=ArchiveOptions(workers=2))
    assert state_t.is_completed(), state_t.message

    assert (on_dask.processed, on_dask.failed, on_dask.failed_batches) == (10, 0, 0)
    assert on_dask.batches == on_threads.batches == 4
    # The batch tasks ran on the workers and were recorded by the same API as the flow.
    batches = batch_runs(state.state_details.flow_run_id, 4)
    assert len(batches) == 4 and all(t.state.is_completed() for t in batches)
    # ... as task runs of the archive's own flow run: no subflow stands between (one costs API round trips).
    assert {t.flow_run_id for t in batches} == {state.state_details.flow_run_id}

    dask_recs = ResultStore(str(tmp_path / "dask")).read_recordings()
    thread_recs = ResultStore(str(tmp_path / "threads")).read_recordings()
    dask_segs = ResultStore(str(tmp_path / "dask")).read_segments()
    thread_segs = ResultStore(str(tmp_path / "threads")).read_segments()
    assert list(dask_recs.recording) == list(thread_recs.recording) and len(dask_recs) == 10
    assert dask_recs.n_segments.tolist() == [truth[sample_of(uri)] for uri in dask_recs.recording]
    same = ["recording", "channel", "segment", "start_s", "end_s"]
    pd.testing.assert_frame_equal(dask_segs[same], thread_segs[same])
    probs = ["p_speech", "p_music", "p_noise"]
    np.testing.assert_allclose(dask_segs[probs].to_numpy(), thread_segs[probs].to_numpy(), atol=1e-5)
