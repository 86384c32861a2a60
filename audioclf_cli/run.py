"""``audioclf run``: an archive flow run from the shell.

Prefect is imported here only, so that ``audioclf classify`` never pays for it.
Without ``PREFECT_API_URL`` the run uses Prefect's ephemeral API; with it, the
run is recorded on that server and shows in its UI.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.markup import escape

from .classify import print_summary, print_table, print_warnings


def prefect_defaults() -> None:
    """Settings that make a local run work out of the box (the user's own win)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The ephemeral server's own telemetry service ignores DO_NOT_TRACK and logs an
    # ERROR when it cannot reach its host (no network on many archive machines).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh PREFECT_HOME needs ~21 s to start the ephemeral API: over Prefect's 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def run_flow(
    *, sources: Sequence[str], out: str, model: str | None, options: Mapping[str, Any], console: Console | None,
    dry_run: bool = False,
):
    """Run ``classify-archive`` (one source) or ``backfill`` (several) and return its summary; with
    ``dry_run``, return (and print) what the run would do instead, without a flow run."""
    prefect_defaults()
    from pydantic import ValidationError

    from audioclf_core.params import invalid
    from flows.archive import ArchiveOptions, backfill, classify_archive, plan_run, preflight

    try:
        opts = ArchiveOptions(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise invalid("run options", exc) from None
    if dry_run:
        plan = plan_run(list(sources), out, model=model, options=opts)
        if console is not None:
            _print_plan(console, plan)
        return plan
    preflight(list(sources), out, model=model, options=opts)  # a mistake costs no flow run
    if len(sources) == 1:
        summary = classify_archive(sources[0], out, model=model, options=opts)
    else:
        summary = backfill(out, sources=list(sources), model=model, options=opts)
    if console is not None:
        _print(console, summary)
    return summary


def _print(console: Console, s) -> None:
    print_summary(console, "audioclf run", s, [
        ("recordings", f"{s.listed} listed, {s.skipped} already done, {s.processed} classified, {s.failed} failed"),
        ("tasks", f"{s.batches}"),
        ("audio", f"{s.audio_s / 3600:.2f} h in {s.wall_s:.1f} s ({s.throughput:,.0f}x real time)"),
        *((f"  {escape(lab)}", f"{sec / 60:.1f} min, {s.label_segments.get(lab, 0)} segments") for lab, sec in s.label_s.items()),
    ])
    print_warnings(console, s.warnings)


def _print_plan(console: Console, p) -> None:
    print_table(console, "audioclf run --dry-run", p, [
        ("recordings", f"{p.listed} listed, {p.skipped} already done, {p.to_classify} to classify "
                       f"({p.bytes_to_classify / 1e6:,.1f} MB)"),
        ("tasks", f"{p.tasks} (up to {p.per_task} recording{'s' if p.per_task != 1 else ''} each)" if p.tasks else "none"),
    ])
    print_warnings(console, p.warnings)
    console.print("nothing was classified or written (--dry-run)")

