"""Which prefixes a backfill reads, and how a run cuts its work into tasks (no Prefect API needed)."""

from __future__ import annotations

from datetime import date

import pytest

from audioclf_core.errors import ParameterError
from flows.archive import batch_size, expand_sources

TEMPLATE = "s3://calls/{date:%Y/%m/%d}/"


def test_a_template_gives_one_prefix_per_day_inclusive():
    assert expand_sources(None, TEMPLATE, date(2026, 2, 27), date(2026, 3, 1)) == (
        [], ["s3://calls/2026/02/27/", "s3://calls/2026/02/28/", "s3://calls/2026/03/01/"])
    # one day: date_to left out, or the same as date_from
    one = ([], ["s3://calls/2026/11/20/"])
    assert expand_sources(None, TEMPLATE, date(2026, 11, 20), None) == one
    assert expand_sources(None, TEMPLATE, date(2026, 11, 20), date(2026, 11, 20)) == one
    assert expand_sources(["s3://calls/extra/"], TEMPLATE, date(2026, 11, 20), None) == (["s3://calls/extra/"], one[1])


@pytest.mark.parametrize("args, match", [
    ((None, TEMPLATE, date(2026, 11, 20), date(2026, 11, 19)), "before date_from"),
    ((None, TEMPLATE, None, None), "needs date_from"),
    ((None, None, None, None), "nothing to backfill"),
    ((None, TEMPLATE, date(2010, 1, 1), date(2026, 1, 1)), "more than ten years"),
])
def test_bad_ranges_are_refused(args, match):
    with pytest.raises(ParameterError, match=match):
        expand_sources(*args)


def test_batches_are_coarse_but_keep_every_worker_busy():
    assert batch_size(1000, workers=2, most=25) == 25  # coarse: at most what was asked
    assert batch_size(6, workers=2, most=25) == 2  # 3 tasks: enough for 2 workers and a spare
    assert batch_size(3, workers=1, most=1) == 1
    assert batch_size(0, workers=4, most=25) == 1
