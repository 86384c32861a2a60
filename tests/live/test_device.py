"""The sidecar on a real input device: PulseAudio's null sink, played into with paplay."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pandas as pd
import pytest

from .helpers import SAMPLES, LiveProcess, mix_truth, read_jsonl, run_cli
from .pulse import PulseServer, available

NAME = "call-004-ulaw.wav"  # 17 s, four parts
DEVICE_TOL_S = 0.05  # device timing: where the stream starts relative to the file is only known to a block or so


def _pulse_env(env: dict, pulse: PulseServer) -> dict:
    return {**env, **{k: pulse.env[k] for k in ("PULSE_SERVER", "XDG_RUNTIME_DIR")}}


@pytest.mark.slow
def test_devices_lists_the_pulse_input_with_its_native_rate(pulse, env):
    done = run_cli(["devices"], env=_pulse_env(env, pulse))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pulse_row = next(line for line in lines if " pulse " in f" {line} ")
    assert "44100 Hz" in pulse_row and "ALSA" in pulse_row
    assert sum(line.lstrip().startswith("*") for line in lines) == 1, done.stdout  # the default is marked


@pytest.mark.slow
def test_a_recording_played_into_the_device_gives_the_truth_and_the_batch_labels(pulse, env, tmp_path, batch, bundle):
    events, out, summary = tmp_path / "x.jsonl", tmp_path / "y", tmp_path / "s.json"
    live = LiveProcess(["run", "--device", "pulse", "--jsonl", str(events), "--out", str(out),
                        "--summary-json", str(summary), "-q"], env=_pulse_env(env, pulse))
    live.wait_for("listening")
    time.sleep(0.3)
    pulse.play(SAMPLES / NAME)
    time.sleep(1.0)  # the last part closes after min_silence_ms of silence
    live.signal(signal.SIGINT)
    rc, stderr = live.finish(timeout=30)
    assert rc == 0, stderr

    got = read_jsonl(events)
    truth = mix_truth(NAME)
    want = batch[NAME]
    assert len(got) == len(truth) == len(want.segments), (got, truth)
    # Align the stream's start with the file's on the first segment, then every
    # boundary must land where the batch path puts it, within device timing...
    offset = got[0]["start_s"] - want.segments[0][2]
    for ev, (_, _, s, e, _) in zip(got, want.segments):
        assert abs(ev["start_s"] - offset - s) <= DEVICE_TOL_S, (ev, s)
        assert abs(ev["end_s"] - offset - e) <= DEVICE_TOL_S, (ev, e)
    # ...and inside the true parts, padded by keep_silence (as tests/core checks the batch path).
    pad = bundle.manifest.silence.keep_silence_ms / 1000
    for ev, (ts, te) in zip(got, truth):
        assert ts - pad - DEVICE_TOL_S <= ev["start_s"] - offset <= ts + 0.15 + DEVICE_TOL_S
        assert te - 0.25 - DEVICE_TOL_S <= ev["end_s"] - offset <= te + pad + DEVICE_TOL_S
    # Labels: the batch path's for the same file.
    assert [ev["label"] for ev in got] == [bundle.labels[int(np.argmax(p))] for *_, p in want.segments]

    s = json.loads(summary.read_text())
    assert s["source"] == "pulse" and s["sample_rate"] == 44100 and s["channels"] == 2
    assert s["stop_reason"] == "SIGINT" and s["error"] is None
    assert s["overflows"] == 0 and s["dropped_blocks"] == 0
    assert all(ev["latency_ms"] >= 0 for ev in got)
    assert s["latencies_ms"] == pytest.approx([ev["latency_ms"] for ev in got], abs=0.01)  # the summary's are the events'
    rec = pd.read_parquet(out / "recordings")
    assert rec.recording.iloc[0].startswith("live://pulse/") and rec.sample_rate.iloc[0] == 44100
    assert pd.read_parquet(out / "segments").label.tolist() == [ev["label"] for ev in got]


@pytest.mark.slow
def test_a_device_that_disappears_is_one_line_and_what_was_heard_is_kept(env, tmp_path):
    why = available()
    if why:
        pytest.skip(why)
    with PulseServer(tmp_path / "pulse") as server:  # its own server: this test kills it
        events, out = tmp_path / "x.jsonl", tmp_path / "y"
        live = LiveProcess(["run", "--device", "pulse", "--jsonl", str(events), "--out", str(out), "-q"],
                           env=_pulse_env(env, server))
        live.wait_for("listening")
        player = server.play(SAMPLES / NAME, wait=False)
        time.sleep(5.0)  # the first part (0.4-3.1 s) has been heard
        server.kill()
        player.wait(timeout=10)
        rc, stderr = live.finish(timeout=30)
    assert rc == 1
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "stopped delivering audio" in lines[0], stderr
    assert "Traceback" not in stderr and "Expression" not in stderr  # no PortAudio traces
    assert len(read_jsonl(events)) >= 1
    assert len(pd.read_parquet(out / "segments")) == len(read_jsonl(events))
