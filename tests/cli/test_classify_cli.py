"""``audioclf`` as a user runs it: the installed console script, real files, a real S3 server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from .helpers import one_line_error

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "samples"
AUDIOCLF = str(Path(sys.executable).with_name("audioclf"))
N_SAMPLES = len(json.loads((SAMPLES / "truth.json").read_text())["recordings"])


def run(*args, env=None, cwd=None):
    return subprocess.run([AUDIOCLF, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of the sample calls plus a nested folder with bad files."""
    root = tmp_path_factory.mktemp("calls")
    shutil.copytree(SAMPLES, root / "calls", ignore=shutil.ignore_patterns("*.json", "*.md"))
    bad = root / "calls" / "2026" / "11"
    bad.mkdir(parents=True)
    (bad / "broken.wav").write_bytes(b"RIFF\x00\x00")
    (bad / "notes.txt").write_text("not audio")  # not an audio extension: skipped in a folder
    return root / "calls"


def test_classify_a_folder_writes_the_documented_tables(archive, tmp_path):
    out = tmp_path / "out"
    proc = run("classify", str(archive), "--out", str(out), "--csv")
    assert proc.returncode == 3, proc.stderr  # ran, but one recording failed
    assert "broken.wav" in proc.stderr and "1 failed" in proc.stderr
    recs = pd.read_parquet(out / "recordings")
    segs = pd.read_parquet(out / "segments")
    assert len(recs) == N_SAMPLES + 1
    assert set(recs.status) == {"ok", "error"}
    broken = recs[recs.status == "error"].iloc[0]
    assert broken.recording.endswith("broken.wav") and "broken.wav" in broken.error
    assert not any(r.endswith("notes.txt") for r in recs.recording)
    ok = recs[recs.status == "ok"]
    assert (ok.n_segments > 0).all()
    assert segs.groupby("recording").size().to_dict() == ok.set_index("recording").n_segments.to_dict()
    assert {"p_speech", "p_music", "p_noise", "model_sha256"} <= set(segs.columns)
    assert (segs.channel == -1).all() and (segs.end_s > segs.start_s).all()
    csv = pd.read_csv(out / "segments.csv")
    assert len(csv) == len(segs)
    assert len(pd.read_csv(out / "recordings.csv")) == len(recs)


def test_the_default_model_is_trained_and_labels_the_sample_parts_as_placed(tmp_path):
    """Each part placed in the samples (truth.json) is labelled by the segment that covers most of it.

    The placeholder would get about a third right; a trained default gets nearly all of them.
    Untrained defaults print a warning, so the warning must be absent.
    """
    out = tmp_path / "out"
    proc = run("classify", str(SAMPLES), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "untrained" not in proc.stderr
    segs = pd.read_parquet(out / "segments")
    segs["name"] = segs.recording.map(lambda r: Path(r).name)
    parts = json.loads((SAMPLES / "truth.json").read_text())["parts"]
    right = []
    for part in parts:
        rows = segs[segs.name == part["recording"]]
        overlap = (rows.end_s.clip(upper=part["end_s"]) - rows.start_s.clip(lower=part["start_s"])).clip(lower=0)
        assert overlap.max() > 0, part  # every placed part is inside some segment
        right.append(rows.loc[overlap.idxmax(), "label"] == part["label"])
    assert {p["label"] for p in parts} == {"speech", "music", "noise"}
    assert sum(right) >= 0.9 * len(parts), f"{sum(right)} of {len(parts)} parts labelled as placed"


def test_running_again_replaces_rows_instead_of_duplicating(archive, tmp_path):
    out = tmp_path / "out"
    wav = str(archive / "call-001.wav")
    run("classify", wav, "--out", str(out), "-q")
    first = pd.read_parquet(out / "segments")
    # Same file again, then grouped with another: still one row set per recording.
    assert run("classify", wav, "--out", str(out), "-q").returncode == 0
    assert run("classify", wav, str(archive / "call-003.flac"), "--out", str(out), "-q").returncode == 0
    segs = pd.read_parquet(out / "segments")
    recs = pd.read_parquet(out / "recordings")
    assert sorted(recs.recording) == sorted([wav, str(archive / "call-003.flac")])
    again = segs[segs.recording == wav].reset_index(drop=True)
    pd.testing.assert_frame_equal(again[["segment", "start_s", "end_s", "label"]], first[["segment", "start_s", "end_s", "label"]])


def test_csv_copies_stay_current_after_a_write_without_csv(archive, tmp_path):
    out = tmp_path / "out"
    assert run("classify", str(archive / "call-001.wav"), "--out", str(out), "--csv", "-q").returncode == 0
    assert run("classify", str(archive / "call-003.flac"), "--out", str(out), "-q").returncode == 0
    for name in ("segments", "recordings"):
        parquet = pd.read_parquet(out / name).sort_values(["recording"], kind="stable")
        csv = pd.read_csv(out / f"{name}.csv")
        assert sorted(csv.recording) == sorted(parquet.recording), name
    assert len(pd.read_csv(out / "recordings.csv")) == 2
    # An output that never asked for CSV gets none.
    assert run("classify", str(archive / "call-001.wav"), "--out", str(tmp_path / "plain"), "-q").returncode == 0
    assert not (tmp_path / "plain" / "recordings.csv").exists()


def test_split_channels_are_labelled(archive, tmp_path):
    proc = run("classify", str(archive / "call-002-stereo.wav"), "--channels", "split", "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stderr
    segs = pd.read_parquet(tmp_path / "o" / "segments")
    assert set(segs.channel) == {0, 1}
    assert (pd.read_parquet(tmp_path / "o" / "recordings").channel_mode == "split").all()


def test_s3_in_and_out(s3_server, s3_bucket, archive):
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for name in ("call-001.wav", "call-004-ulaw.wav"):
        fs.put(str(archive / name), f"{s3_bucket}/2026/11/22/{name}")
    env = {"AUDIOCLF_S3_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    proc = run("classify", f"s3://{s3_bucket}/2026/11/", f"s3://{s3_bucket}/2026/11/22/missing.wav",
               "--out", f"s3://{s3_bucket}/results", "--csv", env=env)
    assert proc.returncode == 3, proc.stderr
    recs = pd.read_parquet(f"s3://{s3_bucket}/results/recordings", storage_options=s3_server.storage_options)
    assert sorted(recs.recording) == sorted(
        [f"s3://{s3_bucket}/2026/11/22/{n}" for n in ("call-001.wav", "call-004-ulaw.wav", "missing.wav")]
    )
    assert recs.set_index("recording").loc[f"s3://{s3_bucket}/2026/11/22/missing.wav"].status == "error"
    assert fs.exists(f"{s3_bucket}/results/segments.csv")
    assert "testing" not in proc.stderr + proc.stdout  # credentials never printed


@pytest.mark.parametrize(
    "args,needle",
    [
        (["classify", "nothing/here/*.wav", "--out", "{tmp}"], "no recordings found"),
        (["classify", "samples/", "--out", "{tmp}", "--model", "no-such-model"], "no model bundle 'no-such-model'"),
        (["classify", "samples/", "--out", "{tmp}", "--threshold-dbfs", "6"], "--threshold-dbfs 6.0: Input should be less than or equal to 0"),
        (["classify", "samples/", "--out", "{tmp}", "--channels", "left"], "--channels 'left'"),
        (["classify", "samples/", "--out", "{tmp}", "--engine", "onnx"], "--engine 'onnx': use one of auto, litert, keras"),
        (["classify", "samples/", "--out", "{tmp}", "--batch-windows", "0"], "--batch-windows 0: must be at least 1"),
        (["classify", "samples/", "--out", "{tmp}", "--workers", "0"], "--workers 0: must be a whole number, at least 1"),
        (["classify", "samples/", "--out", "{tmp}", "--min-silence-ms", "-5"], "--min-silence-ms -5.0: Input should be greater than 0"),
        # a check of two options names both by the options typed
        (["classify", "samples/", "--out", "{tmp}", "--min-segment-ms", "60000", "--max-segment-s", "1"],
         "error: --max-segment-s 1.0 is shorter than --min-segment-ms 60000.0"),
        (["models", "join", "placeholder", "digits", "--data", "samples", "--out", "{tmp}", "--version", "1.0.0"],
         "placeholder: an untrained bundle cannot be a member"),
        (["classify", "samples/", "--out", "/etc/hostname/x"], "/etc/hostname"),
        (["models", "show", "nope"], "no model bundle 'nope'"),
        (["models", "list", "no/such/folder"], "no/such/folder: no such folder"),
        (["models", "list", "samples/call-001.wav"], "samples/call-001.wav is a file; give folders"),
        (["models", "show", ""], "no model bundle named"),
        (["models", "show", "foo://x.zip"], "cannot fetch model bundle foo://x.zip: Protocol not known: foo"),
        # audioclf run checks the same before it starts a flow run (no retries, no Prefect logs)
        (["run", "no/such/folder", "--out", "{tmp}"], "cannot list no/such/folder: no such folder or file"),
        (["run", "zip://::no/such.zip", "--out", "{tmp}"], "cannot list zip://::no/such.zip: no such archive"),
        (["run", "zip://::samples/call-001.wav", "--out", "{tmp}"],
         "cannot list zip://::samples/call-001.wav: samples/call-001.wav is not a readable archive (File is not a zip file)"),
        (["run", "samples/", "--out", "{tmp}", "--workers", "0"], "--workers 0: Input should be greater than or equal to 1"),
        (["run", "samples/", "--out", "{tmp}", "--channels", "left"], "--channels 'left': Input should be 'mix' or 'split'"),
        (["run", "samples/", "--out", "{tmp}", "--workers", "0", "--recordings-per-task", "0"],  # each told, by its option
         "error: --recordings-per-task 0: Input should be greater than or equal to 1; --workers 0: Input should be"),
        (["run", "samples/", "--out", "{tmp}", "--min-silence-ms", "-5"], "--min-silence-ms -5.0: Input should be greater than 0"),
        (["run", "samples/", "--out", "{tmp}", "--model", "no-such-model"], "no model bundle 'no-such-model'"),
        (["run", "samples/", "--out", "/etc/hostname/x"], "/etc/hostname"),
        # an endpoint botocore would take for a bare ValueError at the first request
        (["classify", "samples/", "--out", "{tmp}", "--endpoint-url", "notaurl"],
         "error: endpoint URL 'notaurl' is not http(s)://host[:port], e.g. http://127.0.0.1:9000"),
        (["classify", "s3://calls/a.wav", "--out", "{tmp}", "--endpoint-url", "127.0.0.1:9000"],
         "endpoint URL '127.0.0.1:9000' is not http(s)://host[:port]"),
        (["run", "s3://calls/2026/11/", "--out", "{tmp}", "--endpoint-url", "notaurl"],
         "error: --endpoint-url 'notaurl': endpoint URL 'notaurl' is not http(s)://host[:port]"),
        (["run", "samples/", "--out", "{tmp}", "--dask-address", "notaurl"],
         "error: --dask-address 'notaurl': a Dask scheduler address names its host and port, e.g. tcp://10.0.0.5:8786"),
    ],
)
def test_errors_are_one_readable_line(tmp_path, args, needle):
    proc = run(*[a.replace("{tmp}", str(tmp_path / "o")) for a in args], cwd=ROOT)
    line = one_line_error(proc)
    assert needle in line
    assert not (tmp_path / "o").exists()  # a refused request leaves nothing behind


@pytest.mark.slow
def test_run_cuts_recordings_with_the_options_classify_takes(tmp_path):
    # the segmenter's options reach the flow's tasks: the same segments as classify makes with them
    cut = ["--max-segment-s", "1.5", "--min-silence-ms", "300", "--keep-silence-ms", "50", "--engine", "keras"]
    call = str(SAMPLES / "call-001.wav")
    done = run("run", call, "--out", str(tmp_path / "flow"), "-q", *cut, env={"PREFECT_HOME": str(tmp_path / "ph")})
    assert done.returncode == 0, done.stderr
    assert run("classify", call, "--out", str(tmp_path / "cli"), "-q", *cut).returncode == 0
    assert run("classify", call, "--out", str(tmp_path / "default"), "-q").returncode == 0
    spans = {k: pd.read_parquet(tmp_path / k / "segments")[["start_s", "end_s", "label"]] for k in ("flow", "cli", "default")}
    pd.testing.assert_frame_equal(spans["flow"], spans["cli"])
    assert (spans["flow"].end_s - spans["flow"].start_s).max() <= 1.5 + 2 * 0.05 + 1e-6
    assert len(spans["flow"]) > len(spans["default"])  # cut shorter than the model's 30 s and 500 ms
    params = {k: pd.read_parquet(tmp_path / k / "recordings").params_sha256.iloc[0] for k in spans}
    assert params["flow"] == params["cli"] != params["default"]


def test_run_dry_run_says_what_a_run_would_do_and_writes_nothing(tmp_path):
    out = tmp_path / "o"
    first = run("run", str(SAMPLES), "--out", str(out), "--dry-run", "--workers", "1")
    assert first.returncode == 0, first.stderr
    size = sum((SAMPLES / n).stat().st_size for n in os.listdir(SAMPLES) if n.endswith((".wav", ".flac")))
    assert f"4 listed, 0 already done, 4 to classify ({size / 1e6:,.1f} MB)" in first.stderr
    assert "2 (up to 2 recordings each)" in first.stderr and "Flow run" not in first.stderr + first.stdout
    assert not out.exists()
    typo = run("run", str(SAMPLES), "--out", str(out), "--dry-run", "--pattern", "*.wv")
    assert typo.returncode == 0 and "0 listed" in typo.stderr, typo.stderr
    assert f"warning: none of the 4 recordings under {SAMPLES} match pattern '*.wv'" in typo.stderr
    assert run("classify", str(SAMPLES / "call-001.wav"), "--out", str(out), "-q").returncode == 0
    again = run("run", str(SAMPLES), "--out", str(out), "--dry-run")
    assert again.returncode == 0 and "4 listed, 1 already done, 3 to classify" in again.stderr, again.stderr
    assert len(pd.read_parquet(out / "recordings")) == 1  # still only what classify wrote


@pytest.mark.slow
def test_run_summary_repeats_a_filter_that_left_nothing(tmp_path):
    done = run("run", str(SAMPLES), "--out", str(tmp_path / "o"), "--pattern", "*.wv", env={"PREFECT_HOME": str(tmp_path / "ph")})
    assert done.returncode == 0, done.stderr  # a night without calls is not an error
    summary = done.stderr[done.stderr.index("audioclf run →"):]  # after the flow run's own log lines
    assert "0 listed" in summary and f"warning: none of the 4 recordings under {SAMPLES} match pattern '*.wv'" in summary


def test_run_refuses_an_output_that_holds_other_labels_before_any_flow_run(tmp_path):
    out = tmp_path / "o"
    assert run("classify", str(SAMPLES / "call-001.wav"), "--out", str(out), "-q").returncode == 0
    line = one_line_error(run("run", str(SAMPLES), "--out", str(out), "--model", "digits"))
    assert "has results for labels ['speech', 'music', 'noise']" in line and "flow run" not in line
    assert len(pd.read_parquet(out / "recordings")) == 1  # nothing classified into it


def test_file_names_with_brackets_are_printed_as_they_are(tmp_path):
    # Square brackets in a path read as console markup would be dropped from the line ("[bold]"),
    # or end the command in a traceback ("[/x]" closes no tag); the progress bar shows them too.
    calls = tmp_path / "calls"
    for rel in ("in [bold]/a.wav", "[/x].wav", "take [2].wav"):
        (calls / rel).parent.mkdir(parents=True, exist_ok=True)
        (calls / rel).write_bytes(b"RIFF\x00\x00")
    out = tmp_path / "o [red]"
    proc = run("classify", str(calls), "--out", str(out), env={"COLUMNS": "300"})
    assert proc.returncode == 3, proc.stderr
    for rel in ("in [bold]/a.wav", "[/x].wav", "take [2].wav"):
        assert f"failed: cannot decode {calls / rel}:" in proc.stderr
    assert f"audioclf classify →{out}" in "".join(line.strip() for line in proc.stderr.splitlines())  # a wrapped title
    line = one_line_error(run("classify", str(calls / "[" / "y].wav"), "--out", str(out)))
    assert f"no recordings found in '{calls}/[/y].wav'" in line


def test_a_summary_names_ten_failures_and_counts_the_rest():
    from rich.console import Console

    from audioclf_cli.classify import print_failures

    console = Console(record=True, width=200)
    failures = [(f"/calls/{i}.wav", f"cannot decode /calls/{i}.wav: not an audio file") for i in range(12)]
    print_failures(console, failures, failed=12, out="s3://calls/results/")
    lines = console.export_text().splitlines()
    assert lines[:10] == [f"failed: cannot decode /calls/{i}.wav: not an audio file" for i in range(10)]
    assert lines[10:] == ["… and 2 more failures: see s3://calls/results/recordings/ (status = 'error')"]
    console = Console(record=True, width=200)
    print_failures(console, failures[:3], failed=3, out="o")
    assert len(console.export_text().splitlines()) == 3


def test_models_list_and_show():
    from audioclf_core.bundle import load_bundle

    proc = run("models", "list", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") > 2}
    assert "untrained" in rows["placeholder"] and "shipped" in rows["placeholder"]
    assert "shipped (default)" in rows["speech-music-noise"]
    for name in ("speech-music-noise", "digits"):   # the figure each manifest records, from its per-group counts
        rec = load_bundle(name, verify=False).manifest.evaluation["conditions"]["as-is"]
        right = sum(round(g["accuracy"] * g["segments"]) for g in rec["per_group"].values())
        assert f"{100 * right / rec['segments']:.1f} % ({len(rec['per_group'])} groups)" in rows[name]
    proc = run("models", "show", "placeholder")
    assert proc.returncode == 0 and '"trained": false' in proc.stdout and "97 frames x 64 features" in proc.stdout


def test_models_show_refuses_a_bundle_whose_model_does_not_fit_its_manifest(tmp_path):
    """`show` prints a verified manifest: it must refuse what classify and evaluate refuse."""
    from audioclf_core.bundle import load_bundle

    for field, value, needle in (("sample_rate", 32000, "model expects windows of shape (97, 64), but the manifest's "
                                  "features give (197, 64)"),
                                 ("labels", ["speech", "music", "noise", "tone"], "model has 3 outputs, but the manifest "
                                  "lists 4 labels")):
        bundle = tmp_path / field
        shutil.copytree(load_bundle("placeholder").path, bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest[field] = value
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        assert needle in one_line_error(run("models", "show", str(bundle)))


def test_damaged_bundles_are_one_line_errors_and_left_out_of_the_list(tmp_path):
    import hashlib
    import tarfile
    import zipfile

    from audioclf_core.bundle import load_bundle

    source = load_bundle("placeholder").path
    with tarfile.open(tmp_path / "whole.tar.gz", "w:gz") as tf:
        tf.add(source, arcname=".")
    with zipfile.ZipFile(tmp_path / "whole.zip", "w") as zf:
        for f in source.iterdir():
            zf.write(f, f.name)
    for name in ("whole.tar.gz", "whole.zip"):  # cut short, as a download that stopped
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(data[: len(data) // 3])
        assert run("models", "show", str(tmp_path / name)).returncode == 0
        line = one_line_error(run("models", "show", str(tmp_path / f"cut-{name}")))
        assert line.startswith(f"error: {tmp_path / f'cut-{name}'}: cannot unpack ("), line
    # A model.keras that is not one (its hash recorded to match): named as such, not "File not found".
    notkeras = tmp_path / "bundles" / "notkeras"
    shutil.copytree(source, notkeras)
    (notkeras / "model.keras").write_text("hello")
    manifest = json.loads((notkeras / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256(b"hello").hexdigest()
    (notkeras / "manifest.json").write_text(json.dumps(manifest))
    line = one_line_error(run("models", "show", str(notkeras)))
    assert "model.keras: not a .keras file" in line and "File not found" not in line, line
    # A bundle whose weights do not match their manifest is skipped by `list` as `show` refuses it.
    tampered = tmp_path / "bundles" / "tampered"
    shutil.copytree(source, tampered)
    (tampered / "model.tflite").write_bytes((tampered / "model.tflite").read_bytes() + b"\0")
    assert "model.tflite does not match its manifest" in one_line_error(run("models", "show", str(tampered)))
    proc = run("models", "list", str(tmp_path / "bundles"), env={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert f"warning: skipped {tampered}: model.tflite does not match its manifest" in proc.stderr
    assert str(tampered) not in proc.stdout and str(notkeras) in proc.stdout


def test_a_store_that_cannot_be_reached_is_one_line_or_an_error_row(tmp_path):
    # botocore's own errors (no endpoint, no credentials) are not OSErrors: they must still read as one line.
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
    nowhere = ["--endpoint-url", "http://127.0.0.1:1"]
    line = one_line_error(run("classify", str(SAMPLES / "call-001.wav"), "--out", "s3://calls/results", *nowhere, env=env))
    assert line.startswith("error: cannot write results to s3://calls/results: Could not connect to the endpoint URL")
    proc = run("classify", "s3://calls/a.wav", "--out", str(tmp_path / "o"), *nowhere, env=env)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    row = pd.read_parquet(tmp_path / "o" / "recordings").iloc[0]
    assert row.status == "error" and row.error.startswith("cannot open s3://calls/a.wav: Could not connect")


def test_a_table_folder_that_cannot_be_written_is_found_before_any_work(tmp_path):
    out = tmp_path / "o"
    (out / "segments").mkdir(parents=True)
    (out / "segments").chmod(0o555)
    as_user = []
    if os.geteuid() == 0:  # root writes anywhere: drop the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run([*as_user, AUDIOCLF, "classify", str(SAMPLES / "call-001.wav"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    line = one_line_error(proc)
    assert f"cannot write results to {out}" in line and "Permission denied" in line and ".audioclf-probe" in line
    assert "classified" not in proc.stdout + proc.stderr
