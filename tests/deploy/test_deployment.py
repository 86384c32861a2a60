"""The deployments in prefect.yaml, deployed and run the way the README says.

A real ``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME, the work
pool made with ``prefect work-pool create``, ``prefect deploy --all`` from the
repository root, a real process worker started with this environment's
``prefect``, and a ``backfill`` run triggered with parameters from the CLI. The
run's tables and artifacts are then read back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
# The environment that runs the tests is the one the worker's flow runs must use: its `prefect`
# starts the worker, and the worker starts flow runs with its own interpreter.
VENV_BIN = Path(sys.executable).parent
PREFECT = str(VENV_BIN / "prefect")
POOL = "audioclf-process"
# A fresh PREFECT_HOME runs the database migrations first: about 20 s on a small machine.
SERVER_START_S = 150
RUN_S = 240


@dataclass(frozen=True)
class Server:
    """A running Prefect server and the environment that talks to it."""

    api_url: str
    env: dict[str, str]
    home: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process we started and everything it started, even in other process groups."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # started with start_new_session: pgid == pid
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs(family, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def _base_env(home: Path, api_url: str) -> dict[str, str]:
    """This machine's environment without any Prefect or audioclf setting of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AUDIOCLF_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_CLI_PROMPT="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        DO_NOT_TRACK="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def _prefect(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _client(server: Server):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(server.api_url)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """``prefect server start`` on 127.0.0.1 and a free port, with a PREFECT_HOME of its own."""
    assert Path(PREFECT).exists(), f"no prefect next to {sys.executable}"
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _base_env(home, api_url)
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"prefect server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /api/health after {SERVER_START_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield Server(api_url=api_url, env=env, home=home, log=log)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def model_bundle(tmp_path_factory) -> Path:
    """The shipped default bundle under another name, so a run shows which setting chose it."""
    from audioclf_core.bundle import DEFAULT_MODEL, load_bundle

    folder = tmp_path_factory.mktemp("bundles") / "deploy-test"
    shutil.copytree(load_bundle(DEFAULT_MODEL, verify=False).path, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["name"] = "deploy-test"
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert load_bundle(folder).name == "deploy-test"
    return folder


@pytest.fixture(scope="module")
def deployed(server: Server, model_bundle: Path) -> dict[str, str]:
    """The work pool and ``prefect deploy --all`` from the repository root; the deploy-time env."""
    pool = _prefect("work-pool", "create", POOL, "--type", "process", env=server.env)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    # What an operator exports before deploying: the model is named, the endpoint and the
    # Secret block are left unset (AWS and AWS_* credentials), and AUDIOCLF_CHECKOUT stays
    # unset so that each worker resolves its own checkout.
    env = {**server.env, "AUDIOCLF_MODEL": str(model_bundle)}
    deploy = _prefect("deploy", "--all", "--no-prompt", env=env, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    return env


def test_deploy_creates_the_deployments_from_prefect_yaml(server, deployed):
    with _client(server) as client:
        nightly = client.read_deployment_by_name("classify-archive/nightly-archive")
        backfill = client.read_deployment_by_name("backfill/backfill")

    for dep in (nightly, backfill):
        assert dep.work_pool_name == POOL
        assert dep.enforce_parameter_schema
        # Shared job variables, templated from the deploying shell: names of settings only.
        env = dep.job_variables["env"]
        assert env["AUDIOCLF_MODEL"] == deployed["AUDIOCLF_MODEL"]
        assert env["AUDIOCLF_S3_ENDPOINT_URL"] == "" and env["AUDIOCLF_S3_SECRET_BLOCK"] == ""
        assert "{{" not in json.dumps(dep.job_variables)
        assert not any("SECRET_ACCESS_KEY" in k or "PASSWORD" in k for k in env)
        # The checkout is resolved on the worker, at run time.
        assert dep.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $AUDIOCLF_CHECKOUT }}"}}
        ]

    assert nightly.entrypoint == "flows/archive.py:classify_archive"
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [
        ("30 2 * * *", "Europe/Berlin", True)
    ]
    assert nightly.parameters["source"].startswith("s3://") and nightly.parameters["out"].startswith("s3://")
    assert nightly.parameters["options"]["csv"] is True
    assert nightly.global_concurrency_limit is not None and nightly.global_concurrency_limit.limit == 1

    assert backfill.entrypoint == "flows/archive.py:backfill"
    assert backfill.schedules == []
    assert backfill.parameters == {}
    assert "out" in backfill.parameter_openapi_schema["required"]


def test_run_with_options_the_flow_does_not_take_is_refused(server, deployed, tmp_path):
    run = _prefect(
        "deployment", "run", "backfill/backfill",
        "--param", f"out={tmp_path / 'out'}", "--param", f"sources={json.dumps([str(tmp_path)])}",
        "--param", 'options={"cvs": true}',
        env=server.env,
    )
    assert run.returncode != 0
    said = run.stdout + run.stderr
    assert "Additional properties are not allowed ('cvs' was unexpected)" in said, said
    assert not (tmp_path / "out").exists()


def test_backfill_runs_on_a_process_worker(server, deployed, model_bundle, tmp_path):
    from audioclf_core.bundle import load_bundle

    # Two "days" of an archive: copies of the sample WAV calls.
    wavs = sorted(SAMPLES.glob("*.wav"))
    assert len(wavs) >= 2
    days = [tmp_path / "calls" / "2026-11-01", tmp_path / "calls" / "2026-11-02"]
    copies = []
    for i, wav in enumerate(wavs[:3]):
        day = days[i % 2]
        day.mkdir(parents=True, exist_ok=True)
        copies.append(Path(shutil.copy(wav, day / f"copy-{i}-{wav.name}")))
    out = tmp_path / "results"

    run = _prefect(
        "deployment", "run", "backfill/backfill",
        "--param", f"out={out}",
        "--param", f"sources={json.dumps([str(d) for d in days])}",
        "--param", 'options={"csv": true, "workers": 2}',
        "--flow-run-name", "deploy-test-backfill",
        env=server.env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    flow_run_id = uuid.UUID(re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1))

    # The worker the README starts, with this checkout and this environment (and no AUDIOCLF_MODEL
    # of its own); it takes the scheduled run, waits for it to end, and exits.
    worker_env = {**server.env, "AUDIOCLF_CHECKOUT": str(ROOT)}
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
            cwd=tmp_path, env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        worker.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not finish the run in {RUN_S} s:\n{worker_log.read_text()[-4000:]}")
    finally:
        _stop(worker)
    logs = worker_log.read_text()
    assert worker.returncode == 0, logs[-4000:]

    with _client(server) as client:
        flow_run = client.read_flow_run(flow_run_id)
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        backfill = client.read_deployment_by_name("backfill/backfill")

    assert flow_run.deployment_id == backfill.id
    assert flow_run.state is not None and flow_run.state.is_completed(), f"{flow_run.state}\n{logs[-4000:]}"
    assert f"Flow run '{flow_run.name}' - Executing deployment step: set_working_directory" in logs
    assert flow_run.parameters["options"] == {"csv": True, "workers": 2}

    # The result contract, in the folder given as a run parameter.
    recordings = pd.read_parquet(out / "recordings")
    segments = pd.read_parquet(out / "segments")
    assert sorted(recordings["recording"]) == sorted(str(p) for p in copies)
    assert (recordings["status"] == "ok").all(), recordings[["recording", "error"]]
    assert set(segments["recording"]) <= set(recordings["recording"])
    assert int(recordings["n_segments"].sum()) == len(segments) > 0
    assert (out / "recordings.csv").is_file() and (out / "segments.csv").is_file()
    # The model came from the deployment's job variables (set where it was deployed).
    assert set(recordings["model"]) == set(segments["model"]) == {"deploy-test"}
    assert len(pd.read_csv(out / "recordings.csv")) == len(copies)

    # The artifacts a person reads in the UI agree with the tables.
    by_key = {a.key: a for a in artifacts}
    assert {"audioclf-labels", "audioclf-failures", "audioclf-run"} <= set(by_key)

    def table(key):
        data = by_key[key].data
        return json.loads(data) if isinstance(data, str) else data

    labels = table("audioclf-labels")
    assert [row["label"] for row in labels] == list(load_bundle(model_bundle).labels)
    assert sum(row["segments"] for row in labels) == len(segments)
    for row in labels:
        seconds = recordings[f"{row['label']}_s"].sum()
        assert row["hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert table("audioclf-failures") == [{"recording": "", "reason": "no failures"}]
    run_md = by_key["audioclf-run"].data
    assert f"{len(copies)} classified, 0 failed" in run_md
    assert f"`{out}/segments/`" in run_md
    assert "**model**: deploy-test" in run_md
