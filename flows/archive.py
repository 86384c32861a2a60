"""Deployable flows: classify an archive folder, or backfill many prefixes.

Both list the recordings, skip those already classified with the same model
and parameters, fan out over the rest in coarse batches (many recordings per
task: Prefect costs ~10 ms per thread task and ~0.25 s per Dask task), gather
failures as data, make each recording's newest rows the only ones, and publish
artifacts (per-label hours, failures, where the results are, throughput).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Annotated, Collection, Literal, NamedTuple
from urllib.parse import urlsplit

from fsspec.implementations.local import LocalFileSystem
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, field_validator

from audioclf_core.audio_io import resolve_fs
from audioclf_core.bundle import DEFAULT_MODEL
from audioclf_core.errors import ParameterError
from audioclf_core.pipeline import Classifier, Tally
from audioclf_core.results import ResultStore
from audioclf_core.storage import check_endpoint_url, storage_errors
from tasks.classify import (
    BatchSummary,
    ClassifySpec,
    RecordingRef,
    classify_batch,
    classifier_for,
    errors_left,
    find_done,
    finalise,
    list_filtered,
    list_source,
    part_name,
)
from tasks.settings import storage_options


class ArchiveOptions(BaseModel):
    """How to run: algorithm parameters, filters and scale-out."""

    model_config = ConfigDict(extra="forbid")

    channels: Literal["mix", "split"] = "mix"
    silence: dict[str, float] = Field(default_factory=dict, description="overrides of the model's silence parameters, e.g. {'min_silence_ms': 700}")
    extensions: list[str] | None = Field(None, description="audio extensions to list (default: all audioclf decodes)")
    pattern: str | None = Field(None, description="glob on the path below each source (* stays within a folder, ** spans folders), e.g. '*/agent-*.wav'")
    modified_since: datetime | None = None
    csv: bool = False
    recordings_per_task: int = Field(25, ge=1, le=100_000, description="upper bound on recordings per task")
    workers: int = Field(2, ge=1, le=256, description="parallel tasks (threads, or Dask worker processes)")
    dask: bool = Field(False, description="run the batches on Dask (a LocalCluster unless dask_address is set)")
    dask_address: str | None = Field(None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    retry_errors: bool = Field(False, description="classify again recordings that ended as error rows")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (default: AUDIOCLF_S3_ENDPOINT_URL)")
    engine: Literal["auto", "litert", "keras"] = Field("auto", description="inference engine: LiteRT (no TensorFlow) when the model converts, else Keras")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        try:
            return None if v is None else check_endpoint_url(v)
        except ParameterError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("dask_address")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        """A scheduler's address names its host and port (``tcp://10.0.0.5:8786``, or
        ``10.0.0.5:8786``): checked here, not by a flow run that fails to connect."""
        if v is None:
            return v
        try:
            parts = urlsplit(v if "://" in v else f"tcp://{v}")
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError("a Dask scheduler address names its host and port, e.g. tcp://10.0.0.5:8786")
        return v


# What a run warns of, in its summary and in its plan: filters that left none of a source's
# recordings, and error rows skipped as done.
RunWarnings = Annotated[list[str], Field(description="filters that left none of a source's recordings, "
                                          "and error rows skipped as done")]


class RunSummary(Tally):
    """What a flow run did; also published as artifacts."""

    sources: list[str]
    out: str
    model: str
    listed: int = 0
    skipped: int = 0
    batches: int = 0
    failed_batches: int = 0
    not_run_batches: int = Field(0, description="batches not started once several had failed in a row")
    wall_s: float = 0.0
    batch_errors: list[str] = Field(default_factory=list)
    warnings: RunWarnings = Field(default_factory=list)

    @property
    def processed(self) -> int:
        """Recordings classified in this run (ok or error)."""
        return self.recordings

    @property
    def throughput(self) -> float:
        """Audio hours per wall hour."""
        return self.audio_s / self.wall_s if self.wall_s else 0.0


@flow(name="classify-archive", task_runner=ThreadPoolTaskRunner(max_workers=2))
def classify_archive(
    source: str, out: str, model: str | None = None, options: ArchiveOptions | None = None
) -> RunSummary:
    """Classify every recording under ``source`` (a folder, prefix or fsspec URL) into ``out``."""
    return run_archive([source], out, model=model, options=options or ArchiveOptions())


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=2))
def backfill(
    out: str,
    sources: list[str] | None = None,
    source_template: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    model: str | None = None,
    options: ArchiveOptions | None = None,
) -> RunSummary:
    """Classify several prefixes, or one prefix per day of a date range, in one run.

    ``source_template`` is formatted with each ``date`` from ``date_from`` to
    ``date_to`` inclusive: ``"s3://calls/{date:%Y/%m/%d}/"``. A day whose folder or
    prefix does not exist has no recordings; an explicit source must exist.
    """
    explicit, days = expand_sources(sources, source_template, date_from, date_to)
    return run_archive(list(dict.fromkeys(explicit + days)), out, model=model, options=options or ArchiveOptions(),
                       optional_sources=set(days) - set(explicit))


def expand_sources(
    sources: list[str] | None, template: str | None, date_from: date | None, date_to: date | None
) -> tuple[list[str], list[str]]:
    """The explicit sources, and the template's prefix for each day of the range."""
    explicit, out = list(sources or []), []
    if template is not None:
        if date_from is None:
            raise ParameterError("source_template needs date_from (and optionally date_to)")
        last = date_to or date_from
        if last < date_from:
            raise ParameterError(f"date_to={last} is before date_from={date_from}")
        if (last - date_from).days > 3660:
            raise ParameterError(f"{date_from}..{last} spans more than ten years: split the backfill")
        day = date_from
        while day <= last:
            out.append(template.format(date=day))
            day += timedelta(days=1)
    if not explicit and not out:
        raise ParameterError("nothing to backfill: give sources, or source_template with date_from")
    return explicit, out


def batch_size(n: int, *, workers: int, most: int) -> int:
    """Recordings per task: coarse (few tasks) but enough tasks to keep every worker busy."""
    return max(1, min(most, math.ceil(n / (2 * workers)))) if n else 1


# Batches that fail after their retries, one after another, before a run stops starting more:
# each has already met the store failing for a while (four attempts with backoff), so three
# in a row is a store that is down, and the rest would only repeat it, about 40 s a batch.
STOP_AFTER_FAILED_BATCHES = 3


class NotRun(NamedTuple):
    """A batch that was never started, and why."""

    reason: str


def classify_batches(batches: list[list[RecordingRef]], parts: list[str], out: str, spec: ClassifySpec,
                     options: ArchiveOptions) -> list[BatchSummary | str | NotRun]:
    """Run the batch tasks on the run's task runner; a batch that fails after its retries comes
    back as its error message, one never started as :class:`NotRun`.

    The runner is chosen at run time (threads or Dask, how many workers), so the tasks are
    submitted to it directly: they are task runs of the calling flow run, with no subflow
    between (a subflow cost three more API round trips per run). Two per worker are in hand
    at a time, and once :data:`STOP_AFTER_FAILED_BATCHES` have failed in a row no more start:
    those left come back as not run, so a store that stays down fails the run in minutes
    whatever the archive's size.
    """
    results: list[BatchSummary | str | None] = [None] * len(batches)
    queue = iter(range(len(batches)))
    failed_in_a_row, last_error = 0, ""
    with _task_runner(options) as runner:
        running: dict = {}

        def start_next() -> None:
            i = next(queue, None)
            if i is not None:
                running[runner.submit(classify_batch, parameters={"refs": batches[i], "out": out, "spec": spec,
                                                                  "part": parts[i]})] = i

        for _ in range(2 * options.workers):
            start_next()
        while running:
            fut = next(as_completed(list(running)))
            i = running.pop(fut)
            try:
                results[i] = fut.result()
                failed_in_a_row = 0
            except Exception as exc:  # failures are data here; the parent flow decides
                results[i] = last_error = f"{type(exc).__name__}: {exc}"
                failed_in_a_row += 1
            if failed_in_a_row < STOP_AFTER_FAILED_BATCHES:
                start_next()
    not_run = NotRun(f"{STOP_AFTER_FAILED_BATCHES} batches in a row failed after their retries, the last with "
                     f"{last_error}")
    return [not_run if r is None else r for r in results]


def _task_runner(options: ArchiveOptions):
    if not options.dask:
        return ThreadPoolTaskRunner(max_workers=options.workers)
    from prefect_dask import DaskTaskRunner

    if options.dask_address:
        return DaskTaskRunner(address=options.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": options.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )


def check_request(sources: list[str], *, model: str | None, options: ArchiveOptions) -> tuple[ClassifySpec, Classifier]:
    """What a run checks before it lists anything: the model loads with these parameters,
    and every local source exists (object-store sources are listed by a retried task).

    Raises
    ------
    AudioClfError
        ``ParameterError`` (bad parameters, a missing local source) or ``BundleError``.
    """
    model = model or os.environ.get("AUDIOCLF_MODEL") or DEFAULT_MODEL
    spec = ClassifySpec(model=model, channels=options.channels, silence=options.silence, endpoint_url=options.endpoint_url,
                        engine=options.engine)
    clf = classifier_for(spec)
    store_options = storage_options(options.endpoint_url)  # once: it may load a Secret block
    for src in sources:
        try:
            fs, root = resolve_fs(src, store_options)
        except (ValueError, ImportError) as exc:
            raise ParameterError(f"cannot list {src}: {exc}") from None
        except FileNotFoundError:
            raise ParameterError(f"cannot list {src}: no such archive") from None
        except storage_errors():
            continue  # a store's outage: the listing task retries it
        if isinstance(fs, LocalFileSystem) and not fs.exists(root):
            raise ParameterError(f"cannot list {src}: no such folder or file")
    return spec, clf


def preflight(sources: list[str], out: str, *, model: str | None, options: ArchiveOptions) -> None:
    """What ``audioclf run`` checks before it starts a flow run, so a mistake costs none.

    :func:`check_request`, and that ``out`` takes this model's results: no other labels
    there, and a file can be written. The flow itself leaves the output to its tasks, which
    retry a store's brief outage and refuse other labels at once (``find-done``).

    Raises
    ------
    AudioClfError
        As :func:`check_request`, or ``OutputError``.
    """
    _, clf = check_request(sources, model=model, options=options)
    ResultStore(out, storage_options=storage_options(options.endpoint_url)).check_writable(clf.bundle.labels)


def run_archive(sources: list[str], out: str, *, model: str | None, options: ArchiveOptions,
                optional_sources: Collection[str] = ()) -> RunSummary:
    """The body shared by the flows (call it inside a flow run); ``optional_sources`` may
    be missing (they then have no recordings)."""
    log = get_run_logger()
    start = time.perf_counter()
    spec, clf = check_request([s for s in sources if s not in optional_sources], model=model, options=options)
    summary = RunSummary(sources=sources, out=out, model=f"{clf.bundle.name} {clf.bundle.version}")

    listings = [
        list_source.submit(src, extensions=options.extensions, pattern=options.pattern,
                           modified_since=options.modified_since, endpoint_url=options.endpoint_url,
                           missing_ok=src in optional_sources)
        for src in sources
    ]
    found = [fut.result() for fut in listings]
    refs = list({r.uri: r for listing in found for r in listing.refs}.values())
    summary.warnings = [listing.warning for listing in found if listing.warning]
    todo, batches, size, left = _work(refs, find_done(out, spec, retry_errors=options.retry_errors), options)
    if left:
        log.warning(left)
        summary.warnings.append(left)
    summary.listed, summary.skipped = len(refs), len(refs) - len(todo)
    summary.batches = len(batches)
    log.info("%d recordings listed, %d already done, %d to classify in %d tasks of up to %d",
             summary.listed, summary.skipped, len(todo), len(batches), size)

    if batches:
        parts = [part_name(b, spec) for b in batches]
        results = classify_batches(batches, parts, out, spec, options)
        for res in results:
            if isinstance(res, NotRun):
                summary.not_run_batches += 1
            elif isinstance(res, str):
                summary.failed_batches += 1
                summary.batch_errors.append(res)
            else:
                summary.merge(res)
    finalise(out, csv=options.csv, endpoint_url=options.endpoint_url)
    summary.wall_s = time.perf_counter() - start
    _publish(summary, clf.bundle.labels)
    if summary.failed_batches:
        stopped = (f", and the other {summary.not_run_batches} were not started once {STOP_AFTER_FAILED_BATCHES} "
                   "had failed in a row" if summary.not_run_batches else "")
        raise RuntimeError(
            f"{summary.failed_batches} of {summary.batches} batches failed after their retries{stopped} "
            f"(results of the others are in {out}; a re-run completes the rest): {summary.batch_errors[0]}"
        )
    log.info("done: %d classified (%d failed), %d skipped, %.2f h of audio at %.0fx real time",
             summary.processed, summary.failed, summary.skipped, summary.audio_s / 3600, summary.throughput)
    return summary


def _work(refs: list[RecordingRef], done: Mapping[tuple, str], options: ArchiveOptions
          ) -> tuple[list[RecordingRef], list[list[RecordingRef]], int, str | None]:
    """What is left of ``refs`` once the ``done`` ones (:func:`find_done`) are skipped, its tasks'
    batches, the recordings per task, and the warning of :func:`errors_left` (or None)."""
    todo = [r for r in refs if r.key not in done]
    size = batch_size(len(todo), workers=options.workers, most=options.recordings_per_task)
    return todo, [todo[i : i + size] for i in range(0, len(todo), size)], size, errors_left(refs, done)


class RunPlan(BaseModel):
    """What a run would do: ``audioclf run --dry-run``."""

    sources: list[str]
    out: str
    model: str
    listed: int
    skipped: int
    to_classify: int
    bytes_to_classify: int = Field(description="the sizes of the recordings to classify (those the store reports)")
    tasks: int
    per_task: int
    warnings: RunWarnings = Field(default_factory=list)


def plan_run(sources: list[str], out: str, *, model: str | None, options: ArchiveOptions) -> RunPlan:
    """What a run over ``sources`` into ``out`` would do, found as a flow run finds it (the same
    checks, listing, skip of what is done, and tasks), without a flow run or a Prefect API:
    nothing is classified, and nothing is written.

    Raises
    ------
    AudioClfError
        As :func:`check_request`; ``SourceUnavailableError`` for a source that cannot be listed
        now (no retries here), ``ParameterError`` for one that names nothing or refuses the
        credentials; ``OutputConflictError`` when ``out`` holds another model's labels.
    """
    spec, clf = check_request(sources, model=model, options=options)
    files, warnings = {}, []
    store_options = storage_options(options.endpoint_url)  # once: it may load a Secret block
    for src in sources:
        found, warning = list_filtered(src, extensions=options.extensions, pattern=options.pattern,
                                       modified_since=options.modified_since, options=store_options)
        files.update((f.uri, f) for f in found)
        warnings += [warning] if warning else []
    refs = [RecordingRef(uri=f.uri, size=f.size, etag=f.etag) for f in files.values()]
    todo, batches, size, left = _work(refs, find_done.fn(out, spec, retry_errors=options.retry_errors), options)
    warnings += [left] if left else []
    return RunPlan(sources=sources, out=out, model=f"{clf.bundle.name} {clf.bundle.version}", listed=len(refs),
                   skipped=len(refs) - len(todo), to_classify=len(todo), bytes_to_classify=sum(r.size or 0 for r in todo),
                   tasks=len(batches), per_task=size if batches else 0, warnings=warnings)


def _publish(s: RunSummary, labels: tuple[str, ...]) -> None:
    """Artifacts a person reads in the UI: labels, failures, where, how fast."""
    create_table_artifact(
        key="audioclf-labels",
        table=[{"label": lab, "hours": round(s.label_s.get(lab, 0.0) / 3600, 4), "segments": s.label_segments.get(lab, 0)}
               for lab in labels],
        description="Audio per label classified in this run",
    )
    failures = [{"recording": uri, "reason": reason} for uri, reason in s.failures]
    failures += [{"recording": "(batch)", "reason": err} for err in s.batch_errors]
    create_table_artifact(
        key="audioclf-failures",
        table=failures or [{"recording": "", "reason": "no failures"}],
        description=f"{len(failures)} recordings or batches failed",
    )
    create_markdown_artifact(
        key="audioclf-run",
        markdown=(
            f"## audioclf run\n\n"
            f"- **sources**: {', '.join(f'`{x}`' for x in s.sources)}\n"
            f"- **results**: `{s.out}/segments/`, `{s.out}/recordings/`\n"
            f"- **model**: {s.model}\n"
            f"- **recordings**: {s.listed} listed, {s.skipped} already done, {s.processed} classified, {s.failed} failed\n"
            f"- **batches**: {s.batches} ({s.failed_batches} failed after retries"
            f"{f', {s.not_run_batches} not started' if s.not_run_batches else ''})\n"
            f"- **audio**: {s.audio_s / 3600:.3f} h in {s.wall_s:.1f} s: **{s.throughput:,.0f} audio hours per wall hour**\n"
            + "".join(f"- **warning**: {w}\n" for w in s.warnings)
        ),
        description="Where the results are and how fast the run went",
    )
