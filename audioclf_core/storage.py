"""Where results go: fsspec options for object stores, and checks of local output paths.

Entry points read deployment settings (``AUDIOCLF_S3_ENDPOINT_URL``, the
standard ``AWS_*`` credentials, which botocore reads itself) and pass them
here; the core never reads the environment.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import OutputError, ParameterError


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote fsspec location (``s3://...``), not a local one
    (a plain path or ``file://``)."""
    return "://" in path and not path.startswith("file://")


def check_endpoint_url(endpoint_url: str) -> str:
    """An S3-compatible endpoint as botocore takes it: ``http(s)://host[:port][/path]``.

    Raises
    ------
    ParameterError
        Anything else (botocore would raise a bare ``ValueError`` at the first request,
        deep inside a listing or a write).
    """
    try:
        parts = urlsplit(endpoint_url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ParameterError(f"endpoint URL {endpoint_url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParameterError(f"endpoint URL {endpoint_url!r} is not http(s)://host[:port], "
                             "e.g. http://127.0.0.1:9000")
    return endpoint_url


def storage_options_for(*, endpoint_url: str | None = None, region: str | None = None) -> dict[str, Any]:
    """Options for ``fsspec.open``/``url_to_fs`` that reach an S3-compatible store.

    Local and in-memory filesystems ignore these options, so one mapping
    serves inputs of mixed kinds.

    Raises
    ------
    ParameterError
        ``endpoint_url`` is not an http(s) URL (:func:`check_endpoint_url`).
    """
    client: dict[str, Any] = {}
    if endpoint_url:
        client["endpoint_url"] = check_endpoint_url(endpoint_url)
    if region:
        client["region_name"] = region
    return {"client_kwargs": client} if client else {}


# Seconds an S3 request may wait to connect, and then for its next bytes. botocore waits 60 s
# for each; a store that accepts connections but stops answering (overloaded, frozen) is then
# asked again by botocore (5 attempts in its legacy mode) inside each of s3fs's own 5 tries:
# 25 attempts, 25 minutes of silence per request at 60 s (measured: 25 attempts in 107 s
# at 2 s), before a task's own retries.
S3_TIMEOUT_S = 20.0


def bound_s3_waits(timeout_s: float = S3_TIMEOUT_S) -> None:
    """Give every S3 filesystem that fsspec makes from now on a connect timeout (at most 10 s)
    and a read timeout of ``timeout_s``, through fsspec's configuration for the ``s3``
    protocol, so no other filesystem gets botocore's options. What that configuration
    already sets (``FSSPEC_S3`` in the environment, ``~/.config/fsspec``) wins. Entry points
    call it (again is harmless); the core never does on its own."""
    import fsspec.config

    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ParameterError(param="timeout_s", value=timeout_s, reason="must be a positive number of seconds")
    config = fsspec.config.conf.setdefault("s3", {}).setdefault("config_kwargs", {})
    config.setdefault("connect_timeout", min(10.0, float(timeout_s)))
    config.setdefault("read_timeout", float(timeout_s))


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a storage call may raise: ``OSError``, and botocore's own errors once
    botocore is loaded (s3fs turns server replies into ``OSError``, but not missing
    credentials or an endpoint it cannot reach). Use it as ``except storage_errors() as exc``;
    it never imports botocore itself.
    """
    boto = sys.modules.get("botocore.exceptions")
    return (OSError, boto.BotoCoreError) if boto is not None else (OSError,)


def check_local_folder(path: str | Path, *, what: str) -> Path:
    """Fail now, not after the work, if ``path`` cannot be a folder this process writes in.

    The folder (and any missing parents) is created, a hidden probe file written and removed,
    and the folders made for the check removed again, so the check leaves nothing behind. It
    tries rather than reads permission bits, so it also sees read-only file systems, paths
    under a file and ``/proc``, as root too.

    Raises
    ------
    OutputError
        ``path`` is a file, or a folder cannot be made or written there; the message names
        ``what`` (e.g. "report folder") and the reason.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"the {what} {p} is a file, not a folder")
    created: list[Path] = []
    try:
        for q in reversed([q for q in (p, *p.parents) if not q.exists()]):
            q.mkdir()
            created.append(q)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".audioclf-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {p}: {exc.strerror or exc}") from None
    finally:
        for q in reversed(created):
            try:
                q.rmdir()
            except OSError:
                pass
    return p


def check_local_file(path: str | Path, *, what: str) -> Path:
    """Fail now if the file ``path`` could not be written later (see :func:`check_local_folder`)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"the {what} {p} is a folder, not a file")
    check_local_folder(p.parent, what=f"folder of the {what}")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write the {what} {p}: permission denied")
    return p
