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
from rich.table import Table

from audioclf_core.errors import ParameterError

from .classify import print_failures


def prefect_defaults() -> None:
    """Settings that make a local run work out of the box (the user's own win)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The ephemeral server's own telemetry service ignores DO_NOT_TRACK and logs an
    # ERROR when it cannot reach its host (no network on many archive machines).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh PREFECT_HOME needs ~21 s to start the ephemeral API: over Prefect's 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def run_flow(
    *, sources: Sequence[str], out: str, model: str | None, options: Mapping[str, Any], console: Console | None
):
    """Run ``classify-archive`` (one source) or ``backfill`` (several) and return its summary."""
    prefect_defaults()
    from pydantic import ValidationError

    from flows.archive import ArchiveOptions, backfill, classify_archive, preflight

    try:
        opts = ArchiveOptions(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise ParameterError(options_error(exc)) from None
    preflight(list(sources), out, model=model, options=opts)  # a mistake costs no flow run
    if len(sources) == 1:
        summary = classify_archive(sources[0], out, model=model, options=opts)
    else:
        summary = backfill(out, sources=list(sources), model=model, options=opts)
    if console is not None:
        _print(console, summary)
    return summary


def options_error(exc) -> str:
    """A pydantic ``ValidationError`` of the run's options as the options the user typed.

    >>> from flows.archive import ArchiveOptions
    >>> try:
    ...     ArchiveOptions(workers=0)
    ... except Exception as exc:
    ...     print(options_error(exc))
    --workers 0: Input should be greater than or equal to 1
    """
    parts = []
    for e in exc.errors():
        option = "--" + str(e["loc"][0]).replace("_", "-") if e.get("loc") else "options"
        msg = e["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
        parts.append(f"{option} {e['input']!r}: {msg}" if "input" in e else f"{option}: {msg}")
    return "; ".join(parts)


def _print(console: Console, s) -> None:
    table = Table(title=f"audioclf run → {escape(s.out)}", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", escape(s.model))
    table.add_row("recordings", f"{s.listed} listed, {s.skipped} already done, {s.processed} classified, {s.failed} failed")
    table.add_row("tasks", f"{s.batches}")
    table.add_row("audio", f"{s.audio_s / 3600:.2f} h in {s.wall_s:.1f} s ({s.throughput:,.0f}x real time)")
    for lab, sec in s.label_s.items():
        table.add_row(f"  {escape(lab)}", f"{sec / 60:.1f} min, {s.label_segments.get(lab, 0)} segments")
    console.print(table)
    print_failures(console, s.failures, failed=s.failed, out=s.out)
