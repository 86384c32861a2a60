"""The ``audioclf classify`` job: inputs in, result tables out."""

from __future__ import annotations

import os
import time
from typing import Iterable, Mapping, Sequence

from pydantic import Field
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audioclf_core.audio_io import expand_inputs
from audioclf_core.bundle import DEFAULT_MODEL, load_bundle
from audioclf_core.errors import ParameterError
from audioclf_core.pipeline import Classifier, RecordingOutcome, Tally
from audioclf_core.results import ResultStore
from audioclf_core.storage import storage_options_for

PART_RECORDINGS = 1000  # recordings per part file: a crash loses at most one part's work


def default_workers() -> int:
    """Decoding threads for ``classify``: the cores this process may use, at most 4 (inference
    shares them, and beyond 4 the single inference thread becomes the limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


class ClassifySummary(Tally):
    """What a run did, for the summary table and for tests."""

    out: str
    model: str
    wall_s: float = 0.0
    warnings: list[str] = Field(default_factory=list)

    @property
    def speed(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_s / self.wall_s if self.wall_s else 0.0


def run_classify(
    *,
    inputs: Sequence[str],
    out: str,
    model: str | None = None,
    csv: bool = False,
    channels: str = "mix",
    silence: Mapping[str, float] | None = None,
    endpoint_url: str | None = None,
    batch_windows: int = 1024,
    engine: str = "auto",
    workers: int | None = None,
    console: Console | None = None,
) -> ClassifySummary:
    """Classify ``inputs`` and write the result tables to ``out``.

    Raises :class:`~audioclf_core.errors.AudioClfError` for problems with the
    request itself (no inputs, bad parameters, bad bundle, unwritable output);
    problems with single recordings become error rows. ``workers`` recordings are decoded
    at once (default: :func:`default_workers`).
    """
    start = time.perf_counter()
    if not inputs:
        raise ParameterError("no inputs: give files, folders, globs or URLs to classify")
    options = storage_options_for(endpoint_url=endpoint_url)
    bundle = load_bundle(model or DEFAULT_MODEL, storage_options=options)
    params = bundle.manifest.silence.replace(**(silence or {}))
    if channels not in ("mix", "split"):
        raise ParameterError(f"--channels {channels!r}: use 'mix' or 'split'")
    warn = (lambda line: print_warnings(console, [line])) if console is not None else None
    # Checks its own arguments (engine, batch size) and loads the model only when first used.
    clf = Classifier(bundle, silence=params, channels=channels, batch_windows=batch_windows, storage_options=options,
                     engine=engine, warn=warn, workers=default_workers() if workers is None else workers)
    uris, warnings = expand_inputs(inputs, storage_options=options)
    if not uris:
        raise ParameterError("no recordings found in " + ", ".join(repr(i) for i in inputs))
    store = ResultStore(out, storage_options=options)
    store.check_writable(bundle.labels)  # the last check: it makes a local OUT
    summary = ClassifySummary(out=store.out, model=f"{bundle.name} {bundle.version}", warnings=list(warnings))
    if console is not None:
        print_warnings(console, warnings)
        if not bundle.manifest.trained:
            print_warnings(console, [f"model {bundle.name!r} is untrained: its labels are placeholders"])

    progress = _progress(console)
    with progress:
        task = progress.add_task("classifying", total=len(uris))
        batch: list[RecordingOutcome] = []
        for outcome in clf.classify(uris):
            batch.append(outcome)
            summary.add(outcome, bundle.labels)
            progress.update(task, advance=1, description=_short(outcome.recording))
            if len(batch) >= PART_RECORDINGS:
                _write(store, clf, batch)
                batch = []
        if batch:
            _write(store, clf, batch)
    store.update_csv(asked=csv)
    summary.wall_s = time.perf_counter() - start
    if console is not None:
        _print_summary(console, summary)
    return summary


def _write(store: ResultStore, clf: Classifier, batch: Iterable[RecordingOutcome]) -> None:
    segments, recordings = clf.tables(batch)
    store.write(segments, recordings, labels=clf.bundle.labels)


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description:<40.40}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console or Console(quiet=True), transient=True, disable=console is None,
    )


def _short(uri: str) -> str:
    return uri if len(uri) <= 40 else "…" + uri[-39:]


def _print_summary(console: Console, s: ClassifySummary) -> None:
    total = sum(s.label_s.values()) or 1.0
    print_summary(console, "audioclf classify", s, [
        ("recordings", f"{s.recordings} ({s.recordings - s.failed} ok, {s.failed} failed)"),
        ("audio", f"{s.audio_s / 3600:.2f} h in {s.wall_s:.1f} s ({s.speed:,.0f}x real time)"),
        ("segments", str(s.segments)),
        *((f"  {escape(lab)}", f"{sec / 60:.1f} min ({100 * sec / total:.0f}%)") for lab, sec in s.label_s.items()),
    ])


def print_summary(console: Console, command: str, s, rows: Iterable[tuple[str, str]]) -> None:
    """A command's summary: a table titled with its output, its model, ``rows`` (markup), then
    the first failures (``s`` holds ``out``, ``model``, ``failures`` and ``failed``)."""
    print_table(console, command, s, rows)
    print_failures(console, s.failures, failed=s.failed, out=s.out)


def print_table(console: Console, command: str, s, rows: Iterable[tuple[str, str]]) -> None:
    """The table of :func:`print_summary` alone (``s`` holds ``out`` and ``model``)."""
    table = Table(title=f"{command} → {escape(s.out)}", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", escape(s.model))
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_warnings(console: Console, lines: Iterable[str]) -> None:
    """Each line as a ``warning:`` (printed as it is, not read as markup)."""
    for line in lines:
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)


def print_failures(console: Console, failures: Sequence[tuple[str, str]], *, failed: int, out: str, shown: int = 10) -> None:
    """The first ``shown`` failures' reasons, then how many more there are and where to find them."""
    for _uri, reason in failures[:shown]:
        console.print(f"[red]failed:[/] {escape(reason)}", soft_wrap=True)
    more = max(failed, len(failures)) - min(len(failures), shown)
    if more > 0:
        console.print(f"[red]… and {more} more failures: see {escape(out.rstrip('/'))}/recordings/ (status = 'error')[/]",
                      soft_wrap=True)
