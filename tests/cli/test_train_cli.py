"""``audioclf train`` and ``audioclf evaluate`` as a user runs them: the console script, real clips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audioclf_core.bundle import MANIFEST, MODEL_FILE, file_sha256, load_bundle
from audioclf_core.evaluation import wilson_interval

from .helpers import one_line_error

DATA = Path(__file__).parents[1] / "data"
AUDIOCLF = str(Path(sys.executable).with_name("audioclf"))
SR = 8000


def run(*args, env_extra=None):
    return subprocess.run([AUDIOCLF, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})})


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder of label folders (real speech and music from tests/data, numpy noise) with manifest.csv."""
    root = tmp_path_factory.mktemp("data")
    rows = []
    for r in pd.read_csv(DATA / "labels.csv").itertuples():
        (root / r.label).mkdir(exist_ok=True)
        shutil.copy(DATA / r.file, root / r.label / r.file)
        group = ("digits" if "digits" in r.file else "prompts") if r.label == "speech" else r.file.split("_")[1]
        rows.append({"path": f"{r.label}/{r.file}", "label": r.label, "group": group})
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    (root / "noise").mkdir()
    for i, (name, y) in enumerate({"hiss": 0.05 * rng.standard_normal(t.size), "hum": 0.3 * np.sin(2 * np.pi * 50 * t),
                                   "busy": 0.3 * np.sin(2 * np.pi * 480 * t) * ((t % 1) < 0.5),
                                   "dial": 0.3 * np.sin(2 * np.pi * 425 * t)}.items()):
        sf.write(root / "noise" / f"{name}.wav", y.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"path": f"noise/{name}.wav", "label": "noise", "group": "hiss" if i < 2 else "tones"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "smn-1"
    report = out.parent / "report-1"
    proc = run("train", str(clips), "--out", str(out), "--arch", "cnn", "--width", "4", "--epochs", "1",
               "--max-windows", "48", "--batch-size", "16", "--val-fraction", "0", "--seed", "1",
               "--test-group", "prompts", "--test-group", "reno", "--test-group", "tones", "--report", str(report),
               "--augment", "p_pitch=0.5", "--augment", "pitch=0.7,1.5", "--augment", "p_reverb=0.3")
    assert proc.returncode == 0, proc.stderr
    return out, report, proc


@pytest.mark.slow
def test_train_writes_a_bundle_and_a_report(trained):
    out, report, proc = trained
    b = load_bundle(out)
    assert b.manifest.trained and b.labels == ("speech", "music", "noise") and b.sample_rate == 8000
    assert sorted(b.manifest.evaluation["heldout_groups"]) == ["prompts", "reno", "tones"]
    assert b.manifest.provenance["training"]["arch_kwargs"] == {"width": 4}
    augmentation = b.manifest.provenance["training"]["augmentation"]  # --augment items over the smn preset's
    assert augmentation["p_pitch"] == 0.5 and augmentation["pitch"] == [0.7, 1.5] and augmentation["p_reverb"] == 0.3
    assert augmentation["p_stretch"] == 0.25 and augmentation["p_mask"] == 0.5
    for name in ("report.md", "confusion.png", "roc.png", "misclassified.csv", "per_class.csv", "metrics.json"):
        assert (report / name).is_file(), name
    metrics = json.loads((report / "metrics.json").read_text())["as-is"]
    assert metrics["segments"] == 3 + 1 + 2 and np.array(metrics["confusion"]).sum() == 6
    assert "held out (as-is): accuracy" in proc.stderr
    # `models show` gives the recorded figure with its intervals, from the manifest's per-group counts
    shown = run("models", "show", str(out))
    assert shown.returncode == 0, shown.stderr
    correct = round(metrics["accuracy"] * 6)
    lo, hi = wilson_interval(correct, 6)
    assert (f"held out (as-is): accuracy {metrics['accuracy']:.3f} on 6 segments, 3 groups; "
            f"95 % interval {lo:.3f}–{hi:.3f} over segments") in shown.stdout
    assert f"accuracy {metrics['accuracy']:.4f} (95 %: {lo:.3f}–{hi:.3f} over segments, " in proc.stderr


@pytest.mark.slow
def test_models_list_finds_local_bundles_and_skips_broken_ones(trained, tmp_path):
    out, _, _ = trained
    shutil.copytree(out, tmp_path / "runs" / "smn" / "1.0.0")
    broken = tmp_path / "runs" / "broken"
    shutil.copytree(out, broken)
    (broken / MANIFEST).write_text("{ not json")
    proc = run("models", "list", str(tmp_path / "runs"), str(out.parent), env_extra={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning: skipped") == 1 and str(broken) in proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "speech-music-noise" in line and "shipped" not in line]
    metrics = load_bundle(out).manifest.evaluation["conditions"]["as-is"]
    right = round(metrics["accuracy"] * metrics["segments"])
    for where in (tmp_path / "runs" / "smn" / "1.0.0", out):
        row = next(r for r in rows if str(where) in r)
        assert "1.0.0" in row and f"{100 * right / 6:.1f} % (3 groups)" in row
    assert "placeholder" in proc.stdout  # the shipped ones are listed too


@pytest.mark.slow
def test_from_writes_a_new_version_and_never_overwrites(trained, clips, tmp_path):
    out, _, _ = trained
    before = {p.name: file_sha256(p) for p in out.iterdir()}
    line = one_line_error(run("train", str(clips), "--from", str(out), "--out", str(out), "--epochs", "1"))
    assert "never overwritten" in line and str(out) in line
    new = tmp_path / "smn-2"
    proc = run("train", str(clips), "--from", str(out), "--out", str(new), "--freeze-features", "--epochs", "1",
               "--max-windows", "32", "--batch-size", "16", "--val-fraction", "0", "--test-group", "prompts",
               "--test-group", "reno", "--test-group", "tones", "-q")
    assert proc.returncode == 0, proc.stderr
    assert {p.name: file_sha256(p) for p in out.iterdir()} == before
    child = load_bundle(new).manifest
    assert child.version == "1.1.0" and child.provenance["parent"]["version"] == "1.0.0"
    assert child.provenance["parent"]["sha256"] == load_bundle(out).sha256


@pytest.mark.slow
def test_evaluate_writes_a_report_with_the_right_counts(trained, clips, tmp_path):
    out, _, _ = trained
    proc = run("evaluate", str(out), str(clips), "--report", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())["as-is"]
    assert metrics["segments"] == 12
    assert {k: v["support"] for k, v in metrics["per_class"].items()} == {"speech": 6, "music": 2, "noise": 4}
    assert np.array(metrics["confusion"]).sum(axis=1).tolist() == [6, 2, 4]
    assert len(pd.read_csv(tmp_path / "r" / "predictions.csv")) == 12
    # All clips include the three groups the model was trained on: the report and the console say so.
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**Not all held out:** 3 of the 6 groups evaluated here" in md and "(digits, hiss, macroform-the)" in md
    assert "warning: 3 of the 6 groups evaluated were in" in proc.stderr
    proc = run("evaluate", str(out), str(clips), "--report", str(tmp_path / "h"), "--heldout-only", "--condition", "telephone")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "h" / "metrics.json").read_text())["telephone"]["segments"] == 6
    assert "never seen in training" in (tmp_path / "h" / "report.md").read_text() and "warning" not in proc.stderr
    # Both conditions in one report: the first is the main one, the second gets its own confusion matrix.
    proc = run("evaluate", str(out), str(clips), "--report", str(tmp_path / "b"), "--heldout-only",
               "--condition", "telephone", "--condition", "as-is")
    assert proc.returncode == 0, proc.stderr
    both = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert list(both) == ["telephone", "as-is"]
    assert both["as-is"]["segments"] == 6
    assert both["telephone"] == json.loads((tmp_path / "h" / "metrics.json").read_text())["telephone"]
    assert (tmp_path / "b" / "confusion-as-is.png").is_file() and (tmp_path / "b" / "misclassified-as-is.csv").is_file()
    assert proc.stderr.count("6 segments (telephone)") == 1 and proc.stderr.count("6 segments (as-is)") == 1
    line = one_line_error(run("evaluate", str(out), str(clips), "--report", str(tmp_path / "c"), "--condition", "radio"))
    assert "radio" in line and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_evaluate_reads_labelled_clips_from_s3(trained, clips, tmp_path, s3_server, s3_bucket):
    """The same folder (its manifest.csv with relative paths) local and in a bucket: the same report."""
    import s3fs

    out, _, _ = trained
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.put(str(clips), f"{s3_bucket}/labelled", recursive=True)
    here = run("evaluate", str(out), str(clips), "--report", str(tmp_path / "here"), "-q")
    assert here.returncode == 0, here.stderr
    # The endpoint reaches the reader through the option alone (the environment's points nowhere).
    there = run("evaluate", str(out), f"s3://{s3_bucket}/labelled/", "--report", str(tmp_path / "there"), "-q",
                "--endpoint-url", s3_server.endpoint_url, env_extra={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert there.returncode == 0, there.stderr
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("here", "there"))
    assert a == b and a["as-is"]["segments"] == 12
    files = pd.read_csv(tmp_path / "there" / "predictions.csv").file
    assert files.str.startswith(f"s3://{s3_bucket}/labelled/").all() and files.nunique() == 12
    line = one_line_error(run("evaluate", str(out), f"s3://{s3_bucket}/nothing-here/", "--report", str(tmp_path / "x"),
                              "--endpoint-url", s3_server.endpoint_url))
    assert f"s3://{s3_bucket}/nothing-here/" in line


@pytest.mark.slow
def test_a_bundle_with_a_wrong_manifest_is_refused(trained, clips, tmp_path):
    out, _, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = json.loads((bad / MANIFEST).read_text())
    data["window_s"] = 0.99991
    (bad / MANIFEST).write_text(json.dumps(data))
    line = one_line_error(run("evaluate", str(bad), str(clips), "--report", str(tmp_path / "r")))
    assert str(bad) in line and "whole samples" in line
    with open(bad / MODEL_FILE, "ab") as f:
        f.write(b"\0")
    data["window_s"] = 1.0
    (bad / MANIFEST).write_text(json.dumps(data))
    line = one_line_error(run("train", str(clips), "--from", str(bad), "--out", str(tmp_path / "x")))
    assert "does not match its manifest" in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "x").exists()



@pytest.mark.slow
def test_models_join_makes_a_soup_or_an_ensemble_of_fine_tunes(trained, clips, tmp_path):
    out, _, _ = trained
    split = ["--val-fraction", "0", "--test-group", "prompts", "--test-group", "reno", "--test-group", "tones"]
    tunes = []
    for seed in ("5", "6"):
        tunes.append(tmp_path / f"ft{seed}")
        proc = run("train", str(clips), "--from", str(out), "--out", str(tunes[-1]), "--epochs", "1", "--max-windows", "32",
                   "--batch-size", "16", "--learning-rate", "0.01", "--seed", seed, "-q", *split)
        assert proc.returncode == 0, proc.stderr
    proc = run("models", "join", *map(str, tunes), "--data", str(clips), "--out", str(tmp_path / "soup"),
               "--version", "1.2.0", "--report", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    soup = load_bundle(tmp_path / "soup")
    assert soup.version == "1.2.0" and soup.manifest.architecture == "cnn"
    assert [m["sha256"] for m in soup.manifest.provenance["soup_of"]] == [load_bundle(t).sha256 for t in tunes]
    assert soup.manifest.evaluation["conditions"]["as-is"]["segments"] == 6
    assert "held out (as-is): accuracy" in proc.stderr and (tmp_path / "rep" / "report.md").is_file()
    proc = run("models", "join", *map(str, tunes), "--data", str(clips), "--out", str(tmp_path / "ens"),
               "--version", "1.2.1", "--mean", "probabilities", "-q")
    assert proc.returncode == 0, proc.stderr
    assert load_bundle(tmp_path / "ens").manifest.architecture == "ensemble of 2 cnn"
    # refusals: one line each, nothing written
    line = one_line_error(run("models", "join", str(out), str(tunes[0]), "--data", str(clips), "--out", str(tmp_path / "x"),
                              "--version", "9.0.0"))
    assert "no parent" in line and "do not average" in line
    line = one_line_error(run("models", "join", *map(str, tunes), "--data", str(clips), "--out", str(tmp_path / "x"),
                              "--version", "9.0.0", "--mean", "median"))
    assert "--mean 'median'" in line
    line = one_line_error(run("models", "join", str(tunes[0]), "--data", str(clips), "--out", str(tmp_path / "x"),
                              "--version", "9.0.0"))
    assert "at least two" in line
    assert not (tmp_path / "x").exists()

def test_bad_requests_are_one_line_errors(clips, tmp_path):
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--arch", "transformer"))
    assert "unknown architecture 'transformer'" in line
    line = one_line_error(run("train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")))
    assert "no labelled data" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--test-group", "martians"))
    assert "martians" in line
    line = one_line_error(run("evaluate", "no-such-bundle", str(clips), "--report", str(tmp_path / "r")))
    assert "no-such-bundle" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--augment", "volume=3"))
    assert "--augment 'volume=3': expected NAME=VALUE" in line and "p_pitch" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--augment", "p_pitch=2"))
    assert "p_pitch=2.0 must be a probability" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--augment", "pitch=1.5"))
    assert "pitch takes LOW,HIGH" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--feature", "fmin=300",
                              "--feature", "fmax=5000"))
    assert "--feature fmax=5000 is above the Nyquist frequency" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--feature", "n_mels=many"))
    assert "--feature n_mels=many" in line and "valid integer" in line
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--test-fraction", "1.5"))
    assert line == "error: --test-fraction 1.5: must be in [0, 1)"
    line = one_line_error(run("train", str(clips), "--out", str(tmp_path / "b"), "--test-fraction", "0.5",
                              "--val-fraction", "0.6"))
    assert line == "error: --test-fraction 0.5 and --val-fraction 0.6 leave nothing to train on"
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_outputs_and_options_are_refused_before_any_training(clips, tmp_path):
    (tmp_path / "afile").write_text("")
    b = str(tmp_path / "b")
    for args, message in [
        (("--out", str(tmp_path / "afile")), "the bundle folder .*afile is a file, not a folder"),
        (("--out", str(tmp_path / "afile" / "b")), "cannot write the bundle folder .*afile/b"),
        (("--out", b, "--report", str(tmp_path / "afile")), "the report folder .*afile is a file"),
        (("--out", b, "--width", "-3"), "--width -3: must be a whole number of at least 2"),
        (("--out", b, "--dropout", "2"), "--dropout 2.0: must be at least 0 and below 1"),
        (("--out", b, "--learning-rate", "-1"), "--learning-rate -1.0: must be a positive number"),
        # the option the user typed, where the library's argument is max_windows_per_epoch
        (("--out", b, "--max-windows", "0"), "--max-windows 0: must be at least 1"),
        (("--out", b, "--patience", "-1"), "--patience -1: must be 0 or more"),
        (("--out", b, "--consistency", "-1"), "--consistency -1.0: must be 0 \\(off\\) or a positive weight"),
        (("--out", b, "--time-budget-min", "-1"), "--time-budget-min -1.0: must be a positive number of minutes"),
        (("--out", b, "--version", "notaversion"), "'notaversion' is not a version"),
    ]:
        line = one_line_error(run("train", str(clips), *args, "--epochs", "1"))
        assert re.search(message, line), line
        assert "decoded" not in line
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_evaluate_refuses_a_report_it_cannot_write_and_data_that_does_not_decode(trained, clips, tmp_path):
    out, _, _ = trained
    (tmp_path / "afile").write_text("")
    line = one_line_error(run("evaluate", str(out), str(clips), "--report", str(tmp_path / "afile")))
    assert "the report folder" in line and "is a file, not a folder" in line
    bad = tmp_path / "bad"
    for label in ("speech", "music"):
        (bad / label).mkdir(parents=True)
    (bad / "speech" / "a.wav").write_text("not audio")
    (bad / "music" / "b.wav").write_bytes(b"")
    line = one_line_error(run("evaluate", str(out), str(bad), "--report", str(tmp_path / "r")))
    assert "none of the 2 clips" in line and "could be decoded" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_relative_data_folder_evaluates_as_an_absolute_one(trained, clips, tmp_path):
    out, _, _ = trained
    data = tmp_path / "data"
    shutil.copytree(clips, data, ignore=shutil.ignore_patterns("manifest.csv"))
    reports = {}
    for name, arg, cwd in (("relative", "data", tmp_path), ("absolute", str(data), None)):
        proc = subprocess.run([AUDIOCLF, "evaluate", str(out), arg, "--report", str(tmp_path / name)], cwd=cwd,
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert proc.returncode == 0 and "did not decode" not in proc.stderr, proc.stderr
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    n = sum(1 for p in data.rglob("*.wav"))
    assert sum(reports["relative"]["as-is"]["per_class"][k]["support"] for k in ("speech", "music", "noise")) == n
    assert reports["relative"]["as-is"]["confusion"] == reports["absolute"]["as-is"]["confusion"]


def test_train_options_reach_training_under_their_own_names(monkeypatch, tmp_path):
    """The option-to-parameter wiring, without training: each option lands where its help says."""
    from typer.testing import CliRunner

    import audioclf_cli.train as train_cli
    from audioclf_cli.main import app

    got = {}
    monkeypatch.setattr(train_cli, "run_train", lambda **kw: got.update(kw))
    result = CliRunner().invoke(app, [
        "train", str(tmp_path / "data"), "--out", str(tmp_path / "b"), "--from", "digits", "--freeze-features",
        "--time-budget-min", "2", "--test-fraction", "0.3", "--val-fraction", "0.1", "--seed", "7", "--name", "mine",
        "--version", "2.0.0", "--test-group", "t1", "--val-group", "v1", "--real-repeat", "3", "--epochs", "5",
        "--consistency", "12", "-q"])
    assert result.exit_code == 0, result.output
    assert got["time_budget_s"] == 120 and got["seed"] == 7 and got["freeze_features"] is True and got["consistency"] == 12
    assert (got["test_fraction"], got["val_fraction"]) == (0.3, 0.1)
    assert (got["test_groups"], got["val_groups"]) == (["t1"], ["v1"])
    assert (got["name"], got["version"], got["from_bundle"], got["real_repeat"], got["epochs"]) == ("mine", "2.0.0", "digits", 3, 5)
