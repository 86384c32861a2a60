"""``audioclf models``: what bundles there are and what they promise."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from audioclf_core.bundle import DEFAULT_MODEL, load_bundle, shipped_bundles


def list_models(*, console: Console) -> None:
    """Print one line per shipped bundle."""
    table = Table("name", "version", "labels", "trained", "rate", "window / hop", "default")
    table.columns[0].no_wrap = True
    for name in shipped_bundles():
        b = load_bundle(name, verify=False)
        m = b.manifest
        table.add_row(
            name, m.version, ", ".join(m.labels), "yes" if m.trained else "NO", f"{m.sample_rate} Hz",
            f"{m.window_s:g} s / {m.hop_s:g} s", "*" if name == DEFAULT_MODEL else "",
        )
    console.print(table)


def show_model(ref: str, *, console: Console) -> None:
    """Print a bundle's manifest, verified against its weights."""
    b = load_bundle(ref)
    console.print(f"[bold]{b.name}[/] {b.version}  ({b.path})")
    console.print(f"input window: {b.input_shape[0]} frames x {b.input_shape[1]} features")
    console.print(json.dumps(b.manifest.model_dump(mode="json"), indent=2), soft_wrap=True)
