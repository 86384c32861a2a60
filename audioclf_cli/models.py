"""``audioclf models``: what bundles there are and what they promise."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from audioclf_core.bundle import DEFAULT_MODEL, load_bundle, shipped_bundles
from audioclf_core.evaluation import accuracy_intervals, format_interval


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
    for line in heldout_lines(b.manifest.evaluation):
        console.print(line, soft_wrap=True)
    console.print(json.dumps(b.manifest.model_dump(mode="json"), indent=2), soft_wrap=True)


def heldout_lines(evaluation: dict) -> list[str]:
    """One line per recorded condition: held-out accuracy with its 95 % intervals.

    The intervals are computed from the recorded per-group counts, so bundles whose manifests
    predate them get them too.
    """
    lines = []
    for cond, m in (evaluation.get("conditions") or {}).items():
        per_group = m.get("per_group") or {}
        if m.get("accuracy") is None or not per_group:
            continue
        ci = accuracy_intervals(per_group)
        lines.append(f"held out ({cond}): accuracy {m['accuracy']:.3f} on {m['segments']} segments, "
                     f"{len(per_group)} groups; 95 % interval {format_interval(ci['segments'])} over segments, "
                     f"{format_interval(ci['groups'])} over groups")
    return lines
