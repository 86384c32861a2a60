"""``audioclf models``: what bundles there are and what they promise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from audioclf_core.bundle import DEFAULT_MODEL, MANIFEST, load_bundle, shipped_bundles
from audioclf_core.errors import AudioClfError, ParameterError


def find_bundles(folders: Sequence[str | Path]) -> list[Path]:
    """Bundle folders (those holding a manifest) in ``folders``: each folder itself, its
    sub-folders and theirs (two levels, enough for ``runs/<name>/<version>``).

    Raises
    ------
    ParameterError
        If a folder does not exist.
    """
    found: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise ParameterError(f"{folder} is a file; give folders to look for bundles in" if folder.exists()
                                 else f"{folder}: no such folder to look for bundles in")
        for pattern in (MANIFEST, f"*/{MANIFEST}", f"*/*/{MANIFEST}"):
            found += sorted(m.parent for m in folder.glob(pattern))
    return list(dict.fromkeys(found))


def heldout_cell(evaluation: dict) -> str:
    """``94.8 % (19 groups)``: the recorded as-is held-out figure, or ``–``."""
    from audioclf_core.evaluation import group_counts  # scipy.stats: not for every command's start-up

    m = (evaluation.get("conditions") or {}).get("as-is") or {}
    per_group = m.get("per_group") or {}
    if m.get("accuracy") is None or not per_group:
        return "–"
    correct, segments = group_counts(per_group)  # from counts: 45/57 is 78.9 %, not round(0.7895, 3)
    return f"{100 * correct.sum() / segments.sum():.1f} % ({len(per_group)} groups)"


def _labels_cell(labels: Sequence[str]) -> str:
    return ", ".join(labels) if len(labels) <= 3 else f"{labels[0]} … {labels[-1]} ({len(labels)})"


def list_models(*, console: Console, folders: Sequence[str | Path] = (), warn: Console | None = None) -> None:
    """Print one line per shipped bundle, then per bundle found in ``folders``.

    A folder whose manifest cannot be read gets one warning line (on ``warn``) and is skipped.
    """
    table = Table("name", "version", "labels", "held out", "where")
    for i in (0, 1, 3):
        table.columns[i].no_wrap = True
    table.columns[4].overflow = "fold"  # a local bundle's path names it: never cut it short
    refs: list[tuple[str | Path, str]] = [(n, "shipped" + (" (default)" if n == DEFAULT_MODEL else "")) for n in shipped_bundles()]
    refs += [(path, str(path)) for path in find_bundles(folders)]
    for ref, where in refs:
        try:
            b = load_bundle(ref)  # hashes checked: list nothing that show and classify refuse
        except AudioClfError as exc:
            if warn is not None:
                reason = str(exc).splitlines()[0]
                reason = reason.removeprefix(f"{where}: ")  # load_bundle's message may start with the path
                warn.print(f"warning: skipped {where}: {reason}", soft_wrap=True, markup=False)
            continue
        m = b.manifest
        table.add_row(*(Text(cell) for cell in (m.name, m.version, _labels_cell(m.labels),
                                             heldout_cell(m.evaluation) if m.trained else "untrained", where)))
    console.print(table)
    console.print("`audioclf models show NAME|FOLDER` gives the contract, the training data and every figure.")


def show_model(ref: str, *, console: Console) -> None:
    """Print a bundle's manifest, verified against its weights: their hash, and the window
    shape and number of outputs the manifest promises (classify and evaluate refuse a bundle
    whose model does not fit its manifest, so ``show`` must not pass it)."""
    b = load_bundle(ref)
    b.model  # loads the weights and checks them against the manifest; raises BundleError
    console.print(f"[bold]{escape(b.name)}[/] {escape(b.version)}  ({escape(str(b.path))})")
    console.print(f"input window: {b.input_shape[0]} frames x {b.input_shape[1]} features")
    for line in heldout_lines(b.manifest.evaluation):
        console.print(line, soft_wrap=True, markup=False)
    console.print(json.dumps(b.manifest.model_dump(mode="json"), indent=2), soft_wrap=True, markup=False)


def heldout_lines(evaluation: dict) -> list[str]:
    """One line per recorded condition: held-out accuracy with its 95 % intervals.

    The intervals are computed from the recorded per-group counts, so bundles whose manifests
    predate them get them too.
    """
    from audioclf_core.evaluation import accuracy_intervals, format_interval

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
