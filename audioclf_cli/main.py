"""``audioclf``: classify recordings from the shell, without the orchestrator.

Commands are thin: they parse options and call keyword-only functions that
tests call too. Domain errors print one line and exit non-zero.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from audioclf_core.errors import AudioClfError

from .classify import ClassifySummary, run_classify
from .console import err, fail, silence_options
from .models import list_models, show_model
from .train import evaluate_command, join_command, train_command

app = typer.Typer(
    name="audioclf",
    help="Classify audio recordings (speech / music / noise, digits, your own models) at their silences.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List, inspect and join model bundles.", no_args_is_help=True)
app.add_typer(models_app, name="models")
models_app.command("join")(join_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
EXIT_SOME_FAILED = 3  # it ran, but some recordings became error rows

# How recordings are cut and run through the model: one set of options for classify and run.
MinSilenceMs = Annotated[Optional[float], typer.Option(help="Shortest silence that separates segments (default: the model's).", show_default=False)]
ThresholdDbfs = Annotated[Optional[float], typer.Option(help="Silence threshold, dBFS (default: the model's).", show_default=False)]
ThresholdRelDb = Annotated[Optional[float], typer.Option(help="Also treat as silence what is this many dB below the recording's running level (e.g. -25).", show_default=False)]
KeepSilenceMs = Annotated[Optional[float], typer.Option(help="Silence kept on each side of a segment (default: the model's).", show_default=False)]
MinSegmentMs = Annotated[Optional[float], typer.Option(help="Drop segments shorter than this (default: the model's).", show_default=False)]
MaxSegmentS = Annotated[Optional[float], typer.Option(help="Cut longer sounds into pieces of this length (default: the model's).", show_default=False)]
Engine = Annotated[str, typer.Option(help="Inference engine: 'litert' (no TensorFlow), 'keras', or 'auto' (LiteRT when the model converts).")]


@app.command()
def classify(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Files, folders (recursive), globs or fsspec URLs (s3://bucket/prefix/, file://, memory://; zip://calls::s3://bucket/a.zip for recordings inside an archive).", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder or URL for segments/ and recordings/.", envvar="AUDIOCLF_OUT")],
    model: Annotated[str, typer.Option(help="Shipped bundle name, bundle folder/archive, or URL.", envvar="AUDIOCLF_MODEL")] = "",
    csv: Annotated[bool, typer.Option("--csv", help="Also write segments.csv and recordings.csv; once there, every later write to this output keeps them current.")] = False,
    channels: Annotated[str, typer.Option(help="'mix' to mono, or 'split' to classify each channel on its own.")] = "mix",
    min_silence_ms: MinSilenceMs = None,
    threshold_dbfs: ThresholdDbfs = None,
    threshold_rel_db: ThresholdRelDb = None,
    keep_silence_ms: KeepSilenceMs = None,
    min_segment_ms: MinSegmentMs = None,
    max_segment_s: MaxSegmentS = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint for s3:// inputs and outputs.", envvar="AUDIOCLF_S3_ENDPOINT_URL")] = None,
    batch_windows: Annotated[int, typer.Option(help="Model windows per inference batch.")] = 1024,
    engine: Engine = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Recordings decoded at once, each in a thread (default: the cores, at most 4).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Classify recordings and write one row per segment and one per recording."""
    try:
        summary: ClassifySummary = run_classify(
            inputs=inputs, out=out, model=model or None, csv=csv, channels=channels, silence=silence_options(ctx),
            endpoint_url=endpoint_url, batch_windows=batch_windows, engine=engine, workers=workers,
            console=None if quiet else err,
        )
    except AudioClfError as exc:
        fail(exc, ctx)
    if summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command()
def run(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help="Folders, prefixes or URLs (s3://calls/2026/11/, zip://::s3://calls/2026-11.zip); several make a backfill.", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder or URL.", envvar="AUDIOCLF_OUT")],
    model: Annotated[str, typer.Option(help="Shipped bundle name, bundle folder/archive, or URL.", envvar="AUDIOCLF_MODEL")] = "",
    csv: Annotated[bool, typer.Option("--csv", help="Also write segments.csv and recordings.csv; once there, every later write to this output keeps them current.")] = False,
    channels: Annotated[str, typer.Option(help="'mix' or 'split'.")] = "mix",
    pattern: Annotated[Optional[str], typer.Option(help="Glob on the path below each source: * stays within a folder, ** spans folders, e.g. '*/agent-*.wav', '**/agent-*.wav'.")] = None,
    modified_since: Annotated[Optional[datetime], typer.Option(help="Only recordings modified since (UTC unless a zone is given).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel tasks (threads, or Dask worker processes).")] = 2,
    recordings_per_task: Annotated[int, typer.Option(help="Upper bound on recordings per task.")] = 25,
    dask: Annotated[bool, typer.Option("--dask", help="Run the tasks on Dask (a local cluster unless --dask-address).")] = False,
    dask_address: Annotated[Optional[str], typer.Option(help="An existing Dask scheduler, e.g. tcp://10.0.0.5:8786.")] = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Classify again recordings that ended as error rows.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what the run would do (recordings listed, already done, to classify; tasks) without a flow run; nothing is classified or written.")] = False,
    min_silence_ms: MinSilenceMs = None,
    threshold_dbfs: ThresholdDbfs = None,
    threshold_rel_db: ThresholdRelDb = None,
    keep_silence_ms: KeepSilenceMs = None,
    min_segment_ms: MinSegmentMs = None,
    max_segment_s: MaxSegmentS = None,
    engine: Engine = "auto",
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint.", envvar="AUDIOCLF_S3_ENDPOINT_URL")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
) -> None:
    """Classify an archive as a Prefect flow run (retries, artifacts, skips what is done)."""
    from .run import run_flow

    options = dict(csv=csv, channels=channels, pattern=pattern, modified_since=modified_since, workers=workers,
                   recordings_per_task=recordings_per_task, dask=dask or bool(dask_address), dask_address=dask_address,
                   retry_errors=retry_errors, endpoint_url=endpoint_url, engine=engine, silence=silence_options(ctx))
    try:
        summary = run_flow(sources=sources, out=out, model=model or None, options=options, console=None if quiet else err,
                           dry_run=dry_run)
    except AudioClfError as exc:
        fail(exc, ctx)
    except Exception as exc:  # the flow run failed (after retries): one line, the run's own logs say more
        fail(RuntimeError(f"flow run failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))
    if not dry_run and summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


@models_app.command("list")
def models_list(
    folders: Annotated[Optional[list[Path]], typer.Argument(
        help="Folders to look for local bundles in (each folder, its sub-folders and theirs).", show_default=False)] = None,
) -> None:
    """List the shipped model bundles and those in FOLDERS, with their recorded held-out accuracy."""
    try:
        list_models(console=Console(highlight=False), folders=folders or (), warn=err)
    except AudioClfError as exc:
        fail(exc)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="Shipped bundle name, bundle folder/archive, or URL.")]) -> None:
    """Show a bundle's labels, contract, provenance and evaluation."""
    try:
        show_model(name, console=Console(highlight=False))
    except AudioClfError as exc:
        fail(exc)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
