"""``audioclf-live``: the microphone sidecar's command line.

Commands are thin: they parse options and call keyword-only functions
(:func:`live.session.run_live`, :func:`live.devices.list_input_devices`) that
tests call too. Domain errors print one ``error:`` line and exit 1, as ``audioclf``'s do
(:mod:`audioclf_cli.console`, which both command lines share). Prefect is
never imported; TensorFlow only when the Keras engine runs or a bundle is
exported to LiteRT for the first time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audioclf_cli.console import err, silence_options
from audioclf_cli.console import fail as _fail
from audioclf_core.errors import AudioClfError

app = typer.Typer(
    name="audioclf-live",
    help="Classify what an input device hears, segment by segment, as it happens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def devices() -> None:
    """List input devices: index, name, host API, channels and native rate; * marks the default."""
    from .devices import list_input_devices

    try:
        found = list_input_devices()
    except AudioClfError as exc:
        _fail(exc)
    if not found:
        _fail(RuntimeError("no input device: PortAudio finds none (no sound card, and no PulseAudio/PipeWire server reachable)"))
    table = Table(show_edge=False, box=None)
    for col, justify in (("", "left"), ("index", "right"), ("name", "left"), ("host API", "left"),
                         ("inputs", "right"), ("native rate", "right")):
        table.add_column(col, justify=justify)
    for d in found:
        table.add_row("*" if d.is_default else "", str(d.index), escape(d.name), escape(d.hostapi), str(d.max_channels), f"{d.native_rate} Hz")
    Console(highlight=False).print(table)


@app.command()
def run(
    ctx: typer.Context,
    device: Annotated[Optional[str], typer.Option("--device", "-d", help="Input device index or name (or a unique part of it); default: the system's default input.", envvar="AUDIOCLF_LIVE_DEVICE")] = None,
    replay: Annotated[Optional[str], typer.Option(help="Feed a recording (file or URL) through the same path instead of a device.", show_default=False)] = None,
    realtime: Annotated[bool, typer.Option("--realtime/--fast", help="With --replay: pace blocks at the recording's rate, or feed them as fast as they are processed.")] = True,
    model: Annotated[str, typer.Option(help="Shipped bundle name, bundle folder/archive, or URL.", envvar="AUDIOCLF_MODEL")] = "",
    jsonl: Annotated[Optional[Path], typer.Option(help="Append one JSON event per segment to this file.", envvar="AUDIOCLF_LIVE_JSONL", show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Also write segments/ and recordings/ rows here (folder or URL), as `audioclf classify` does.", envvar="AUDIOCLF_LIVE_OUT", show_default=False)] = None,
    flush_s: Annotated[float, typer.Option(help="Seconds between writes of --out (and one more at exit).")] = 60.0,
    samplerate: Annotated[Optional[int], typer.Option(help="Open the device at this rate, Hz (default: its native rate).", show_default=False)] = None,
    channels: Annotated[Optional[int], typer.Option(help="Open this many device channels, mixed by their mean (default: the device's, at most 2).", show_default=False)] = None,
    blocksize: Annotated[Optional[int], typer.Option(help="Frames per block (default: 20 ms; 0 lets PortAudio choose).", show_default=False)] = None,
    engine: Annotated[str, typer.Option(help="Inference engine: 'litert' (exported once, cached), 'keras' (traced call), or 'auto'.")] = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache for the LiteRT export (default: ~/.cache/audioclf).", envvar="AUDIOCLF_CACHE_DIR", show_default=False)] = None,
    min_silence_ms: Annotated[Optional[float], typer.Option(help="Shortest silence that separates segments (default: the model's).", show_default=False)] = None,
    threshold_dbfs: Annotated[Optional[float], typer.Option(help="Silence threshold, dBFS (default: the model's).", show_default=False)] = None,
    threshold_rel_db: Annotated[Optional[float], typer.Option(help="Also treat as silence what is this many dB below the running level (e.g. -25).", show_default=False)] = None,
    keep_silence_ms: Annotated[Optional[float], typer.Option(help="Silence kept on each side of a segment.", show_default=False)] = None,
    min_segment_ms: Annotated[Optional[float], typer.Option(help="Drop segments shorter than this.", show_default=False)] = None,
    max_segment_s: Annotated[Optional[float], typer.Option(help="Report longer sounds in pieces of this length.", show_default=False)] = None,
    duration_s: Annotated[Optional[float], typer.Option("--duration", help="Stop after this many seconds of audio.", show_default=False)] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint for s3:// models, replays and outputs.", envvar="AUDIOCLF_S3_ENDPOINT_URL", show_default=False)] = None,
    summary_json: Annotated[Optional[Path], typer.Option(help="Write the session summary (counters, latencies) here as JSON at exit.", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live view (the start and end lines still show).")] = False,
) -> None:
    """Listen to an input device (or replay a recording) and classify each sound as it ends.

    Ctrl-C or SIGTERM stops cleanly: the sound in progress is classified and
    everything heard is written, with exit code 0.
    """
    from audioclf_core.storage import storage_options_for

    from .session import run_live

    view = None if quiet else Console(highlight=False)
    try:
        summary = run_live(
            device=device, replay=replay, realtime=realtime, model=model or None, jsonl=jsonl, out=out,
            samplerate=samplerate, channels=channels, blocksize=blocksize, engine=engine, cache_dir=cache_dir,
            silence=silence_options(ctx), flush_s=flush_s, duration_s=duration_s, storage_options=storage_options_for(endpoint_url=endpoint_url),
            summary_json=summary_json, view_console=view, log=lambda msg: err.print(msg, soft_wrap=True, markup=False),
        )
    except AudioClfError as exc:
        _fail(exc, ctx)
    except KeyboardInterrupt:  # a third Ctrl-C: the final writes were given up
        err.print("interrupted: stopped before every output was written")
        raise typer.Exit(130) from None
    err.print(summary.line(), soft_wrap=True, markup=False)
    if summary.error:
        _fail(RuntimeError(summary.error))


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app()
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
