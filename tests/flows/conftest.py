"""Fixtures of the flow tests: a real Prefect API, sample archives, a faulty proxy in front of S3.

The Prefect API is ``prefect_test_harness``: a real server process with a
temporary SQLite database, started once for the session. Flows are called
directly, as a deployment's worker would, and their runs, task runs and
artifacts are read back from that API.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "samples"
TRUTH = json.loads((SAMPLES / "truth.json").read_text())
SAMPLE_NAMES = sorted(TRUTH["recordings"])

# Files that cannot be classified, each with the words its error row must carry.
BAD_FILES: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty.wav": (lambda: b"", "empty file (0 bytes)"),
    "noise.wav": (lambda: random.Random(0).randbytes(4096), "not an audio file (neither libsndfile nor ffmpeg recognises it)"),
    "truncated.wav": (lambda: (SAMPLES / "call-001.wav").read_bytes()[:30], "corrupt or truncated header"),
    "notes.mp3": (lambda: b"minutes of the meeting\n" * 40, "not an audio file (it looks like text)"),
}


# -- Prefect ----------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[str]:
    """A real Prefect server with a temporary database for the whole session; yields its API URL."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DO_NOT_TRACK", "1")
        env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        env.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield PREFECT_API_URL.value()


# -- recordings -------------------------------------------------------------


@pytest.fixture(scope="session")
def truth() -> dict[str, int]:
    """Segments per sample, as the core finds them with the default model's silence parameters.

    Computed without Prefect, straight from ``Classifier.classify_one`` on the
    local files: what every flow run must reproduce, wherever the files live.
    """
    from audioclf_core.bundle import DEFAULT_MODEL, load_bundle
    from audioclf_core.pipeline import Classifier

    clf = Classifier(load_bundle(DEFAULT_MODEL))
    found = {}
    for name in SAMPLE_NAMES:
        outcome = clf.classify_one(str(SAMPLES / name))
        assert outcome.status == "ok", outcome.error
        found[name] = outcome.n_segments
    # The mono samples are cut where truth.json placed their parts.
    placed = Counter(part["recording"] for part in TRUTH["parts"])
    for name, n in found.items():
        if TRUTH["recordings"][name]["channels"] == 1:
            assert n == placed[name], name
    return found


def copy_samples(folder: Path, names=SAMPLE_NAMES, *, copies: int = 1) -> list[Path]:
    """Copy samples into ``folder``; with ``copies > 1``, copy 3 of ``call-001.wav`` is ``call-001-03.wav``."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for k in range(copies):
        for name in names:
            stem, ext = os.path.splitext(name)
            dest = folder / (name if copies == 1 else f"{stem}-{k:02d}{ext}")
            shutil.copyfile(SAMPLES / name, dest)
            made.append(dest)
    return made


def sample_of(uri: str) -> str:
    """The sample a copy was made from: ``.../call-003-04.flac`` -> ``call-003.flac``."""
    name = uri.rsplit("/", 1)[-1]
    if name in TRUTH["recordings"]:
        return name
    stem, ext = os.path.splitext(name)
    return stem.rsplit("-", 1)[0] + ext


@pytest.fixture
def s3(s3_server, s3_bucket):
    """An fsspec filesystem on the test bucket, and the bucket's name."""
    import fsspec

    return fsspec.filesystem("s3", **s3_server.storage_options, skip_instance_cache=True), s3_bucket


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> str:
    """Deployment settings as a worker gets them: the endpoint and credentials in the environment."""
    monkeypatch.setenv("AUDIOCLF_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server.endpoint_url


# -- a store that fails -----------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_INJECTED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


class FaultyProxy:
    """An HTTP reverse proxy on 127.0.0.1 in front of the S3 server that fails chosen requests.

    ``fault(method, path)`` decides for each request: ``None`` forwards it, a
    status (``500``, ``503``) answers it with an S3 error document, as S3 does
    in an outage. Every request is
    counted in ``seen`` and every injected fault in ``failed``, by
    ``(method, path)``.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fault: Callable[[str, str], int | None] = lambda method, path: None
        self.seen: Counter = Counter()
        self.failed: Counter = Counter()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def decide(self, method: str, path: str) -> int | None:
        with self.lock:
            self.seen[method, path] += 1
            outcome = self.fault(method, path)
            if outcome is not None:
                self.failed[method, path] += 1
            return outcome

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pooled connections expect

    def log_message(self, format, *args):  # noqa: A002 - quiet: the counters are the record
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length else None

    def _relay(self) -> None:
        proxy: FaultyProxy = self.server.proxy
        body = self._body()
        outcome = proxy.decide(self.command, urlsplit(self.path).path)
        if outcome is not None:
            self.send_response_only(int(outcome))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_INJECTED)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(_INJECTED)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Content-Length", None)
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response_only(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                    self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay


@pytest.fixture
def faulty_proxy(s3_server) -> Iterator[FaultyProxy]:
    """A :class:`FaultyProxy` in front of the test S3 server, forwarding everything until told otherwise."""
    proxy = FaultyProxy(s3_server.endpoint_url)
    try:
        yield proxy
    finally:
        proxy.close()


# -- reading runs back from the API ----------------------------------------


def run(flow_fn, *args, **kwargs):
    """Call a flow as a worker does; return its final state and, if it completed, its RunSummary."""
    state = flow_fn(*args, return_state=True, **kwargs)
    return state, (state.result() if state.is_completed() else None)


def artifacts_of(flow_run_id) -> dict:
    """The artifacts a flow run published, by key, as the API stores them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def table_rows(artifact) -> list[dict]:
    """The rows of a table artifact (the API keeps them as JSON text)."""
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def task_runs_under(flow_run_id, *, expect: int, name_prefix: str = "", timeout_s: float = 60.0) -> list:
    """Task runs of a flow run and its subflows, once the API has recorded ``expect`` finished ones.

    Prefect 3 records task runs from events, a moment after they happen: this
    waits (bounded) until the server has caught up, then returns them.
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            subflows = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            ids = [flow_run_id, *[f.id for f in subflows]]
            runs = [
                t
                for t in client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids)))
                if t.name.startswith(name_prefix)
            ]
            finished = [t for t in runs if t.state is not None and t.state.is_final()]
            if len(finished) >= expect or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def batch_runs(flow_run_id, n: int) -> list:
    """The ``classify-<part>`` task runs under a flow run, once ``n`` have finished."""
    runs = task_runs_under(flow_run_id, expect=n, name_prefix="classify-")
    return [t for t in runs if re.fullmatch(r"classify-[0-9a-f]{24}", t.name)]
