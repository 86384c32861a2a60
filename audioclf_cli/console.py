"""What the command lines (``audioclf`` and ``audioclf-live``) share: how they fail (one
``error:`` line on stderr and exit 1) and how they read the segmenter's options."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from audioclf_core.errors import ParameterError
from audioclf_core.params import SilenceParams, given

err = Console(stderr=True, highlight=False)
EXIT_ERROR = 1  # the command could not do its job


def fail(exc: Exception, ctx: typer.Context | None = None) -> NoReturn:
    """Print ``exc`` as one ``error:`` line and exit 1. A bad argument is called by the option of
    ``ctx``'s command that gives it: ``--max-windows 0: must be at least 1``, not
    ``max_windows_per_epoch=0: ...``."""
    line = exc.naming(option_names(ctx)) if isinstance(exc, ParameterError) else str(exc)
    err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def option_names(ctx: typer.Context | None) -> dict[str, str]:
    """A command's options by the name of the argument each gives: ``{"max_windows_per_epoch": "--max-windows"}``."""
    if ctx is None:
        return {}
    return {p.name: p.opts[0] for p in ctx.command.params if p.name and p.opts and p.opts[0].startswith("-")}


def silence_options(ctx: typer.Context) -> dict[str, float]:
    """The segmenter options the user gave (``--min-silence-ms`` and the others that share a
    :class:`~audioclf_core.params.SilenceParams` field's name), for ``SilenceParams.replace``."""
    return given(**{name: ctx.params.get(name) for name in SilenceParams.model_fields})
