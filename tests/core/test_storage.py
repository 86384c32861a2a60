"""Checks of local output paths: they try, so they see what permission bits do not say."""

from __future__ import annotations

import os

import pytest

from audioclf_core.bundle import check_new_bundle
from audioclf_core.errors import BundleError, OutputError, ParameterError
from audioclf_core.storage import check_local_file, check_local_folder


def test_a_folder_that_can_be_made_passes_and_the_check_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "report"
    assert check_local_folder(target, what="report folder") == target
    assert list(tmp_path.iterdir()) == []  # the folders made for the check are gone again
    (tmp_path / "kept").mkdir()
    check_local_folder(tmp_path / "kept", what="report folder")
    assert list((tmp_path / "kept").iterdir()) == []  # no probe file left


def test_a_file_where_a_folder_should_be_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="the report folder .*f is a file, not a folder"):
        check_local_folder(tmp_path / "f", what="report folder")
    with pytest.raises(OutputError, match="cannot write the report folder .*f/sub"):
        check_local_folder(tmp_path / "f" / "sub", what="report folder")
    with pytest.raises(OutputError, match="cannot write the report folder /proc/nowhere"):
        check_local_folder("/proc/nowhere", what="report folder")


def test_a_file_target_needs_a_writable_folder_and_must_not_be_a_folder(tmp_path):
    assert check_local_file(tmp_path / "new" / "s.json", what="summary file") == tmp_path / "new" / "s.json"
    assert not (tmp_path / "new").exists()
    with pytest.raises(OutputError, match="the summary file .* is a folder, not a file"):
        check_local_file(tmp_path, what="summary file")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="the folder of the summary file .*f is a file"):
        check_local_file(tmp_path / "f" / "s.json", what="summary file")


@pytest.mark.parametrize("version", ["1.4.0", "2", "1.5.0-rc1", "1.0.0+local.3"])
def test_versions_start_with_a_number(tmp_path, version):
    assert check_new_bundle(tmp_path / "b", version=version) == tmp_path / "b"


@pytest.mark.parametrize("version", ["notaversion", "", "v1.0", "1.0 beta", "1/2"])
def test_other_versions_are_refused(tmp_path, version):
    with pytest.raises(ParameterError, match="is not a version"):
        check_new_bundle(tmp_path / "b", version=version)


def test_a_new_bundle_never_replaces_one(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match="already holds a bundle"):
        check_new_bundle(tmp_path / "b", version="1.0.0")


def test_storage_errors_add_botocores_own_only_once_it_is_loaded():
    import subprocess
    import sys

    code = ("import sys; from audioclf_core.storage import storage_errors; "
            "assert storage_errors() == (OSError,), storage_errors(); assert 'botocore' not in sys.modules; "
            "import botocore.exceptions as b; assert storage_errors() == (OSError, b.BotoCoreError)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_storage_options_reach_an_s3_compatible_endpoint():
    from audioclf_core.storage import storage_options_for

    assert storage_options_for() == {}
    assert storage_options_for(endpoint_url="http://127.0.0.1:5000", region="eu-west-1") == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:5000", "region_name": "eu-west-1"}}


HANGING_STORE = """
import os, socket, sys, threading, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
held = []  # a store that accepts every connection and never answers
threading.Thread(target=lambda: [held.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
from audioclf_core.audio_io import open_audio
from audioclf_core.errors import SourceUnavailableError
from audioclf_core.storage import bound_s3_waits
bound_s3_waits(float(sys.argv[1]))
opts = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{srv.getsockname()[1]}"}}
start = time.monotonic()
try:
    open_audio("s3://calls/a.wav", storage_options=opts)
except SourceUnavailableError as exc:
    print(f"{time.monotonic() - start:.1f}", exc)
"""


def test_a_store_that_stops_answering_fails_a_request_in_bounded_time():
    import subprocess
    import sys

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1"}
    env.pop("FSSPEC_S3", None)
    # botocore's own 60 s read timeout would take 5 minutes here (s3fs tries 5 times)
    done = subprocess.run([sys.executable, "-c", HANGING_STORE, "1"], capture_output=True, text=True, env=env,
                          timeout=120)
    seconds, _, message = done.stdout.strip().partition(" ")
    assert done.returncode == 0 and "Read timeout" in message, done.stdout + done.stderr
    assert float(seconds) < 30, done.stdout


def test_an_operators_fsspec_configuration_wins_over_the_s3_waits():
    import subprocess
    import sys

    code = ("import fsspec.config as c; from audioclf_core.storage import bound_s3_waits; bound_s3_waits(); "
            "print(c.conf['s3']['config_kwargs'])")
    env = {**os.environ, "FSSPEC_S3": '{"config_kwargs": {"read_timeout": 7}}'}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "{'read_timeout': 7, 'connect_timeout': 10.0}"
    env.pop("FSSPEC_S3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "{'connect_timeout': 10.0, 'read_timeout': 20.0}"
