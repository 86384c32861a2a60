"""Requests the sidecar cannot carry out: one readable line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .helpers import SAMPLES, one_error_line, run_cli


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expect",
    [
        (["--device", "999"], "no input device #999"),
        (["--device", "no-such-microphone"], "no input device named 'no-such-microphone'"),
        (["--device", "pulse", "--samplerate", "500"], "sample rate 500 is not supported"),
        (["--device", "pulse", "--samplerate", "1000000"], "sample rate 1000000 is not supported"),
        (["--device", "pulse", "--channels", "64"], "has 32 input channels, not 64"),
    ],
    ids=["index", "name", "rate-low", "rate-high", "channels"],
)
def test_a_device_that_cannot_be_used_is_one_line(pulse, env, tmp_path, args, expect):
    env = {**env, **{k: pulse.env[k] for k in ("PULSE_SERVER", "XDG_RUNTIME_DIR")}}
    events = tmp_path / "x.jsonl"
    done = run_cli(["run", *args, "--jsonl", str(events), "--out", str(tmp_path / "out")], env=env)
    assert done.returncode == 1
    assert expect in one_error_line(done.stderr)
    assert not events.exists() and not (tmp_path / "out").exists()  # nothing created for a refused request


@pytest.mark.slow
@pytest.mark.parametrize("command", [["run"], ["devices"]])
def test_no_input_device_at_all_is_one_line(env, command):
    # env points PULSE_SERVER at a socket that does not exist: PortAudio finds no input.
    done = run_cli(command, env=env)
    assert done.returncode == 1
    assert "no input device: PortAudio finds none" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--replay", str(SAMPLES / "missing.wav")], "missing.wav"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--device", "pulse"], "not both"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--samplerate", "16000"], "apply to devices"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--engine", "onnx"], "--engine 'onnx': use one of auto, litert, keras"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--min-silence-ms", "0"], "--min-silence-ms 0.0: Input should be greater than 0"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--model", "no-such-model"], "no model bundle"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--duration", "inf"], "--duration inf: must be a positive number"),
        (["--device", "pulse", "--fast"], "--fast applies to --replay"),
        (["--replay", str(SAMPLES / "call-001.wav"), "--blocksize", "1000000"],
         "--blocksize 1000000: that is 125 s of audio at 8000 Hz: give at most 1 s (8000 frames)"),
    ],
    ids=["missing-file", "device-and-replay", "rate-with-replay", "engine", "silence", "model", "duration-inf",
         "fast-device", "huge-blocks"],
)
def test_bad_options_are_one_line(env, tmp_path, args, expect):
    done = run_cli(["run", *args, "--jsonl", str(tmp_path / "x.jsonl")], env=env)
    assert done.returncode == 1
    assert expect in one_error_line(done.stderr)
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("where, expect", [("folder", "is a folder, not a file"), ("under-a-file", "is a file, not a folder")])
def test_a_summary_file_that_cannot_be_written_is_refused_before_the_session(env, tmp_path, where, expect):
    (tmp_path / "afile").write_text("")
    target = tmp_path if where == "folder" else tmp_path / "afile" / "s.json"
    done = run_cli(["run", "--replay", str(SAMPLES / "call-001.wav"), "--fast", "--jsonl", str(tmp_path / "x.jsonl"),
                    "--summary-json", str(target)], env=env)
    assert done.returncode == 1
    assert expect in one_error_line(done.stderr)
    assert not (tmp_path / "x.jsonl").exists()  # refused before any event


def test_the_summary_file_gets_the_folders_it_needs(env, tmp_path):
    target = tmp_path / "runs" / "today" / "summary.json"
    done = run_cli(["run", "--replay", str(SAMPLES / "call-001.wav"), "--fast", "-q", "--summary-json", str(target)], env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text())["segments"] > 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_events_that_cannot_be_written_stop_the_session_in_one_line_and_the_rest_is_written(env, tmp_path):
    """A full disk under the JSON lines: the session stops, --out and the summary still get
    what was classified, and the failure is one line after the end line."""
    out, summary = tmp_path / "out", tmp_path / "s.json"
    done = run_cli(["run", "--replay", str(SAMPLES / "call-001.wav"), "--fast", "-q", "--jsonl", "/dev/full",
                    "--out", str(out), "--summary-json", str(summary)], env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith("heard ")  # the end line, as always
    reason = "cannot write events to /dev/full after 0 lines: No space left on device"
    assert lines[-1] == f"error: {reason}"
    s = json.loads(summary.read_text())
    assert s["error"] == reason and s["stop_reason"] == "error" and s["segments"] >= 1
    assert len(pd.read_parquet(out / "segments")) == s["segments"]  # classified, and written
