"""A recording replayed through the sidecar gives the batch path's answer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .helpers import NAMES, SAMPLES, read_jsonl, run_cli

FRAME_S = 0.010  # one analysis frame


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_replay_fast_gives_the_batch_segments_and_labels(name, env, tmp_path, batch, bundle):
    events, out = tmp_path / "x.jsonl", tmp_path / "y"
    done = run_cli(["run", "--replay", str(SAMPLES / name), "--fast", "--jsonl", str(events), "--out", str(out), "-q",
                    "--summary-json", str(tmp_path / "s.json")], env=env)
    assert done.returncode == 0, done.stderr
    want = batch[name]
    want_bounds = np.array([(s, e) for _, _, s, e, _ in want.segments])
    want_labels = [bundle.labels[int(np.argmax(p))] for *_, p in want.segments]
    want_probs = np.array([p for *_, p in want.segments])

    lines = read_jsonl(events)
    assert [ev["segment"] for ev in lines] == list(range(len(want.segments)))
    got_bounds = np.array([(ev["start_s"], ev["end_s"]) for ev in lines])
    assert got_bounds.shape == want_bounds.shape
    assert np.abs(got_bounds - want_bounds).max() <= FRAME_S
    assert [ev["label"] for ev in lines] == want_labels
    got_probs = np.array([[ev["probabilities"][lab] for lab in bundle.labels] for ev in lines])
    np.testing.assert_allclose(got_probs, want_probs, atol=1e-4)

    # The same rows as the batch platform writes, under a live:// recording.
    seg = pd.read_parquet(out / "segments").sort_values("segment")
    rec = pd.read_parquet(out / "recordings")
    assert len(rec) == 1 and rec.recording.iloc[0].startswith(f"live://replay/{name}/")
    assert (seg.recording == rec.recording.iloc[0]).all() and (seg.channel == -1).all()
    assert np.abs(seg[["start_s", "end_s"]].to_numpy() - want_bounds).max() <= FRAME_S
    assert seg.label.tolist() == want_labels
    np.testing.assert_allclose(seg[[f"p_{lab}" for lab in bundle.labels]].to_numpy(), want_probs, atol=1e-4)
    assert rec.n_segments.iloc[0] == len(want.segments)
    assert rec.duration_s.iloc[0] == pytest.approx(want.duration_s, abs=1e-6)
    assert (rec.sample_rate.iloc[0], rec.channels.iloc[0]) == (want.sample_rate, want.channels)
    assert rec.silence_s.iloc[0] == pytest.approx(want.silence_s, abs=len(want.segments) * 2 * FRAME_S)

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stop_reason"] == "end of recording" and summary["error"] is None
    assert summary["dropped_blocks"] == 0 and summary["overflows"] == 0
    assert summary["engine"] == "litert"
    # the summary adds up what the lines say; each line's wall times are the session start plus its offsets
    assert summary["heard_s"] == pytest.approx(want.duration_s, abs=1e-3)
    for lab in bundle.labels:
        mine = [ev for ev in lines if ev["label"] == lab]
        assert summary["label_segments"].get(lab, 0) == len(mine)
        assert summary["label_s"].get(lab, 0.0) == pytest.approx(sum(ev["end_s"] - ev["start_s"] for ev in mine), abs=1e-3)
    started = pd.Timestamp(summary["started_at"])
    for ev in lines:
        assert (pd.Timestamp(ev["start_time"]) - started).total_seconds() == pytest.approx(ev["start_s"], abs=2e-3)
        assert (pd.Timestamp(ev["end_time"]) - started).total_seconds() == pytest.approx(ev["end_s"], abs=2e-3)
        assert 0 <= ev["latency_ms"] < 60_000


@pytest.mark.slow
def test_replay_with_silence_options_follows_them(env, tmp_path, bundle):
    """--min-silence-ms and friends reach the splitter, as in the batch CLI."""
    from audioclf_core.pipeline import Classifier

    name = "call-002-stereo.wav"
    params = bundle.manifest.silence.replace(min_silence_ms=1200, keep_silence_ms=50)
    want = Classifier(bundle, silence=params).classify_one(str(SAMPLES / name))
    events = tmp_path / "x.jsonl"
    done = run_cli(["run", "--replay", str(SAMPLES / name), "--fast", "--jsonl", str(events), "-q",
                    "--min-silence-ms", "1200", "--keep-silence-ms", "50"], env=env)
    assert done.returncode == 0, done.stderr
    got = [(ev["start_s"], ev["end_s"]) for ev in read_jsonl(events)]
    assert len(got) == len(want.segments)
    assert np.abs(np.array(got) - np.array([(s, e) for _, _, s, e, _ in want.segments])).max() <= FRAME_S


@pytest.mark.slow
def test_duration_stops_the_session_after_that_much_audio(env, tmp_path):
    name = "call-001.wav"  # 44 s of audio
    done = run_cli(["run", "--replay", str(SAMPLES / name), "--fast", "--duration", "3", "-q",
                    "--summary-json", str(tmp_path / "s.json")], env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stop_reason"] == "duration"
    assert 3.0 <= summary["heard_s"] < 13.0  # stops at the first block past 3 s


def test_csv_copies_in_the_output_follow_the_session(env, tmp_path):
    # An output whose batch runs asked for CSV copies: the session's rows reach them too.
    out = tmp_path / "y"
    out.mkdir()
    for name in ("segments", "recordings"):
        (out / f"{name}.csv").write_text("recording\nstale\n")
    done = run_cli(["run", "--replay", str(SAMPLES / NAMES[0]), "--fast", "--out", str(out), "-q"], env=env)
    assert done.returncode == 0, done.stderr
    for name in ("segments", "recordings"):
        csv, parquet = pd.read_csv(out / f"{name}.csv"), pd.read_parquet(out / name)
        assert len(csv) == len(parquet) > 0 and "stale" not in set(csv.recording), name
