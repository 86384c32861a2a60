"""fsspec options for object stores, built from explicit settings.

Entry points read deployment settings (``AUDIOCLF_S3_ENDPOINT_URL``, the
standard ``AWS_*`` credentials, which botocore reads itself) and pass them
here; the core never reads the environment.
"""

from __future__ import annotations

from typing import Any


def storage_options_for(*, endpoint_url: str | None = None, region: str | None = None) -> dict[str, Any]:
    """Options for ``fsspec.open``/``url_to_fs`` that reach an S3-compatible store.

    Local and in-memory filesystems ignore these options, so one mapping
    serves inputs of mixed kinds.
    """
    client: dict[str, Any] = {}
    if endpoint_url:
        client["endpoint_url"] = endpoint_url
    if region:
        client["region_name"] = region
    return {"client_kwargs": client} if client else {}
