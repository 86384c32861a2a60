"""Tasks of the archive flows: list, find what is done, classify batches, finalise."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Literal

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field

from audioclf_core.audio_io import AUDIO_EXTENSIONS, SourceFile, list_recordings
from audioclf_core.bundle import load_bundle
from audioclf_core.errors import OutputConflictError, ParameterError, SourceUnavailableError
from audioclf_core.pipeline import Classifier, Tally
from audioclf_core.results import ResultStore

from .settings import storage_options

# Errors that another try cannot mend: a bad request, or an output that holds another model's
# labels. A bundle or output error may be the store's brief outage: those are tried again.
PERMANENT = (ParameterError, OutputConflictError)


def retry_unless_permanent(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry storage trouble, not a request that is wrong."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT)


# I/O tasks retry with exponential backoff (2, 4, 8 s, with jitter): long
# enough for a store's brief outage, short enough to fail a run clearly.
IO_RETRIES = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
                  retry_condition_fn=retry_unless_permanent)


class ClassifySpec(BaseModel):
    """How to classify: the model and the parameters that change results."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    channels: Literal["mix", "split"] = "mix"
    silence: dict[str, float] = Field(default_factory=dict, description="overrides of the model's silence parameters")
    batch_windows: int = Field(1024, ge=1)
    engine: Literal["auto", "litert", "keras"] = "auto"
    endpoint_url: str | None = None


class RecordingRef(BaseModel):
    """A recording to classify and what identifies its content."""

    model_config = ConfigDict(frozen=True)

    uri: str
    size: int | None = None
    etag: str | None = None

    @property
    def key(self) -> tuple[str, int | None, str | None]:
        return (self.uri, self.size, self.etag)


class BatchSummary(Tally):
    """What one classify task did."""

    part: str
    wall_s: float = 0.0


_LOCK = threading.Lock()
_LOG = logging.getLogger("audioclf.tasks")


def _warn(line: str) -> None:
    """A warning in the current task run's log (the classifier outlives any one run)."""
    try:
        get_run_logger().warning(line)
    except Exception:  # no run context: a plain logger
        _LOG.warning(line)


def classifier_for(spec: ClassifySpec) -> Classifier:
    """One classifier (and so one loaded model) per process and spec."""
    with _LOCK:  # thread tasks start together: load once, not once per thread
        return _classifier(spec.model_dump_json())


@lru_cache(maxsize=4)
def _classifier(spec_json: str) -> Classifier:
    spec = ClassifySpec.model_validate_json(spec_json)
    options = storage_options(spec.endpoint_url)
    bundle = load_bundle(spec.model, storage_options=options)
    silence = bundle.manifest.silence.replace(**spec.silence)
    return Classifier(bundle, silence=silence, channels=spec.channels, batch_windows=spec.batch_windows,
                      storage_options=options, engine=spec.engine, warn=_warn)


class Listing(BaseModel):
    """The recordings under one source, and a warning when the filters left none of them."""

    refs: list[RecordingRef]
    warning: str | None = None


@task(name="list-recordings", cache_policy=NO_CACHE, **IO_RETRIES)
def list_source(
    source: str,
    *,
    extensions: list[str] | None = None,
    pattern: str | None = None,
    modified_since: datetime | None = None,
    endpoint_url: str | None = None,
    missing_ok: bool = False,
) -> Listing:
    """List the recordings under one folder or prefix (with ``missing_ok``, one that does
    not exist has none: a backfill's day without recordings)."""
    files, warning = list_filtered(source, extensions=extensions, pattern=pattern, modified_since=modified_since,
                                   options=storage_options(endpoint_url), missing_ok=missing_ok)
    logger = get_run_logger()
    logger.info("%d recordings under %s", len(files), source)
    if warning:
        logger.warning(warning)
    return Listing(refs=[RecordingRef(uri=f.uri, size=f.size, etag=f.etag) for f in files], warning=warning)


def list_filtered(
    source: str, *, extensions: list[str] | None, pattern: str | None, modified_since: datetime | None,
    options: dict, missing_ok: bool = False,
) -> tuple[list[SourceFile], str | None]:
    """The recordings under ``source`` that the filters keep, and a warning when the filters
    keep none of several: a filter that leaves nothing (a typo in the pattern) would otherwise
    pass for a quiet night. ``options``: the store's fsspec options."""
    listing = dict(extensions=extensions or sorted(AUDIO_EXTENSIONS), storage_options=options,
                   missing_ok=missing_ok)
    files = list_recordings(source, pattern=pattern, modified_since=modified_since, **listing)
    if files or (pattern is None and modified_since is None):
        return files, None
    unfiltered = len(list_recordings(source, **listing))
    if not unfiltered:
        return files, None
    filters = " and ".join(f for f in (pattern is not None and f"pattern {pattern!r}",
                                       modified_since is not None and f"modified since {modified_since.isoformat()}") if f)
    return files, f"none of the {unfiltered} recordings under {source} match {filters}"


@task(name="find-done", cache_policy=NO_CACHE, **IO_RETRIES)
def find_done(out: str, spec: ClassifySpec, *, retry_errors: bool = False) -> dict[tuple[str, int | None, str | None], str]:
    """Keys of recordings already classified in ``out`` with this model and these parameters,
    each with its row's status (``ok`` or ``error``).

    Raises :class:`OutputConflictError` (not retried) if ``out`` holds another model's labels.
    """
    clf = classifier_for(spec)
    store = ResultStore(out, storage_options=storage_options(spec.endpoint_url))
    store.check_labels(clf.bundle.labels)
    recs = store.read_recordings()
    if recs.empty or "params_sha256" not in recs:
        return {}
    same = recs[(recs.model_sha256 == clf.bundle.sha256) & (recs.params_sha256 == clf.params_sha256)]
    if retry_errors:
        same = same[same.status == "ok"]
    # source_size is a nullable Int64 column: a missing value is pd.NA, whose truth is ambiguous.
    return {
        (r.recording, None if pd.isna(r.source_size) else int(r.source_size),
         None if pd.isna(r.source_etag) else str(r.source_etag)): str(r.status)
        for r in same.itertuples(index=False)
    }


def errors_left(refs: list[RecordingRef], done: Mapping[tuple, str]) -> str | None:
    """A warning when recordings skipped as done ended as error rows (or None): a re-run says
    so, rather than counting them done without a word."""
    n = sum(1 for r in refs if done.get(r.key) == "error")
    if not n:
        return None
    return (f"{n} of the recordings already done {'is an error row' if n == 1 else 'are error rows'}, skipped until "
            "the file changes: --retry-errors (the retry_errors option) classifies them again")


def part_name(refs: list[RecordingRef], spec: ClassifySpec) -> str:
    """A part name fixed by its contents: a retried or re-run batch overwrites itself."""
    clf = classifier_for(spec)
    h = hashlib.sha256(f"{clf.bundle.sha256}:{clf.params_sha256}".encode())
    for ref in sorted(refs, key=lambda r: r.uri):
        h.update(f"\n{ref.uri}\t{ref.size}\t{ref.etag}".encode())
    return h.hexdigest()[:24]


@task(name="classify-batch", cache_policy=NO_CACHE, task_run_name="classify-{part}", **IO_RETRIES)
def classify_batch(refs: list[RecordingRef], *, out: str, spec: ClassifySpec, part: str) -> BatchSummary:
    """Classify a batch of recordings and write their rows as one part.

    A recording that cannot be read becomes an error row. A failure of the
    storage (unreachable, server errors) raises instead, so that the task is
    retried and, if it goes on, the run fails rather than recording the
    outage as bad recordings.
    """
    start = time.perf_counter()
    clf = classifier_for(spec)
    outcomes = list(clf.classify([r.uri for r in refs]))
    outage = [o for o in outcomes if o.retryable]
    if outage:
        raise SourceUnavailableError(f"{len(outage)} of {len(refs)} recordings unreadable: {outage[0].error}")
    # A file the storage could not describe at open (gone since the listing) has no
    # identity of its own; give its error row the listing's, so that find_done knows
    # it and a re-run skips it.
    listed = {r.uri: r for r in refs}
    for o in outcomes:
        ref = listed.get(o.recording)
        if ref is not None and o.source_size is None and o.source_etag is None:
            o.source_size, o.source_etag = ref.size, ref.etag
    segments, recordings = clf.tables(outcomes)
    store = ResultStore(out, storage_options=storage_options(spec.endpoint_url))
    store.write(segments, recordings, labels=clf.bundle.labels, part=part, replace=False)
    summary = BatchSummary(part=part, wall_s=time.perf_counter() - start)
    for o in outcomes:
        summary.add(o, clf.bundle.labels)
    return summary


@task(name="finalise-results", cache_policy=NO_CACHE, **IO_RETRIES)
def finalise(out: str, *, csv: bool, endpoint_url: str | None = None) -> int:
    """Make each recording's newest rows the only ones; write the CSVs if asked, or
    if the output already has them (they would go stale).

    Returns the number of superseded rows removed.
    """
    store = ResultStore(out, storage_options=storage_options(endpoint_url))
    removed = store.replace_older()
    store.update_csv(asked=csv)
    return removed
