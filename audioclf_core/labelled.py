"""Labelled clips: the tables a user trains and evaluates on, their group split, their audio.

A folder of label folders or a CSV manifest (``path,label[,group]``) becomes a table
(:func:`load_table`); :func:`group_split` splits it by group so that no voice or package is on
two sides; :func:`load_clips` decodes every clip once, mono, at the model's rate; and
:func:`cut_recordings` cuts long labelled recordings at their silences, as inference does.
"""

from __future__ import annotations

import re
import time
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import soxr

from .audio_io import AUDIO_EXTENSIONS, expand_inputs, mix_to_mono, open_audio, resolve_fs
from .bundle import LABEL_RE
from .errors import AudioClfError, ParameterError
from .params import SilenceParams
from .segment import split_nonsilent
from .storage import is_url, storage_errors

Log = Callable[[str], None]  # where progress lines go (print, a rich console, a logger)


def load_table(data: str | Path | pd.DataFrame, *, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The clips to learn from, one row each.

    Parameters
    ----------
    data : str, Path or DataFrame
        A CSV manifest with columns ``path``, ``label`` and optionally ``group`` (and
        ``synthetic``); relative paths are relative to the CSV's folder. Or a folder: its
        ``manifest.csv`` if it has one, else every audio file in ``<folder>/<label>/``;
        there, a sub-folder names a group (``<label>/<group>/...``: one voice, one source),
        and a file directly in its label folder is a group of its own. Either may be an
        fsspec URL (``s3://bucket/labelled/``).
    storage_options : mapping, optional
        fsspec options for a URL (an S3 endpoint, credentials); the clips are read with them too.

    Returns
    -------
    DataFrame
        Columns ``path`` (absolute, or a URL), ``label`` (str), ``group`` (str; the file
        itself when the data names no groups) and ``synthetic`` (bool), plus any others given.
    """
    if isinstance(data, pd.DataFrame):
        table, join = data.copy(), _local_join(Path.cwd())
    elif is_url(str(data)):
        table, join = _remote_table(str(data), storage_options)
    else:
        where = Path(str(data)).expanduser().absolute()
        if where.is_dir() and (where / "manifest.csv").is_file():
            where = where / "manifest.csv"
        if where.is_file():
            table, join = _read_manifest(where, open), _local_join(where.parent)
        elif where.is_dir():
            label_dirs = [d for d in sorted(where.iterdir()) if d.is_dir() and not d.name.startswith(".")]
            rows = [
                {"path": str(p), "label": d.name, "group": _folder_group(d.relative_to(where), p.relative_to(where))}
                for d in label_dirs
                for p in sorted(d.rglob("*"))
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
            ]
            _refuse_empty_labels([d.name for d in label_dirs], rows, where=data)
            table, join = pd.DataFrame(rows, columns=["path", "label", "group"]), _local_join(where)
        else:
            raise ParameterError(f"no labelled data at {data}: not a folder of label folders or a CSV manifest")
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ParameterError(f"the data manifest needs columns path and label; missing {sorted(missing)}")
    if table.empty:
        raise ParameterError(f"no clips in {data}")
    table = table.reset_index(drop=True)
    for col in ("path", "label"):
        blank = (table[col].isna() | (table[col].astype(str).str.strip() == "")).to_numpy()
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            other = table.at[i, "label" if col == "path" else "path"]
            where = "the table" if isinstance(data, pd.DataFrame) else data
            raise ParameterError(f"{int(blank.sum())} rows of {where} have no {col}; the first: row {i + 1} "
                                 f"(counting from 1 after the header; its {'label' if col == 'path' else 'path'} {other!r})")
    table["path"] = [str(p) if is_url(str(p)) or Path(str(p)).is_absolute() else join(str(p)) for p in table["path"]]
    table["label"] = table["label"].astype(str).str.strip()
    check_label_names(table["label"].unique())
    if "group" not in table.columns or table["group"].isna().all():
        table["group"] = table["path"]  # no groups given: every file is its own
    table["group"] = table["group"].fillna(table["path"]).astype(str)
    table["synthetic"] = _flag(table["synthetic"]) if "synthetic" in table.columns else False
    return table


def _local_join(base: Path) -> Callable[[str], str]:
    return lambda rel: str((base / rel).resolve())


def _read_manifest(where, opener) -> pd.DataFrame:
    try:
        with opener(where, "rb") as f:
            return pd.read_csv(f, dtype={"label": str, "group": str})
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ParameterError(f"cannot read the data manifest {where}: {exc}") from None


def _remote_table(uri: str, storage_options: Mapping[str, Any] | None) -> tuple[pd.DataFrame, Callable[[str], str]]:
    """A manifest or a folder of label folders behind an fsspec URL; relative paths in a
    manifest join its folder's URL."""
    given, uri = uri, uri.rstrip("/")
    try:
        fs, root = resolve_fs(uri, storage_options)
        if fs.isdir(root) and fs.isfile(f"{root.rstrip('/')}/manifest.csv"):
            root, uri = f"{root.rstrip('/')}/manifest.csv", f"{uri}/manifest.csv"
        if fs.isfile(root):
            folder = uri.rsplit("/", 1)[0]
            return _read_manifest(root, fs.open), lambda rel: f"{folder}/{rel.lstrip('/')}"
        if not fs.isdir(root):
            raise ParameterError(f"no labelled data at {given}: not a folder of label folders or a CSV manifest")
        labels = sorted(i["name"].rstrip("/").rsplit("/", 1)[-1] for i in fs.ls(root, detail=True)
                        if i.get("type") == "directory")
        rows = []
        for label in labels:
            if label.startswith("."):
                continue
            for p in expand_inputs([f"{uri}/{label}/"], storage_options=storage_options)[0]:
                group = _folder_group(PurePosixPath(label), PurePosixPath(p[len(uri) + 1:])) if p.startswith(f"{uri}/") else None
                rows.append({"path": p, "label": label, "group": group})
    except storage_errors() as exc:
        raise ParameterError(f"cannot read the labelled data at {given}: {exc}") from None
    _refuse_empty_labels([lab for lab in labels if not lab.startswith(".")], rows, where=given)
    return pd.DataFrame(rows, columns=["path", "label", "group"]), lambda rel: rel


def check_label_names(labels: Sequence[str]) -> None:
    """Refuse labels that cannot name a model's output (a results column), before any work.

    Raises
    ------
    ParameterError
        Naming the first bad label, with a name that would do.
    """
    bad = [lab for lab in labels if not LABEL_RE.match(lab)]
    if bad:
        fix = re.sub(r"[^a-z0-9_]+", "_", bad[0].lower()).strip("_") or "a name"
        raise ParameterError(f"label {bad[0]!r} cannot name a model output: labels are lowercase letters, digits and _ "
                             f"(they name result columns); rename it, e.g. {fix!r}"
                             + (f" ({len(bad)} labels like it)" if len(bad) > 1 else ""))


def _refuse_empty_labels(label_dirs: Sequence[str], rows: Sequence[Mapping[str, Any]], *, where) -> None:
    """A label folder without one audio file is a mistake (clips elsewhere, other extensions),
    not a label to leave out without a word."""
    empty = sorted(set(label_dirs) - {r["label"] for r in rows})
    if empty:
        raise ParameterError(f"label folder {empty[0]}/ in {where} holds no audio files; "
                             "add clips or move the folder away"
                             + (f" ({len(empty)} such folders: {', '.join(empty)})" if len(empty) > 1 else ""))


def _folder_group(label_dir: PurePath, path: PurePath) -> str | None:
    """The group of a clip found under ``<label>/``, both paths relative to the data folder:
    the first folder below the label folder (``speech/caller-17/a.wav`` and
    ``speech/caller-17/day2/b.wav`` are one group, ``caller-17``, in every label), or None for
    a file directly in the label folder (its own group)."""
    parts = path.relative_to(label_dir).parts
    return parts[0] if len(parts) > 1 else None


def _flag(col: pd.Series) -> pd.Series:
    """A yes/no column as written by hand or by pandas: 1/0 (read as floats when a cell is blank),
    true/false, yes/no, or empty for no."""
    if pd.api.types.is_bool_dtype(col):
        return col.astype(bool)
    number = pd.to_numeric(col, errors="coerce").fillna(0) != 0
    word = col.astype("string").str.strip().str.lower().isin(("true", "yes")).fillna(False)
    return (number | word).astype(bool)


def group_split(
    table: pd.DataFrame,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    seed: int = 0,
    test_groups: Sequence[str] = (),
    val_groups: Sequence[str] = (),
    heldout_real_only: bool = True,
) -> pd.Series:
    """Assign whole groups to ``train``, ``val`` or ``test``.

    Groups are visited in a seeded random order; a group goes to test (then validation)
    while its main label is short of ``test_fraction`` (``val_fraction``) of that label's
    clips. The last training group of a label always stays in training. When
    ``heldout_real_only`` and the table marks synthetic clips, only groups without synthetic
    clips are held out (and the fractions are of those): figures on held-out data are
    figures on real recordings.

    Parameters
    ----------
    table : DataFrame
        From :func:`load_table` (columns ``label``, ``group``, ``synthetic``).
    test_groups, val_groups : sequence of str
        Groups to hold out by name. When ``test_groups`` is given, no other group is
        drawn for test (likewise for validation).

    Returns
    -------
    Series
        ``"train"``, ``"val"`` or ``"test"`` per row, indexed like ``table``.
    """
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= f < 1:
            raise ParameterError(param=name, value=f, reason="must be in [0, 1)")
    if test_fraction + val_fraction >= 1:
        raise ParameterError(f"test_fraction={test_fraction} and val_fraction={val_fraction} leave nothing to train on")
    known = set(table["group"])
    unknown = sorted((set(test_groups) | set(val_groups)) - known)
    if unknown:
        raise ParameterError(f"held-out groups not in the data: {', '.join(unknown)}")
    both = sorted(set(test_groups) & set(val_groups))
    if both:
        raise ParameterError(f"groups named for both test and validation: {', '.join(both)}")
    counts = table.groupby(["group", "label"]).size().unstack(fill_value=0)
    synthetic = table.groupby("group")["synthetic"].any() if "synthetic" in table else pd.Series(False, index=counts.index)
    eligible = [g for g in counts.index if not (heldout_real_only and bool(synthetic.get(g, False)))]
    total = counts.loc[eligible].sum(axis=0)  # fractions of what may be held out
    assign = {g: "train" for g in counts.index}
    for g in test_groups:
        assign[g] = "test"
    for g in val_groups:
        assign[g] = "val"
    fractions = {"test": 0.0 if test_groups else test_fraction, "val": 0.0 if val_groups else val_fraction}
    have = {s: counts.loc[np.array([assign[g] == s for g in counts.index], dtype=bool)].sum(axis=0) for s in ("test", "val")}
    train_groups = {lab: sum(1 for g in counts.index if assign[g] == "train" and counts.at[g, lab] > 0) for lab in counts.columns}
    order = sorted(counts.index)
    np.random.default_rng(seed).shuffle(order)
    for g in order:
        if assign[g] != "train" or (heldout_real_only and bool(synthetic.get(g, False))):
            continue
        c = counts.loc[g]
        main = c.idxmax()
        if any(train_groups[lab] <= 1 for lab in c.index[c > 0]):
            continue  # the last group of a label stays in training
        for s in ("test", "val"):
            if fractions[s] and have[s][main] < fractions[s] * total[main]:
                assign[g] = s
                have[s] = have[s] + c
                for lab in c.index[c > 0]:
                    train_groups[lab] -= 1
                break
    return table["group"].map(assign).rename("split")


def load_clips(
    paths: Sequence[str], *, sr: int, log: Log | None = None, storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode clips (paths or fsspec URLs, opened with ``storage_options``) to mono float32 at ``sr``.

    Returns
    -------
    clips : list
        float32 arrays of shape ``(n,)``, or None for a clip that did not decode.
    errors : list of str
        One readable reason per clip that did not decode.
    """
    clips: list[np.ndarray | None] = []
    errors: list[str] = []
    t0 = time.monotonic()
    for i, uri in enumerate(paths):
        try:
            with open_audio(str(uri), storage_options=storage_options) as reader:
                rate = reader.info.sample_rate
                blocks = [mix_to_mono(b)[:, 0] for b in reader.blocks(rate * 60)]
            y = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
            if rate != sr and y.size:
                y = soxr.resample(y, rate, sr, quality="HQ")
            clips.append(np.ascontiguousarray(y, dtype=np.float32))
        except AudioClfError as exc:
            clips.append(None)
            errors.append(str(exc))
        if log and (i + 1) % 2000 == 0:
            log(f"decoded {i + 1}/{len(paths)} clips ({time.monotonic() - t0:.0f} s)")
    return clips, errors


def decoded(clips: Sequence[np.ndarray | None], errors: Sequence[str], *, data, log: Log | None = None) -> np.ndarray:
    """Which of :func:`load_clips`' clips hold audio; says how many do not, with a reason.

    Raises
    ------
    ParameterError
        Not one clip of ``data`` decoded to any audio.
    """
    ok = np.array([c is not None and c.size > 0 for c in clips], dtype=bool)
    if ok.all():
        return ok
    first = errors[0] if errors else "decoded to no audio"
    if not ok.any():
        where = "the table" if isinstance(data, pd.DataFrame) else data
        raise ParameterError(f"none of the {len(ok)} clips of {where} could be decoded; the first: {first}")
    if log:
        log(f"{int((~ok).sum())} clips did not decode and are left out; the first: {first}")
    return ok


def longer_than_a_segment(y: np.ndarray, *, sr: int, silence: SilenceParams) -> bool:
    """Whether a labelled clip is a recording to cut (see :func:`cut_recordings`): longer than
    the contract's ``max_segment_s``, so no segment at inference could hold it whole."""
    return len(y) > silence.max_segment_s * sr


def cut_recordings(
    clips: Sequence[np.ndarray], table: pd.DataFrame, *, sr: int, silence: SilenceParams, log: Log | None = None,
) -> tuple[list[np.ndarray], pd.DataFrame, np.ndarray]:
    """Cut the clips that are longer than a segment can be into the segments ``classify`` makes,
    and leave out the clips in which ``classify`` would find no segment at all.

    A clip no longer than the contract's ``max_segment_s`` is a labelled sound and stays whole.
    A longer one (a labelled recording: a call, an album side) could never be one segment at
    inference, so it is cut at its silences with the contract's silence rule, as the pipeline
    cuts a recording; each sound becomes a row with the clip's label and group, and the
    silences between them are neither trained on nor scored. A clip of either kind with no
    sound above the silence threshold (digital silence, a -80 dBFS hiss) is left out, and the
    log names the first: classification never scores such a clip, so it must not teach a
    label or count in a figure.

    Returns
    -------
    clips : list of np.ndarray
        The whole clips and the pieces, in the order of ``table``.
    table : DataFrame
        ``table``'s rows repeated per piece, with columns ``start_s`` and ``end_s``.
    source : np.ndarray
        int, each new row's position in ``table`` (to carry other per-row data along).

    Raises
    ------
    ParameterError
        Every clip is silent.
    """
    out: list[np.ndarray] = []
    source: list[int] = []
    spans: list[tuple[int, int]] = []
    cut = pieces = 0
    silent: list[int] = []
    for i, y in enumerate(clips):
        bounds = split_nonsilent(y, sr=sr, params=silence)
        if not len(bounds):
            silent.append(i)
            continue
        if not longer_than_a_segment(y, sr=sr, silence=silence):
            out.append(y)  # a labelled sound: whole, its pauses and all
            source.append(i)
            spans.append((0, len(y)))
            continue
        cut += 1
        pieces += len(bounds)
        for a, b in bounds:
            out.append(y[a:b])
            source.append(i)
            spans.append((int(a), int(b)))
    if log and cut:
        log(f"{cut} clips longer than {silence.max_segment_s:g} s (a segment's longest) were cut at their silences "
            f"into {pieces} segments, as classify cuts recordings")
    if not out:
        raise ParameterError(f"no sound left to learn from or score: all {len(clips)} clips are silent "
                             f"(nothing above {silence.threshold_dbfs:g} dBFS for {silence.min_segment_ms:g} ms)")
    if log and silent:
        log(f"{len(silent)} clips hold no sound above {silence.threshold_dbfs:g} dBFS (classify would find no segment "
            f"in them) and are left out; the first: {table['path'].iloc[silent[0]]}")
    src = np.asarray(source, dtype=np.int64)
    t = table.iloc[src].reset_index(drop=True)
    t["start_s"] = [a / sr for a, _ in spans]
    t["end_s"] = [b / sr for _, b in spans]
    return out, t, src
