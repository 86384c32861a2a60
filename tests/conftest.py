"""Fixtures shared by every test package: a real S3-compatible server on 127.0.0.1.

Package-specific fixtures live in the conftest.py of their own folder.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def pytest_configure(config):
    """Ctrl-C as a terminal delivers it. A shell starts a command in the background (``make
    test &``) with SIGINT ignored, and every process it starts inherits that: the tests of what
    Ctrl-C does, in this process and in the command lines they start, would meet a Ctrl-C that
    cannot arrive."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server and how to reach it."""

    endpoint_url: str

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options for this server (a fresh dict each time, so tests may change it)."""
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's standalone S3 server on 127.0.0.1 and a free port, for the whole session.

    Fake credentials and the endpoint are also put in the environment, so that
    an AWS client built without explicit options still talks to this server and
    never to AWS.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint_url)
        # No shared config or instance metadata: nothing may leak in from the host.
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        try:
            yield S3Server(endpoint_url=endpoint_url)
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket on :func:`s3_server`; yields its name.

    ``s3://<name>`` works with ``s3_server.storage_options``. s3fs's instance
    cache is cleared before and after, so no listing cache or client outlives
    the test.
    """
    import boto3
    import s3fs

    name = f"test-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield name
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        # Buckets are in moto's memory; emptying them keeps a long session small.
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        while listed:
            client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
            listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        client.delete_bucket(Bucket=name)
