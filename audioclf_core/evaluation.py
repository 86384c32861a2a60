"""Held-out evaluation of a window classifier: metrics, tables, plots and a one-page report.

The unit is the *segment*: a clip, or each sound of a clip longer than a segment can be (cut at
its silences by :func:`audioclf_core.labelled.cut_recordings`), is cut into the bundle's windows by
:meth:`FeatureExtractor.windows` and its windows' probabilities are pooled as the bundle's
manifest says (:func:`audioclf_core.pipeline.pool_windows`), exactly as
:class:`audioclf_core.pipeline.Classifier` scores a segment. Metrics are computed here with
numpy (accuracy, per-class precision / recall / F1, macro F1, one-vs-rest ROC-AUC, the
confusion matrix); plots use matplotlib's Agg backend, imported only when a report is written.

Accuracy comes with two 95 % intervals. Over segments (Wilson score interval): how far the
figure could move with other clips from the same groups. Over groups (percentile bootstrap
that resamples whole held-out groups): how far it could move with other voices or packages,
which is the question a held-out figure answers; with few groups it is wide, and it should be.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .augment import telephone
from .bundle import Bundle, load_bundle
from .errors import ParameterError
from .features import FeatureExtractor
from .labelled import cut_recordings, decoded, load_clips, load_table
from .params import SilenceParams
from .pipeline import pooled_window_probs
from .storage import check_local_folder

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------
# Metrics on arrays
# --------------------------------------------------------------------------------------
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, n_labels: int) -> np.ndarray:
    """Counts, int64 shape ``(n_labels, n_labels)``: rows are true labels, columns predictions."""
    cm = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    actual = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC-AUC per class (Mann-Whitney, ties averaged); NaN without both classes."""
    y_true = np.asarray(y_true, int)
    out = np.full(probs.shape[1], np.nan)
    for j in range(probs.shape[1]):
        pos = y_true == j
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos and n_neg:
            ranks = rankdata(probs[:, j])
            out[j] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over every threshold (for plotting)."""
    order = np.argsort(-scores, kind="stable")
    pos = positive[order].astype(float)
    tpr = np.concatenate([[0.0], np.cumsum(pos) / max(pos.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - pos) / max((1 - pos).sum(), 1)])
    return fpr, tpr


def wilson_interval(correct: int, n: int, *, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score interval for ``correct`` successes in ``n`` trials (95 % by default); None if ``n`` is 0."""
    if n <= 0:
        return None
    if not 0 <= correct <= n:
        raise ParameterError(f"{correct} correct out of {n} is not a proportion")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def group_bootstrap_interval(
    correct: Sequence[int] | np.ndarray, segments: Sequence[int] | np.ndarray, *, level: float = 0.95,
    resamples: int = 4000, seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of pooled accuracy, resampling whole groups.

    Parameters
    ----------
    correct, segments : sequence of int
        Per group: segments right, and segments in all.
    level : float
        Coverage of the interval.
    resamples, seed : int
        Bootstrap draws, seeded so that a report says the same every time.

    Returns
    -------
    (low, high) or None
        None with fewer than two groups (nothing to resample).
    """
    correct, segments = np.asarray(correct, float), np.asarray(segments, float)
    if correct.shape != segments.shape or correct.ndim != 1:
        raise ParameterError("correct and segments need one value per group each")
    keep = segments > 0
    correct, segments = correct[keep], segments[keep]
    if correct.size < 2:
        return None
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, correct.size, size=(resamples, correct.size))
    acc = correct[draw].sum(axis=1) / segments[draw].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(acc, [tail, 100 - tail])
    return float(low), float(high)


def group_counts(per_group: Mapping[str, Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Segments right and segments in all, per group, from a ``per_group`` record (``segments``
    and ``accuracy`` per group: what a bundle's manifest and ``metrics.json`` keep)."""
    segments = np.array([int(g["segments"]) for g in per_group.values()], dtype=np.int64)
    correct = np.array([int(round(float(g["accuracy"]) * int(g["segments"]))) for g in per_group.values()], dtype=np.int64)
    return correct, segments


def count_intervals(correct: np.ndarray, segments: np.ndarray) -> dict[str, tuple[float, float] | None]:
    """Both 95 % intervals of pooled accuracy from per-group counts: ``segments`` (Wilson, over
    all segments) and ``groups`` (bootstrap over whole groups)."""
    return {"segments": wilson_interval(int(np.sum(correct)), int(np.sum(segments))),
            "groups": group_bootstrap_interval(correct, segments)}


def accuracy_intervals(per_group: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, float] | None]:
    """Both 95 % intervals from a ``per_group`` record, so the intervals of a figure recorded
    before they were reported can be computed again from the record."""
    return count_intervals(*group_counts(per_group))


@dataclass
class Evaluation:
    """Segment-level predictions with their truth, and everything derived from them.

    Attributes
    ----------
    labels : tuple of str
        The model's labels, in output order.
    y_true : np.ndarray
        int, shape ``(n,)``: index of each segment's true label.
    probs : np.ndarray
        float32, shape ``(n, len(labels))``: pooled window probabilities per segment.
    files, groups : list of str
        Where each segment came from.
    spans : np.ndarray or None
        float, shape ``(n, 2)``: each segment's start and end in its file, seconds (a long
        labelled recording gives several segments; see
        :func:`audioclf_core.labelled.cut_recordings`).
    left_out : list of LeftOut
        Each clip of the data that was not scored: it did not decode, or holds no sound
        classification would make a segment of.
    """

    labels: tuple[str, ...]
    y_true: np.ndarray
    probs: np.ndarray
    files: list[str]
    groups: list[str]
    spans: np.ndarray | None = None
    left_out: list[LeftOut] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.y_true)

    @property
    def was_cut(self) -> bool:
        """Whether some file gave several segments (different spans of it); a file listed twice
        with the same span was not cut."""
        if self.spans is None:
            return False
        return len({(f, *s) for f, s in zip(self.files, self.spans.tolist())}) > len(set(self.files))

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1) if self.n else np.zeros(0, int)

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.y_true, self.y_pred, n_labels=len(self.labels))

    @property
    def accuracy(self) -> float:
        return float((self.y_pred == self.y_true).mean()) if self.n else float("nan")

    def accuracy_intervals(self) -> dict[str, tuple[float, float] | None]:
        """95 % intervals of :attr:`accuracy`: over ``segments`` (Wilson) and over ``groups`` (bootstrap)."""
        g = pd.DataFrame({"group": self.groups, "correct": self.y_pred == self.y_true}).groupby("group")["correct"]
        return count_intervals(g.sum().to_numpy(), g.size().to_numpy())

    @property
    def macro_f1(self) -> float:
        cm = self.confusion
        present = cm.sum(axis=1) > 0
        return float(precision_recall_f1(cm)[2][present].mean()) if present.any() else float("nan")

    def per_class(self) -> pd.DataFrame:
        """One row per label: precision, recall, F1, support and one-vs-rest ROC-AUC.

        A label the data has no segment of has no recall or F1 (NaN, as :attr:`macro_f1`
        leaves it out), and no precision either unless something was taken for it.
        """
        cm = self.confusion
        p, r, f = precision_recall_f1(cm)
        support = cm.sum(axis=1)
        r[support == 0] = f[support == 0] = np.nan
        p[(support == 0) & (cm.sum(axis=0) == 0)] = np.nan
        auc = roc_auc_ovr(self.y_true, self.probs)
        return pd.DataFrame({"label": self.labels, "precision": p, "recall": r, "f1": f,
                             "support": support, "roc_auc": auc})

    def per_group(self) -> pd.DataFrame:
        """Accuracy per group (a held-out voice, package or kind)."""
        df = pd.DataFrame({"group": self.groups, "true": [self.labels[i] for i in self.y_true],
                           "correct": self.y_pred == self.y_true})
        g = df.groupby("group")
        return pd.DataFrame({"labels": g["true"].agg(lambda s: ",".join(sorted(set(s)))), "segments": g.size(),
                             "accuracy": g["correct"].mean()}).reset_index()

    def table(self) -> pd.DataFrame:
        """Every segment: file (with start and end, seconds, when known), group, true and predicted
        label, and one probability column per label."""
        df = pd.DataFrame({"file": self.files})
        if self.spans is not None:
            df["start_s"], df["end_s"] = np.round(self.spans[:, 0], 3), np.round(self.spans[:, 1], 3)
        df["group"] = self.groups
        df["true"] = [self.labels[i] for i in self.y_true]
        df["predicted"] = [self.labels[i] for i in self.y_pred]
        for j, lab in enumerate(self.labels):
            df[f"p_{lab}"] = np.round(self.probs[:, j].astype(float), 5)
        return df

    def misclassified(self) -> pd.DataFrame:
        t = self.table()
        return t[t["true"] != t["predicted"]].reset_index(drop=True)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary (what a bundle's manifest records)."""
        pc = self.per_class()
        auc = pc["roc_auc"].to_numpy()

        def num(x, digits=4):
            return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), digits)

        ci = self.accuracy_intervals()
        return {
            "segments": self.n,
            "accuracy": num(self.accuracy),
            # six digits: read back and shown to three (format_interval), as the report shows them, they
            # must not round twice (0.92849 -> 0.9285 -> 0.929 where the report says 0.928)
            "accuracy_ci95": {k: None if v is None else [num(v[0], 6), num(v[1], 6)] for k, v in ci.items()},
            "macro_f1": num(self.macro_f1),
            "macro_roc_auc": num(np.nanmean(auc)) if np.isfinite(auc).any() else None,
            "labels": list(self.labels),
            "per_class": {r.label: {"precision": num(r.precision), "recall": num(r.recall), "f1": num(r.f1),
                                    "support": int(r.support), "roc_auc": num(r.roc_auc)} for r in pc.itertuples()},
            "confusion": self.confusion.tolist(),
            "per_group": {r.group: {"segments": int(r.segments), "accuracy": num(r.accuracy)}
                          for r in self.per_group().itertuples()},
        }


# --------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------
def segment_probs(
    predict: Callable[[np.ndarray], np.ndarray], clips: Sequence[np.ndarray], *, fx: FeatureExtractor, window: int,
    hop: int, n_labels: int, pooling: str = "mean", batch_windows: int = 8192,
) -> np.ndarray:
    """Pooled window probabilities per clip, float32 ``(len(clips), n_labels)``.

    Windows of many clips are gathered into batches of about ``batch_windows``, as the
    pipeline gathers segments, and pooled per clip as the pipeline pools a segment's
    (see :func:`audioclf_core.pipeline.pool_windows`).
    """
    out = np.zeros((len(clips), n_labels), dtype=np.float32)
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []
    size = 0

    def flush() -> None:
        nonlocal pending, size
        if not pending:
            return
        pooled = pooled_window_probs(predict, [w for _, w, _ in pending], [pw for _, _, pw in pending], pooling=pooling)
        for (i, _, _), p in zip(pending, pooled):
            out[i] = p
        pending, size = [], 0

    for i, y in enumerate(clips):
        w = fx.windows(y, window=window, hop=hop)
        pending.append((i, w, fx.window_power(y, window=window, hop=hop)))
        size += len(w)
        if size >= batch_windows:
            flush()
    flush()
    return out


def evaluate_clips(
    model, clips: Sequence[np.ndarray], true_labels: Sequence[str], *, labels: Sequence[str], fx: FeatureExtractor,
    window: int, hop: int, pooling: str = "mean", files: Sequence[str] | None = None,
    groups: Sequence[str] | None = None, spans: np.ndarray | None = None,
) -> Evaluation:
    """Score a Keras model on clips with known labels (see :class:`Evaluation`); a clip's
    windows pool as ``pooling`` says (the bundle's :attr:`Manifest.pooling`)."""
    from .model import Predictor

    labels = tuple(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted(set(true_labels) - set(labels))
    if unknown:
        raise ParameterError(f"labels {unknown} are not among the model's labels {list(labels)}")
    probs = segment_probs(Predictor(model, batch_size=1024), clips, fx=fx, window=window, hop=hop, n_labels=len(labels),
                          pooling=pooling)
    n = len(clips)
    return Evaluation(labels=labels, y_true=np.array([index[t] for t in true_labels], dtype=int), probs=probs,
                      files=list(files) if files is not None else [str(i) for i in range(n)],
                      groups=list(groups) if groups is not None else [""] * n,
                      spans=None if spans is None else np.asarray(spans, dtype=float).reshape(n, 2))


CONDITIONS = ("as-is", "telephone")


def evaluate_bundle(
    bundle: Bundle | str | Path, data, *, heldout_only: bool = False, groups: Sequence[str] = (),
    condition: str = "as-is", storage_options: Mapping[str, Any] | None = None, log: Log | None = None,
) -> Evaluation:
    """Evaluate a bundle on labelled clips.

    Parameters
    ----------
    bundle : Bundle, str or Path
        A loaded bundle or a reference for :func:`load_bundle`.
    data : str, Path or DataFrame
        Clips with labels (see :func:`audioclf_core.labelled.load_table`).
    heldout_only : bool
        Keep only the groups the bundle's manifest lists as held out.
    groups : sequence of str
        Keep only these groups.
    condition : {"as-is", "telephone"}
        Score the clips as they are, or through a fixed telephone channel (300-3400 Hz, mu-law).
    storage_options : mapping, optional
        fsspec options for data behind a URL (an S3 endpoint, credentials).
    """
    if condition not in CONDITIONS:
        raise ParameterError(param="condition", value=condition, reason=f"use one of {', '.join(CONDITIONS)}")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    model = b.model  # a model that does not fit its manifest is the fault to name first
    table = load_table(data, storage_options=storage_options)
    keep = np.ones(len(table), dtype=bool)
    if heldout_only:
        held = set(b.manifest.evaluation.get("heldout_groups", []))
        if not held:
            raise ParameterError(f"bundle {b.name} {b.version} lists no held-out groups")
        keep &= table["group"].isin(held).to_numpy()
    if groups:
        keep &= table["group"].isin(set(groups)).to_numpy()
    if not keep.any():
        asked = ([f"the groups bundle {b.name} {b.version} held out ({_few(sorted(held))})"] if heldout_only else []) + \
                ([f"the groups named ({_few(sorted(set(groups)))})"] if groups else [])
        raise ParameterError(f"no clips of {data} are in {' and in '.join(asked)}; its groups: "
                             f"{_few(sorted(table['group'].unique()))}")
    table = table[keep].reset_index(drop=True)
    unknown = sorted(set(table["label"]) - set(b.labels))
    if unknown:
        raise ParameterError(f"the data has labels {unknown} that bundle {b.name} does not know ({list(b.labels)})")
    paths = table["path"].tolist()
    clips, errors = load_clips(paths, sr=b.sample_rate, log=log, storage_options=storage_options)
    ok = decoded(clips, errors, data=data, log=log)
    table = table[ok].reset_index(drop=True)
    kept = [c for c, k in zip(clips, ok) if k]
    kept, cut, source = cut_recordings(kept, table, sr=b.sample_rate, silence=b.manifest.silence, log=log)
    left_out = not_scored(paths, clips, errors, ok, source, silence=b.manifest.silence)
    clips = kept
    if condition == "telephone":
        clips = [telephone(c, sr=b.sample_rate) for c in clips]
    ev = evaluate_clips(model, clips, cut["label"].tolist(), labels=b.labels, fx=b.features,
                        window=b.window_samples, hop=b.hop_samples, pooling=b.pooling, files=cut["path"].tolist(),
                        groups=cut["group"].tolist(), spans=cut[["start_s", "end_s"]].to_numpy())
    ev.left_out = left_out
    return ev


class LeftOut(NamedTuple):
    """A clip of the data that no figure counts, as ``left_out.csv`` lists it."""

    file: str
    reason: str
    silent: bool = False  # it decoded, but holds no sound classification would make a segment of


def _few(names: Sequence[str], shown: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def not_scored(
    paths: Sequence[str], clips: Sequence[np.ndarray | None], errors: Sequence[str], ok: np.ndarray,
    source: np.ndarray, *, silence: SilenceParams, keep: Sequence[bool] | None = None,
) -> list[LeftOut]:
    """The clips of a table that no figure counts, in its order, for ``left_out.csv``; only the
    rows ``keep`` marks, when it is given.

    ``paths`` are the table's files, ``clips`` and ``errors``
    :func:`~audioclf_core.labelled.load_clips`' for them, ``ok``
    :func:`~audioclf_core.labelled.decoded`'s, and ``source`` what
    :func:`~audioclf_core.labelled.cut_recordings` returned for the decoded rows: a decoded clip
    that no segment comes from holds no sound.
    """
    reasons = iter(errors)  # one per clip that did not decode, in order
    out = {i: LeftOut(paths[i], next(reasons) if c is None else "decoded to no audio")
           for i, (c, k) in enumerate(zip(clips, ok)) if not k}
    scored = set(source.tolist())
    out |= {int(i): LeftOut(paths[i], f"no sound above {silence.threshold_dbfs:g} dBFS: classify finds no segment in it",
                            silent=True)
            for j, i in enumerate(np.flatnonzero(ok)) if j not in scored}
    return [out[i] for i in sorted(out) if keep is None or keep[i]]


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def plot_confusion(ev: Evaluation, path: Path, *, title: str) -> None:
    """Counts in each cell, colour by the share of the true label's segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = ev.confusion
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(ev.labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), ev.labels, rotation=45 if k > 4 else 0)
    ax.set_yticks(range(k), ev.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(ev: Evaluation, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    auc = roc_auc_ovr(ev.y_true, ev.probs)
    for j, lab in enumerate(ev.labels):
        if np.isfinite(auc[j]):
            fpr, tpr = roc_curve(ev.probs[:, j], ev.y_true == j)
            ax.plot(fpr, tpr, lw=1.2, label=f"{lab} ({auc[j]:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2 if len(ev.labels) > 4 else 1, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_interval(ci: tuple[float, float] | None) -> str:
    """``0.912–0.951``, or ``–`` when there is none."""
    return "–" if ci is None else f"{ci[0]:.3f}–{ci[1]:.3f}"


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = [floatfmt.format(v) if isinstance(v, float) and np.isfinite(v) else ("–" if isinstance(v, float) else str(v))
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trained_groups(manifest) -> list[str] | None:
    """Groups a bundle's manifest says it was trained or validated on, sorted; None if it does not say.

    Read from ``provenance.data.split.{train,val}.groups``, as :func:`audioclf_core.training.train`
    records them. A fine-tune lists its own data only, not its parent's.
    """
    split = manifest.provenance.get("data", {}).get("split")
    if not isinstance(split, Mapping):
        return None
    parts = [split.get(k) for k in ("train", "val")]
    if not any(isinstance(part, Mapping) and "groups" in part for part in parts):
        return None
    return sorted({str(g) for part in parts if isinstance(part, Mapping) for g in part.get("groups", [])})


def _heldout_sentence(seen: Sequence[str] | None, n_groups: int) -> str:
    if seen is None:
        return ("The bundle's manifest does not record the groups it was trained on, so whether these groups are "
                "held out is not known.")
    if not seen:
        return "Held-out groups (voices, packages, kinds) were never seen in training."
    shown = _few(seen, 20)
    return (f"**Not all held out:** {len(seen)} of the {n_groups} groups evaluated here are in the training or "
            f"validation split that the bundle's manifest records ({shown}); for those, the figures say how well "
            "the model fits its own data, not how it does on new recordings.")


def _left_out_sentence(left_out: Sequence[LeftOut]) -> str:
    """``3 clips of the data were not scored (left_out.csv): 2 did not decode (...), 1 holds no sound.``"""
    silent = sum(c.silent for c in left_out)
    parts = []
    if len(left_out) - silent:
        first = next(c.reason for c in left_out if not c.silent)
        parts.append(f"{len(left_out) - silent} did not decode (the first: {first})")
    if silent:
        parts.append(f"{silent} hold no sound classification would make a segment of")
    return f"**{len(left_out)} clips of the data were not scored** (`left_out.csv`): " + "; ".join(parts) + "."


def write_report(
    evaluations: Mapping[str, Evaluation] | Evaluation, folder: str | Path, *, title: str, context: Mapping[str, str] = {},
    seen: Sequence[str] | None = (),
) -> Path:
    """Write ``report.md`` with its plots and tables into ``folder``; returns the folder.

    The first evaluation is the main one (tables, confusion matrix, ROC curves, per group,
    ``misclassified.csv``); the others (e.g. through a telephone channel) get a summary
    line, a confusion matrix and their own ``misclassified-<condition>.csv``. Files:
    ``report.md``, ``confusion.png``, ``roc.png``, ``per_class.csv``, ``confusion.csv``,
    ``per_group.csv``, ``misclassified.csv``, ``predictions.csv``, ``metrics.json``, and
    ``left_out.csv`` (file, reason) when clips of the data were not scored, which report.md
    says at the top.
    ``seen`` names the evaluated groups the bundle was trained or validated on (empty: all
    held out; None: not known), and the report says so.
    """
    if isinstance(evaluations, Evaluation):
        evaluations = {"as-is": evaluations}
    if not evaluations:
        raise ParameterError("nothing to report: no evaluations")
    folder = check_local_folder(folder, what="report folder")
    folder.mkdir(parents=True, exist_ok=True)
    names = list(evaluations)
    main = evaluations[names[0]]
    pc = main.per_class()
    cm = pd.DataFrame(main.confusion, index=pd.Index(main.labels, name="true"), columns=main.labels)
    pc.to_csv(folder / "per_class.csv", index=False, float_format="%.4f")
    cm.to_csv(folder / "confusion.csv")
    pg = main.per_group()
    pg.to_csv(folder / "per_group.csv", index=False, float_format="%.4f")
    main.misclassified().to_csv(folder / "misclassified.csv", index=False)
    main.table().to_csv(folder / "predictions.csv", index=False)
    plot_confusion(main, folder / "confusion.png", title=f"{names[0]}: {main.n} segments, accuracy {main.accuracy:.3f}")
    plot_roc(main, folder / "roc.png", title=f"{names[0]}: one-vs-rest ROC")
    for other in names[1:]:
        ev = evaluations[other]
        safe = "".join(c if c.isalnum() else "-" for c in other)
        plot_confusion(ev, folder / f"confusion-{safe}.png", title=f"{other}: {ev.n} segments, accuracy {ev.accuracy:.3f}")
        ev.misclassified().to_csv(folder / f"misclassified-{safe}.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(
        {n: {**e.metrics(), **({"left_out": [{"file": c.file, "reason": c.reason} for c in e.left_out]} if e.left_out else {})}
         for n, e in evaluations.items()}, indent=2) + "\n")
    if main.left_out:
        pd.DataFrame([(c.file, c.reason) for c in main.left_out], columns=["file", "reason"]).to_csv(
            folder / "left_out.csv", index=False)

    summary = pd.DataFrame([
        {"condition": n, "segments": e.n, "accuracy": e.accuracy,
         **{f"95 % over {k}": format_interval(v) for k, v in e.accuracy_intervals().items()},
         "macro F1": e.macro_f1,
         "macro ROC-AUC": float(np.nanmean(roc_auc_ovr(e.y_true, e.probs))) if e.n else float("nan")}
        for n, e in evaluations.items()])
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in context.items()]
    unit = ("a clip, or each sound of a clip longer than a segment can be, cut at its silences"
            if main.was_cut else "a clip")
    lines += ["", f"Unit: one segment ({unit}), scored as the pipeline scores a segment: its windows' "
              "probabilities pooled as the bundle says (see the contract above). "
              + _heldout_sentence(None if seen is None else list(seen), len(main.per_group())), "",
              *([_left_out_sentence(main.left_out), ""] if main.left_out else []),
              "## Summary", "", _md_table(summary), "",
              "The 95 % intervals: over segments, how far accuracy could move with other clips like these "
              "(Wilson); over groups, how far with other held-out voices or packages (bootstrap over whole "
              f"groups, {len(main.per_group())} here).", "",
              f"## Per class ({names[0]})", "", _md_table(pc), "",
              f"## Confusion matrix ({names[0]}; rows true, columns predicted)", "",
              _md_table(cm.reset_index().rename(columns={"true": "true \\ predicted"}), "{:.0f}"), "",
              "![confusion matrix](confusion.png) ![ROC curves](roc.png)", ""]
    for other in names[1:]:
        safe = "".join(c if c.isalnum() else "-" for c in other)
        lines += [f"Condition *{other}*: ![confusion matrix, {other}](confusion-{safe}.png)", ""]
    worst = pg.sort_values("accuracy").head(12)
    lines += [f"## Per held-out group ({names[0]}; {len(pg)} groups, lowest first)", "", _md_table(worst), "",
              "Tables: `per_class.csv`, `confusion.csv`, `per_group.csv`, `misclassified.csv` "
              "(file, true, predicted, probabilities), `predictions.csv`, `metrics.json`"
              + (", `left_out.csv` (file, reason)." if main.left_out else "."), ""]
    (folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return folder
