"""Which task failures are tried again: storage trouble is, a wrong request is not."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from audioclf_core.errors import (
    BundleError,
    DecodeError,
    OutputConflictError,
    OutputError,
    ParameterError,
    SourceUnavailableError,
)
from tasks.classify import classify_batch, find_done, finalise, list_source, retry_unless_permanent


@pytest.mark.parametrize("exc", [ParameterError("bad"), OutputConflictError("other labels")])
def test_a_wrong_request_is_not_tried_again(exc):
    assert retry_unless_permanent(None, None, Failed(data=exc)) is False


@pytest.mark.parametrize("exc", [SourceUnavailableError("500"), OutputError("cannot write: 500"), BundleError("read timed out"),
                                 OSError("reset"), TimeoutError(), DecodeError("x")])
def test_storage_trouble_and_the_unexpected_are_tried_again(exc):
    assert retry_unless_permanent(None, None, Failed(data=exc)) is True


def test_every_io_task_retries_by_that_rule():
    for task in (list_source, find_done, classify_batch, finalise):
        assert task.retries == 3 and task.retry_condition_fn is retry_unless_permanent
