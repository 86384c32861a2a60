"""Deployment settings, read where the work runs (worker process), never from code.

- ``AUDIOCLF_S3_ENDPOINT_URL``: an S3-compatible endpoint (MinIO, Ceph, moto).
- Credentials: the standard ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  (or profiles, instance roles), which botocore reads itself; or
  ``AUDIOCLF_S3_SECRET_BLOCK``, the name of a Prefect ``Secret`` block holding
  ``{"key": ..., "secret": ...}``. Credentials never become flow parameters,
  so they never appear in the UI, logs or artifacts.
"""

from __future__ import annotations

import json
import os
from typing import Any

from audioclf_core.errors import ParameterError
from audioclf_core.storage import bound_s3_waits, storage_options_for


def storage_options(endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options for the object store, from the environment and blocks."""
    bound_s3_waits()  # a store that stops answering fails a request in minutes, not in half an hour
    options = storage_options_for(endpoint_url=endpoint_url or os.environ.get("AUDIOCLF_S3_ENDPOINT_URL"))
    # No listing cache: a worker process outlives one run, recordings keep arriving,
    # and s3fs answers info() for a file its cached listing lacks with "no such file".
    options["use_listings_cache"] = False
    block = os.environ.get("AUDIOCLF_S3_SECRET_BLOCK")
    if block:
        from prefect.blocks.system import Secret

        value = Secret.load(block).get()
        creds = json.loads(value) if isinstance(value, str) else value
        if not isinstance(creds, dict) or not {"key", "secret"} <= set(creds):
            raise ParameterError(f"Secret block {block!r} must hold a JSON object with 'key' and 'secret'")
        options.update(key=creds["key"], secret=creds["secret"])
    return options
