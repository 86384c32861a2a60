"""``audioclf train``, ``audioclf evaluate`` and ``audioclf models join``: make bundles and measure them.

The commands are thin: they parse options and call :func:`run_train`,
:func:`run_evaluate` and :func:`run_join`, keyword-only functions that tests call too. Domain errors print
one ``error:`` line and exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audioclf_core.errors import AudioClfError, ParameterError

from .console import err, fail


def _print_results(console: Console, metrics: dict, *, heading: str) -> None:
    """One line (accuracy with its 95 % intervals, macro F1), then the per-class table."""
    from audioclf_core.evaluation import format_interval

    ci = metrics.get("accuracy_ci95") or {}
    parts = [f"{format_interval(ci[k])} over {k}" for k in ("segments", "groups") if ci.get(k)]
    console.print(f"{heading}: accuracy {metrics['accuracy']:.4f}" + (f" (95 %: {', '.join(parts)})" if parts else "")
                  + f", macro F1 {metrics['macro_f1']:.4f}", soft_wrap=True)
    table = Table("label", "precision", "recall", "F1", "segments", "ROC-AUC")
    for label, m in metrics["per_class"].items():
        cells = ["–" if m[k] is None else f"{m[k]:.3f}" for k in ("precision", "recall", "f1", "roc_auc")]
        table.add_row(escape(label), *cells[:3], str(m["support"]), cells[3])
    console.print(table)


def run_train(
    *,
    data: str,
    out: str | Path,
    arch: str = "resnet",
    from_bundle: str | None = None,
    freeze_features: bool = False,
    task_preset: str | None = None,
    epochs: int = 30,
    seed: int = 0,
    search: int = 0,
    arch_kwargs: dict | None = None,
    learning_rate: float | None = None,
    batch_size: int = 64,
    patience: int = 6,
    test_groups: list[str] | None = None,
    val_groups: list[str] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    real_repeat: int = 1,
    max_windows: int = 30000,
    time_budget_s: float | None = None,
    name: str | None = None,
    version: str | None = None,
    report: str | Path | None = None,
    workers: int = 2,
    augment: list[str] | None = None,
    features: list[str] | None = None,
    consistency: float = 0.0,
    endpoint_url: str | None = None,
    console: Console | None = None,
):
    """Train (or fine-tune) a bundle and print its held-out figures; returns the :class:`TrainResult`."""
    from audioclf_core.storage import storage_options_for
    from audioclf_core.training import train

    def log(msg: str) -> None:
        if console is not None:
            console.print(msg, soft_wrap=True, markup=False)

    verbose = 0 if console is None else (1 if sys.stderr.isatty() else 2)
    result = train(
        data, out=out, arch=arch, preset=task_preset, from_bundle=from_bundle, freeze_features=freeze_features,
        epochs=epochs, seed=seed, search=search, arch_kwargs=arch_kwargs, learning_rate=learning_rate,
        batch_size=batch_size, patience=patience, test_groups=test_groups or (), val_groups=val_groups or (),
        test_fraction=test_fraction, val_fraction=val_fraction, real_repeat=real_repeat,
        max_windows_per_epoch=max_windows, time_budget_s=time_budget_s, name=name, version=version, report=report,
        verbose=verbose, log=log, workers=workers, augment=augment or (),
        features=features or (), consistency=consistency, storage_options=storage_options_for(endpoint_url=endpoint_url),
    )
    if console is not None:
        b = result.bundle
        console.print(f"[bold]{escape(f'{b.name} {b.version}')}[/] -> {escape(str(b.path))}")
        for cond, metrics in b.manifest.evaluation.get("conditions", {}).items():
            _print_results(console, metrics, heading=f"held out ({cond})")
    return result


def run_evaluate(
    *,
    bundle: str,
    data: str,
    report: str | Path,
    heldout_only: bool = False,
    groups: list[str] | None = None,
    condition: str | list[str] | None = "as-is",
    endpoint_url: str | None = None,
    console: Console | None = None,
):
    """Evaluate a bundle on labelled clips and write a report; returns the :class:`Evaluation` of the first condition.

    ``condition`` may name several conditions (``["as-is", "telephone"]``): the report holds them all, the
    first as the main one. None or an empty list means as-is.
    """
    from audioclf_core.bundle import load_bundle
    from audioclf_core.evaluation import evaluate_bundle, trained_groups, write_report
    from audioclf_core.storage import check_local_folder, storage_options_for
    from audioclf_core.training import _report_context

    conditions = list(dict.fromkeys([condition] if isinstance(condition, str) else condition or ())) or ["as-is"]
    b = load_bundle(bundle)
    check_local_folder(report, what="report folder")

    def log(msg: str) -> None:
        if console is not None:
            console.print(msg, markup=False)

    options = storage_options_for(endpoint_url=endpoint_url)
    evs = {c: evaluate_bundle(b, data, heldout_only=heldout_only, groups=groups or (), condition=c,
                              storage_options=options, log=log)
           for c in conditions}
    context = {**_report_context(b), "evaluated on": f"{data} ({'held-out groups only' if heldout_only else 'all clips'}"
               + (f", groups {groups}" if groups else "") + f"; condition {', '.join(conditions)})"}
    known = trained_groups(b.manifest)
    evaluated = sorted(set(evs[conditions[0]].groups))
    seen = None if known is None else sorted(set(evaluated) & set(known))
    folder = write_report(evs, report, title=f"{b.name} {b.version}: evaluation", context=context, seen=seen)
    if console is not None:
        for c, ev in evs.items():
            _print_results(console, ev.metrics(), heading=f"{ev.n} segments ({c})")
        if seen:
            console.print(f"warning: {len(seen)} of the {len(evaluated)} groups evaluated were in {b.name} "
                          f"{b.version}'s training or validation data ({', '.join(seen[:8])}"
                          f"{', ...' if len(seen) > 8 else ''}): not held-out figures", markup=False)
        console.print(f"report: {folder / 'report.md'}", markup=False)
    return evs[conditions[0]]


def train_command(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Folder of label folders (a sub-folder <label>/<group>/ names a group; its manifest.csv is used if present), or a CSV manifest with path,label[,group[,synthetic]]; a local path or a URL (s3://...).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new bundle; it must not hold one (bundles are never overwritten).")],
    arch: Annotated[str, typer.Option(help="Architecture: resnet, cnn or mlp (ignored with --from).")] = "resnet",
    from_bundle: Annotated[Optional[str], typer.Option("--from", help="Fine-tune this bundle (shipped name, folder or URL); keeps its contract and network and writes a new version to --out.")] = None,
    freeze_features: Annotated[bool, typer.Option("--freeze-features", help="With --from: train only the output layer.")] = False,
    task_preset: Annotated[Optional[str], typer.Option("--task-preset", help="Feature contract, cropping and augmentation of a new bundle: smn (speech/music/noise, the default) or digits. With --from the contract stays the parent's, and cropping and augmentation are the ones the parent was trained with unless a preset is named.", show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping may end sooner).")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the split, the augmentation and the initial weights.")] = 0,
    search: Annotated[int, typer.Option(help="Hyper-parameter trials before the final training, compared on the validation groups: the given configuration and N-1 seeded draws (0: none; at least 2; not with --from).")] = 0,
    width: Annotated[Optional[int], typer.Option(help="Base width of the architecture (filters, or units for mlp; not with --from).")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout before the output layer (not with --from).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate (default 1e-3; 1e-4 with --from).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per training step.")] = 64,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation accuracy before training stops.")] = 6,
    test_group: Annotated[Optional[list[str]], typer.Option("--test-group", help="Hold out this group for the evaluation (repeat the option); default: drawn by seed.")] = None,
    val_group: Annotated[Optional[list[str]], typer.Option("--val-group", help="Hold out this group for early stopping (repeat the option); default: drawn by seed.")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of each label's clips held out for the evaluation (whole groups).")] = 0.2,
    val_fraction: Annotated[float, typer.Option(help="Share held out for early stopping (whole groups).")] = 0.15,
    real_repeat: Annotated[int, typer.Option(help="Draw real (not synthetic) clips this many times per epoch.")] = 1,
    max_windows_per_epoch: Annotated[int, typer.Option("--max-windows", help="Most training windows per epoch.")] = 30000,
    time_budget_min: Annotated[Optional[float], typer.Option(help="Stop training after this many minutes (at an epoch's end).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Bundle name (default: the parent's with --from; the preset's when the data has all its labels; else the data folder's).")] = None,
    version: Annotated[Optional[str], typer.Option(help="Bundle version (default 1.0.0, or the parent's next minor version).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the held-out evaluation report (report.md, plots, tables) here.")] = None,
    workers: Annotated[int, typer.Option(help="Threads that decode and augment training windows while the model trains.")] = 2,
    augment: Annotated[Optional[list[str]], typer.Option("--augment", metavar="NAME=VALUE", help="Change one augmentation parameter of the preset (or, with --from, of the parent's training; repeat the option); NAME=LOW,HIGH for a range, e.g. p_pitch=0.5, pitch=0.7,1.6, p_reverb=0.3, p_telephone=0. Names: audioclf_core.augment.AugmentParams.")] = None,
    feature: Annotated[Optional[list[str]], typer.Option("--feature", metavar="NAME=VALUE", help="Change one feature parameter of a new bundle's contract (repeat the option), e.g. fmin=300 and fmax=3400 for the telephone band only, n_mels=32, kind=mfcc. Not with --from: a fine-tune keeps its parent's contract. Names: audioclf_core.params.FeatureParams.")] = None,
    consistency: Annotated[float, typer.Option(help="Weight of a consistency term (0: off; AugMix uses 12): each training window also goes through a telephone line, and the loss adds this many times the divergence between the two predictions. Twice the network work per step.")] = 0.0,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint for s3:// data.", envvar="AUDIOCLF_S3_ENDPOINT_URL")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> None:
    """Train a bundle on labelled clips (or fine-tune one with --from) and evaluate it on held-out groups."""
    kwargs = {k: v for k, v in (("width", width), ("dropout", dropout)) if v is not None}
    try:
        if time_budget_min is not None and not time_budget_min > 0:
            raise ParameterError(f"--time-budget-min {time_budget_min}: must be a positive number of minutes")
        run_train(
            data=data, out=out, arch=arch, from_bundle=from_bundle, freeze_features=freeze_features,
            task_preset=task_preset, epochs=epochs, seed=seed, search=search, arch_kwargs=kwargs,
            learning_rate=learning_rate, batch_size=batch_size, patience=patience, test_groups=test_group,
            val_groups=val_group, test_fraction=test_fraction, val_fraction=val_fraction, real_repeat=real_repeat, max_windows=max_windows_per_epoch,
            time_budget_s=None if time_budget_min is None else time_budget_min * 60, name=name, version=version,
            report=report, workers=workers, augment=augment, features=feature, consistency=consistency,
            endpoint_url=endpoint_url, console=None if quiet else err,
        )
    except AudioClfError as exc:
        fail(exc, ctx)


def evaluate_command(
    ctx: typer.Context,
    bundle: Annotated[str, typer.Argument(help="Shipped bundle name, bundle folder/archive, or URL.", show_default=False)],
    data: Annotated[str, typer.Argument(help="Labelled clips: a folder of label folders (or with manifest.csv), or a CSV manifest; a local path or a URL (s3://...).", show_default=False)],
    report: Annotated[Path, typer.Option("--report", help="Folder for report.md, confusion.png, roc.png and the tables.")],
    heldout_only: Annotated[bool, typer.Option("--heldout-only", help="Only the groups the bundle's manifest lists as held out.")] = False,
    group: Annotated[Optional[list[str]], typer.Option("--group", help="Only this group (repeat the option).")] = None,
    condition: Annotated[Optional[list[str]], typer.Option(help="'as-is', or 'telephone' (300-3400 Hz band-pass and mu-law first); repeat it for both in one report (the first is the main one). Default: as-is.", show_default=False)] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint for s3:// data.", envvar="AUDIOCLF_S3_ENDPOINT_URL")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
) -> None:
    """Evaluate a bundle on labelled clips: accuracy, per-class P/R/F1, ROC-AUC, confusion matrix, report."""
    try:
        run_evaluate(bundle=bundle, data=data, report=report, heldout_only=heldout_only, groups=group,
                     condition=condition, endpoint_url=endpoint_url, console=None if quiet else err)
    except AudioClfError as exc:
        fail(exc, ctx)


JOIN_MEANS = ("weights", "probabilities")


def run_join(
    *,
    bundles: list[str],
    data: str,
    out: str | Path,
    version: str,
    mean: str = "weights",
    name: str | None = None,
    report: str | Path | None = None,
    console: Console | None = None,
):
    """Join several runs of one recipe into one bundle (:func:`~audioclf_core.training.soup` for
    ``mean="weights"``, :func:`~audioclf_core.training.ensemble` for ``"probabilities"``); returns it."""
    from audioclf_core.training import ensemble, soup

    if mean not in JOIN_MEANS:
        raise ParameterError(f"--mean {mean!r}: use weights (fine-tunes of one parent) or probabilities (any runs)")

    def log(msg: str) -> None:
        if console is not None:
            console.print(msg, markup=False)

    join = soup if mean == "weights" else ensemble
    bundle = join(bundles, data, out=out, version=version, name=name, report=report, log=log)
    if console is not None:
        ev = bundle.manifest.evaluation
        for cond, metrics in ev["conditions"].items():
            _print_results(console, metrics, heading=f"held out ({cond})")
        if ev.get("validation"):
            console.print(f"validation: accuracy {ev['validation']['accuracy']:.4f} on {ev['validation']['segments']} segments")
    return bundle


def join_command(
    ctx: typer.Context,
    bundles: Annotated[list[str], typer.Argument(help="Two or more bundles (folders, archives or URLs): runs of one recipe on one split.", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="The labelled clips they were trained on, to measure the result on their held-out groups.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new bundle; it must not hold one (bundles are never overwritten).")],
    version: Annotated[str, typer.Option(help="Version of the new bundle.")],
    mean: Annotated[str, typer.Option(help="weights: one model whose weights are the members' mean (fine-tunes of one parent; one model's size and speed). probabilities: one model that averages the members' outputs (any runs; each adds its size and time).")] = "weights",
    name: Annotated[Optional[str], typer.Option(help="Bundle name (default: the first member's).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the held-out evaluation report here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> None:
    """Join runs that differ only in their seed into one bundle, measured on their held-out groups."""
    try:
        run_join(bundles=bundles, data=data, out=out, version=version, mean=mean, name=name, report=report,
                 console=None if quiet else err)
    except AudioClfError as exc:
        fail(exc, ctx)
