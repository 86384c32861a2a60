"""Train window classifiers on labelled clips and ship them as bundles.

Pure functions for each step, and one entry point, :func:`train`:

1. :func:`~audioclf_core.labelled.load_table`: a folder of label folders, or a CSV manifest
   (``path,label[,group]``);
2. :func:`~audioclf_core.labelled.group_split`: a seeded split by *group* (voice, package,
   kind), so that no group is on both sides and held-out figures speak for unseen voices and
   packages;
3. :func:`~audioclf_core.labelled.load_clips`: decode every clip once, mono, at the model's rate;
4. augmentation on audio, before features (:mod:`audioclf_core.augment`): gain, noise mixing,
   time shift, telephone band-limiting and a mu-law round trip, speed/pitch, tempo, rooms,
   held vowels;
5. features through :meth:`FeatureExtractor.windows`, the function inference uses, so that
   training and inference see identical numbers (:class:`WindowSampler`);
6. a Keras model from :mod:`audioclf_core.architectures`, class weights, early stopping, and an
   optional small hyper-parameter search;
7. held-out evaluation (:mod:`audioclf_core.evaluation`) written into the bundle's manifest.

Trained bundles of one contract can then be joined: :func:`soup` (the mean of their weights)
or :func:`ensemble` (the mean of their probabilities).

TensorFlow and Keras are imported inside the functions that need them, so importing this
module is cheap.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .augment import (STRETCH_N_FFT, AugmentParams, augment, change_speed, hold_sound, mask_window, mu_law,
                      random_band, shift_pitch, telephone, time_stretch)
from .bundle import LITERT_FILE, MODEL_FILE, Bundle, Manifest, check_new_bundle, load_bundle, write_manifest
from .errors import BundleError, ParameterError
from .features import FeatureExtractor, mel_filterbank
from .labelled import Log, cut_recordings, decoded, group_split, load_clips, load_table, longer_than_a_segment
from .params import POOLINGS, FeatureParams, Pooling, SilenceParams
from .storage import check_local_folder

SPLITS = ("train", "val", "test")
# The names :func:`audioclf_core.architectures.build_model` knows (that module imports Keras,
# so arguments are checked against this copy; a test keeps the two equal).
ARCHITECTURES = ("cnn", "resnet", "mlp")


# --------------------------------------------------------------------------------------
# Task presets: the feature contract a new bundle is trained under
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskPreset:
    """The contract of a new bundle: rate, windows, features, silence, how clips are cut.

    ``crop`` is ``"window"`` for tasks where any stretch of a clip shows its class (random
    window-long crops of long clips), or ``"whole"`` for tasks where the clip is one event
    (a spoken digit: the whole clip, shifted in time, one window drawn from its windows).
    """

    name: str
    sample_rate: int
    window_s: float
    hop_s: float
    features: FeatureParams
    silence: SilenceParams
    crop: str
    labels: tuple[str, ...] = ()
    description: str = ""
    augment: AugmentParams = field(default_factory=AugmentParams)
    noise_label: str | None = None  # clips of this label also serve as mixing noise
    pooling: Pooling = "energy"  # how a segment's windows pool (see audioclf_core.pipeline.pool_windows)


TELEPHONE_FEATURES = FeatureParams(kind="logmel", n_fft=256, win_length=200, hop_length=80, n_mels=40, fmin=0.0,
                                   fmax=4000.0, normalize="window")
PRESETS: dict[str, TaskPreset] = {
    "smn": TaskPreset(
        name="speech-music-noise",
        sample_rate=8000,
        window_s=1.0,
        hop_s=0.5,
        features=TELEPHONE_FEATURES,
        silence=SilenceParams(),
        crop="window",
        labels=("speech", "music", "noise"),
        description="Is a segment someone talking, (hold) music, or other noise? 8 kHz, for telephone and "
        "wide-band audio alike (wide-band input is resampled to 8 kHz).",
        # Short speech clips are zero-padded more often than music: pad the others as often.
        # Tempo changes down to 0.4x draw syllables out as some prompt sets do (KLettres), in
        # every class alike; feature masks keep one band or instant from deciding. Held vowels
        # and notes (p 0.3, every class alike): held-out accuracy 95.9-97.5 % in three
        # fine-tunes of 1.1.1 against 95.0 % without, 96.0 % from scratch against 94.8 % (1.1.1).
        augment=AugmentParams(p_short=0.3, p_stretch=0.25, stretch=(0.4, 1.25), p_mask=0.5, p_hold=0.3),
        noise_label="noise",
    ),
    "digits": TaskPreset(
        name="digits",
        sample_rate=8000,
        window_s=1.0,
        hop_s=0.5,
        features=TELEPHONE_FEATURES,
        # A caller reading out a number pauses briefly between digits.
        silence=SilenceParams(min_silence_ms=200.0, keep_silence_ms=80.0, min_segment_ms=120.0, max_segment_s=5.0),
        crop="whole",
        labels=tuple(str(d) for d in range(10)),
        description="Which spoken digit (0-9) a segment is, across speakers and languages (IVR). 8 kHz.",
        # Speed changes of 0.8-1.25 move pitch and formants together by about as much as adult voices
        # differ (women's formants sit some 15-20 % above men's). Chosen on validation voices: best
        # validation accuracy 0.83 against 0.77 with 0.88-1.12, same corpus and seed.
        # Feature masks (SpecAugment) at p 0.5: best validation accuracy 0.82 against 0.76 without,
        # after 16 epochs each (same corpus, seed and width 24). Tempo changes (p 0.4, 0.75-1.35)
        # on top gave 0.77, so they are left out.
        augment=AugmentParams(p_noise=0.4, snr_db=(5.0, 30.0), p_speed=0.6, speed=(0.8, 1.25), p_short=0.0,
                              p_mask=0.5, mask_frames=8),
    ),
}


def get_preset(preset: str | TaskPreset) -> TaskPreset:
    """A preset by name (``smn``, ``digits``) or as given."""
    if isinstance(preset, TaskPreset):
        return preset
    if preset not in PRESETS:
        raise ParameterError(f"unknown task preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def fine_tune_preset(parent: Bundle, preset: str | TaskPreset | None = None) -> TaskPreset:
    """What a fine-tune of ``parent`` trains under: the parent's contract, always.

    Cropping, augmentation and the mixing-noise label come from ``preset`` when one is named;
    otherwise from what the parent's ``provenance.training`` records of its own training,
    and what that does not record from the built-in preset with the same labels, if there
    is one, else the defaults.
    """
    m = parent.manifest
    if preset is not None:
        base = get_preset(preset)
        crop, augment, noise_label = base.crop, base.augment, base.noise_label
    else:
        same = [p for p in PRESETS.values() if tuple(p.labels) == tuple(m.labels)]
        base = same[0] if same else TaskPreset(name=m.name, sample_rate=m.sample_rate, window_s=m.window_s,
                                               hop_s=m.hop_s, features=m.features, silence=m.silence, crop="window")
        rec = m.provenance.get("training", {})
        augment = base.augment
        if isinstance(rec.get("augmentation"), dict):
            known = {f.name for f in fields(AugmentParams)}
            augment = AugmentParams(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in rec["augmentation"].items() if k in known})
        crop = rec.get("crop") if rec.get("crop") in ("window", "whole") else base.crop
        noise_label = rec["noise_label"] if "noise_label" in rec else base.noise_label
    if noise_label is not None and noise_label not in m.labels:
        noise_label = None
    return replace(base, sample_rate=m.sample_rate, window_s=m.window_s, hop_s=m.hop_s, features=m.features,
                   silence=m.silence, crop=crop, augment=augment, noise_label=noise_label, name=m.name,
                   labels=tuple(m.labels), pooling=m.pooling)


# --------------------------------------------------------------------------------------
# Windows for training and validation
# --------------------------------------------------------------------------------------
@dataclass
class WindowSampler:
    """Draws labelled, augmented training windows from clips.

    Every epoch is the same list of (clip, draw) tasks in a new order; each task gives one
    window, so an epoch always has ``len(self)`` windows. A clip is drawn about once per
    window of audio it holds (at most ``max_per_clip`` times); ``repeat`` multiplies chosen
    clips (real recordings among many synthetic ones).

    ``paired`` draws each task as two views of one window (frames x bands each, stacked): the
    window as drawn, and the same audio once more through a telephone line (band-pass edges
    drawn as :func:`random_band` draws them, then the G.711 mu-law codec), with the same masks:
    what consistency training (:func:`fit`'s ``consistency``) compares.
    """

    clips: list[np.ndarray]
    labels: np.ndarray  # int, one per clip
    fx: FeatureExtractor
    window: int
    hop: int
    crop: str
    params: AugmentParams
    noise_pool: list[np.ndarray]
    seed: int
    max_per_clip: int = 6
    max_windows: int = 30000
    repeat: np.ndarray | None = None
    paired: bool = False
    tasks: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        lengths = np.array([len(c) for c in self.clips])
        if self.crop == "window":
            per = np.clip(np.round(lengths / self.window), 1, self.max_per_clip).astype(int)
        else:
            per = np.ones(len(self.clips), dtype=int)
        if self.repeat is not None:
            per = per * self.repeat
        tasks = np.repeat(np.arange(len(self.clips)), per)
        if len(tasks) > self.max_windows:
            tasks = np.sort(np.random.default_rng(self.seed).choice(tasks, self.max_windows, replace=False))
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def class_counts(self, n_labels: int) -> np.ndarray:
        return np.bincount(self.labels[self.tasks], minlength=n_labels)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.tasks))

    def batch(self, positions: np.ndarray, *, epoch: int, key: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels for the tasks at ``positions`` (deterministic per epoch and key)."""
        rng = np.random.default_rng([self.seed, epoch, key, 2])
        line = np.random.default_rng([self.seed, epoch, key, 4]) if self.paired else None  # the first views stay as drawn
        xs = [self.window_of(self.tasks[p], rng, line) for p in positions]
        return np.stack(xs), self.labels[self.tasks[positions]]

    def window_of(self, i: int, rng: np.random.Generator, line: np.random.Generator | None = None) -> np.ndarray:
        """One window of clip ``i`` drawn with ``rng``; with ``line``, stacked with the same audio
        through a telephone line whose band edges ``line`` draws (``rng`` draws as without it)."""
        y = self.clips[i]
        p = self.params
        sr = self.fx.sr
        factor = float(rng.uniform(*p.speed)) if rng.random() < p.p_speed else 1.0
        tempo = float(rng.uniform(*p.stretch)) if rng.random() < p.p_stretch else 1.0
        # No draw at p 0, so that recipes without pitch changes keep their random streams.
        pitch = float(np.exp(rng.uniform(*np.log(p.pitch)))) if p.p_pitch and rng.random() < p.p_pitch else 1.0
        hold = float(rng.uniform(*p.hold_s)) if p.p_hold and rng.random() < p.p_hold else 0.0
        if self.crop == "window":
            want = self.window
            if rng.random() < p.p_short:
                want = int(rng.uniform(*p.short_s) * sr)
            # A tempo change reads want * tempo samples (plus one vocoder frame for its edges).
            need = min(len(y), int(round(want * factor * tempo)) + (STRETCH_N_FFT if tempo != 1.0 else 0))
            start = int(rng.integers(0, len(y) - need + 1))
            seg = shift_pitch(y[start: start + need], pitch, sr=sr)
            if factor != 1.0:
                seg = change_speed(seg, factor, sr=sr)
            seg = time_stretch(seg, tempo)
            if hold:  # a window-long stretch of the longer audio, mostly the held part
                seg = hold_sound(seg, hold, sr=sr, rng=rng)
                start = int(rng.integers(0, max(0, seg.size - want) + 1))
                seg = seg[start: start + want]
            else:
                seg = seg[:want]
        else:
            seg = shift_pitch(y, pitch, sr=sr)
            seg = change_speed(seg, factor, sr=sr) if factor != 1.0 else seg
            seg = time_stretch(seg, tempo)
            seg = hold_sound(seg, hold, sr=sr, rng=rng) if hold else seg
            pad = int(p.pad_s * sr)
            seg = np.concatenate([np.zeros(int(rng.integers(0, pad + 1)), np.float32), seg,
                                  np.zeros(int(rng.integers(0, pad + 1)), np.float32)])
        seg = augment(seg, sr=sr, params=p, rng=rng, noise_pool=self.noise_pool)
        w = self.fx.windows(seg, window=self.window, hop=self.hop)
        k = int(rng.integers(len(w)))
        views = [w[k]]
        if line is not None:  # the same audio through a line: same level, noise, crop and window
            views.append(self.fx.windows(mu_law(random_band(seg, sr=sr, rng=line)), window=self.window, hop=self.hop)[k])
        if rng.random() < p.p_mask:
            masks = [copy.deepcopy(rng) for _ in views[1:]]  # the same masks on both views
            views = [mask_window(v, bands=p.mask_bands, frames=p.mask_frames, rng=r) for v, r in zip(views, [rng, *masks])]
        return np.stack(views) if line is not None else views[0]


def clip_windows(
    clips: Sequence[np.ndarray], labels: np.ndarray, *, fx: FeatureExtractor, window: int, hop: int, max_per_clip: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """All windows of each clip (at most ``max_per_clip``, evenly spread), as inference cuts them."""
    xs, ys = [], []
    for y, lab in zip(clips, labels):
        w = fx.windows(y, window=window, hop=hop)
        if len(w) > max_per_clip:
            w = w[np.linspace(0, len(w) - 1, max_per_clip).round().astype(int)]
        xs.append(w)
        ys.append(np.full(len(w), lab))
    if not xs:
        return np.zeros((0, fx.n_frames(window), fx.n_features), np.float32), np.zeros(0, int)
    return np.concatenate(xs), np.concatenate(ys)


def validation_windows(
    clips: Sequence[np.ndarray], labels: np.ndarray, *, fx: FeatureExtractor, window: int, hop: int, seed: int,
    params: AugmentParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Validation windows: each clip as it is, and once more through a fixed random channel."""
    rng = np.random.default_rng([seed, 3])
    # The channel only (no noise, no room), so that validation stays the same whatever the recipe.
    noisy = [augment(y, sr=fx.sr, params=replace(params, p_noise=0.0, p_reverb=0.0), rng=rng) for y in clips]
    x1, y1 = clip_windows(clips, labels, fx=fx, window=window, hop=hop)
    x2, y2 = clip_windows(noisy, labels, fx=fx, window=window, hop=hop)
    return np.concatenate([x1, x2]), np.concatenate([y1, y2])


# --------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------
def _keras():
    from .model import import_keras

    return import_keras()


def _dataset(sampler: WindowSampler, *, batch_size: int, class_weight: np.ndarray, workers: int):
    keras = _keras()

    class EpochData(keras.utils.PyDataset):
        """Batches of freshly augmented windows; a new order and new draws every epoch."""

        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
            self.epoch = 0
            self.perm = sampler.order(0)

        def __len__(self) -> int:
            return int(math.ceil(len(sampler) / batch_size))

        def __getitem__(self, i: int):
            pos = self.perm[i * batch_size: (i + 1) * batch_size]
            x, y = sampler.batch(pos, epoch=self.epoch, key=i)
            return x, y, class_weight[y].astype(np.float32)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.perm = sampler.order(self.epoch)

    return EpochData()


class _TimeBudget:
    """Keras callback factory: stop training once ``seconds`` have passed."""

    @staticmethod
    def make(seconds: float | None):
        keras = _keras()

        class TimeBudget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.monotonic()
                self.stopped_early = False

            def on_epoch_end(self, epoch, logs=None):
                if seconds and time.monotonic() - self.t0 > seconds:
                    self.model.stop_training = True
                    self.stopped_early = True

        return TimeBudget()


def build(arch: str, input_shape: tuple[int, int], n_labels: int, *, seed: int, **arch_kwargs):
    """A fresh model from :mod:`audioclf_core.architectures`, seeded."""
    keras = _keras()
    from .architectures import build_model

    keras.utils.set_random_seed(seed)
    return build_model(arch, input_shape, n_labels, **arch_kwargs)


def class_weights(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-label loss weights that balance the labels: ``total / (labels x count)``.

    Each label then carries the same total weight in an epoch, whatever its
    share of the windows; a label with no windows gets 0 (nothing to weigh).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise ParameterError(f"class counts {counts.tolist()!r} must be a non-empty list of counts >= 0")
    if not counts.sum():
        raise ParameterError("no training windows: every class count is 0")
    return np.where(counts > 0, counts.sum() / (counts.size * np.maximum(counts, 1)), 0.0)


def consistency_loss(weight: float):
    """Loss of a :func:`paired_model`'s output: cross-entropy on the first view plus ``weight``
    times the Jensen-Shannon divergence between the two views' probabilities.

    The label is learned from the window as drawn; the second view (the same audio through
    a telephone line) only has to agree with it, as AugMix's consistency term asks
    (Hendrycks et al., 2020, with ``weight`` 12). Per window, so class weights apply.
    """
    keras = _keras()
    ops = keras.ops

    def loss(y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        p = ops.clip(y_pred, 1e-7, 1.0)
        a, b = p[:, 0], p[:, 1]
        mean = (a + b) / 2
        js = 0.5 * ops.sum(a * ops.log(a / mean) + b * ops.log(b / mean), axis=-1)
        return keras.losses.sparse_categorical_crossentropy(y, y_pred[:, 0]) + weight * js

    return loss


def first_view_accuracy(y_true, y_pred):
    """Accuracy of a :func:`paired_model`'s first view (the window as drawn)."""
    ops = _keras().ops
    y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred[:, 0], axis=-1), "int32"), y), "float32")


first_view_accuracy.__name__ = "accuracy"  # logged as accuracy / val_accuracy, as an unpaired fit logs it


def paired_model(model):
    """``model`` on pairs of windows (batch x 2 x frames x bands): probabilities per view (batch x 2 x labels).

    Both views go through the network as one batch, so batch normalisation sees them together.
    The weights are ``model``'s own: training this trains it.
    """
    keras = _keras()
    ops = keras.ops
    shape = tuple(model.input_shape[1:])
    n_labels = int(model.output_shape[-1])
    pair = keras.Input(shape=(2, *shape), name="pair")
    both = keras.layers.Lambda(lambda t: ops.concatenate([t[:, 0], t[:, 1]], axis=0), name="views")(pair)
    probs = keras.layers.Lambda(lambda t: ops.transpose(ops.reshape(t, (2, -1, n_labels)), (1, 0, 2)),
                                name="per_view")(model(both))
    return keras.Model(pair, probs, name="paired")


def _check_consistency(weight: float) -> None:
    if not (math.isfinite(weight) and weight >= 0):
        raise ParameterError(param="consistency", value=weight, reason="must be 0 (off) or a positive weight")


def fit(
    model, sampler: WindowSampler, val: tuple[np.ndarray, np.ndarray], *, n_labels: int, epochs: int, batch_size: int,
    learning_rate: float, patience: int, verbose: int, time_budget_s: float | None = None, workers: int = 2,
    consistency: float = 0.0,
) -> dict:
    """Train ``model`` in place with class weights, early stopping and a learning-rate schedule.

    With ``consistency`` > 0 each training window comes with its copy through a telephone
    line (``sampler`` drawn ``paired``), and the loss adds that many times the divergence
    between the two views' probabilities (:func:`consistency_loss`); validation and early
    stopping see the windows as they are, one view each.

    Returns
    -------
    dict
        ``history`` (per-epoch metrics), ``epochs_run``, ``best_val_accuracy``,
        ``class_weight`` and ``seconds``.
    """
    from .model import one_function_per_model

    keras = _keras()
    one_function_per_model()  # each model traces its own training step once
    _check_consistency(consistency)
    weight = class_weights(sampler.class_counts(n_labels))
    trained = model
    if consistency:
        sampler = replace(sampler, paired=True)
        trained = paired_model(model)
        val = (np.stack([val[0], val[0]], axis=1), val[1])  # one view each: the divergence term is 0
        trained.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=consistency_loss(consistency),
                        metrics=[first_view_accuracy])
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    data = _dataset(sampler, batch_size=batch_size, class_weight=weight, workers=workers)
    has_val = len(val[1]) > 0
    monitor = "val_accuracy" if has_val else "accuracy"
    budget = _TimeBudget.make(time_budget_s)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss" if has_val else "loss", factor=0.5,
                                          patience=max(1, patience // 2), min_lr=learning_rate / 30),
        budget,
    ]
    t0 = time.monotonic()
    hist = trained.fit(data, epochs=epochs, validation_data=val if has_val else None, callbacks=callbacks,
                       verbose=verbose)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return {
        "history": history,
        "epochs_run": len(history.get("loss", [])),
        "best_val_accuracy": max(history.get(monitor, [0.0])),
        "monitor": monitor,
        "class_weight": [round(float(w), 4) for w in weight],
        "seconds": round(time.monotonic() - t0, 1),
        "stopped_by_time_budget": bool(getattr(budget, "stopped_early", False)),
    }


SEARCH_SPACE = {
    "cnn": {"width": [8, 12, 16], "dropout": [0.1, 0.2, 0.3], "l2": [1e-4, 1e-3]},
    "resnet": {"width": [8, 12, 16], "dropout": [0.1, 0.2, 0.3], "l2": [1e-4, 1e-3]},
    "mlp": {"width": [128, 256, 512], "dropout": [0.2, 0.3, 0.5], "l2": [1e-4, 1e-3]},
}
LEARNING_RATES = [1e-3, 3e-3]
LEARNING_RATE = 1e-3
"""Adam's learning rate for a new network."""
FINE_TUNE_LEARNING_RATE = 1e-4
"""Adam's learning rate for a fine-tune (``from_bundle``): Adam's first steps move every weight
by about the learning rate whatever the gradient, which at 1e-3 undoes much of a small
network's training on little data before early stopping can see it."""


def search_configs(arch: str, n: int, *, seed: int, base: Mapping[str, Any], learning_rate: float) -> list[dict]:
    """``n`` distinct configurations: the given one first, then seeded random draws."""
    rng = np.random.default_rng([seed, 4])
    space = SEARCH_SPACE[arch]
    configs = [{"arch_kwargs": dict(base), "learning_rate": learning_rate}]
    seen = {repr(configs[0])}
    for _ in range(200):
        if len(configs) >= n:
            break
        kw = {k: (v[int(rng.integers(len(v)))]) for k, v in space.items()}
        kw = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in kw.items()}
        c = {"arch_kwargs": kw, "learning_rate": float(LEARNING_RATES[int(rng.integers(len(LEARNING_RATES)))])}
        if repr(c) not in seen:
            seen.add(repr(c))
            configs.append(c)
    return configs[:n]


def measure_speed(model, *, batch: int = 1024, repeats: int = 4) -> dict:
    """Windows per second of ``model`` through :class:`~audioclf_core.model.Predictor`."""
    from .model import Predictor, import_keras

    pred = Predictor(model, batch_size=batch)
    x = np.random.default_rng(0).standard_normal((batch, *model.input_shape[1:])).astype(np.float32)
    pred(x)  # trace once
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred(x)
        best = min(best, time.perf_counter() - t0)
    return {"windows_per_s": round(batch / best), "ms_per_window": round(1000 * best / batch, 4), "batch": batch,
            "cpus": os.cpu_count(), "keras_backend": import_keras().backend.backend(),
            "measured_with": "audioclf_core.model.Predictor, best of %d" % repeats}


def _clean_copy(model):
    """The model without optimizer state, for a lean bundle.

    Built from the model's config, not with ``keras.models.clone_model``: the clone of a
    compiled model is compiled with the same optimizer, and saving it stores Adam's two
    moments beside the weights (three times the file).
    """
    clean = type(model).from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def _data_name(data) -> str:
    """A bundle name for labels of the user's own: the data folder's name (or the CSV's stem)."""
    if isinstance(data, pd.DataFrame):
        return "custom"
    p = Path(str(data)).expanduser().absolute()
    stem = p.stem if p.suffix.lower() == ".csv" else p.name
    return re.sub(r"[^0-9A-Za-z._-]+", "-", stem).strip("-.") or "custom"


def _check_arch_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse architecture settings no network can be built with (before any data is read)."""
    if "width" in kwargs and not (isinstance(kwargs["width"], (int, np.integer)) and kwargs["width"] >= 2):
        raise ParameterError(param="width", value=kwargs["width"], reason="must be a whole number of at least 2")
    if "dropout" in kwargs and not 0.0 <= float(kwargs["dropout"]) < 1.0:
        raise ParameterError(param="dropout", value=kwargs["dropout"], reason="must be at least 0 and below 1")
    if "l2" in kwargs and not float(kwargs["l2"]) >= 0.0:
        raise ParameterError(param="l2", value=kwargs["l2"], reason="must be 0 or more")


def _next_version(version: str) -> str:
    parts = version.split(".")
    if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]):
        return ".".join([parts[0], str(int(parts[1]) + 1), *(["0"] if len(parts) > 2 else [])])
    return version + ".1"


def _new_head(parent, n_labels: int):
    keras = _keras()
    features = parent.layers[-2].output
    out = keras.layers.Dense(n_labels, activation="softmax", name="probs_new")(features)
    return keras.Model(parent.inputs, out, name=parent.name)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` made: the bundle, its model in memory, and the held-out evaluations."""

    bundle: Bundle
    model: Any
    evaluations: dict  # condition -> evaluation.Evaluation
    split: pd.Series
    table: pd.DataFrame
    report: Path | None = None


def _listed(groups: list[str], limit: int = 300) -> list[str]:
    """Groups for the manifest; data without groups (one per file) would flood it."""
    return groups if len(groups) <= limit else groups[:limit] + [f"... and {len(groups) - limit} more"]


def _hours(table: pd.DataFrame, lengths, sr: int) -> dict:
    """Hours of audio per label; ``lengths`` (samples) align with ``table``'s rows."""
    lab = table["label"].to_numpy()
    n = np.asarray(lengths, dtype=float)
    return {k: round(float(n[lab == k].sum()) / sr / 3600, 4) for k in sorted(set(lab))}


def _heldout_figures(evaluations: Mapping[str, Any], pooling: str) -> dict[str, Any]:
    """The manifest's record of held-out evaluations: unit, every condition, and the as-is headline."""
    figures: dict[str, Any] = {
        "unit": f"segment (a clip; its windows' probabilities pooled as the pipeline pools them: {pooling})",
        "conditions": {c: e.metrics() for c, e in evaluations.items()},
    }
    if "as-is" in evaluations:
        figures["accuracy"] = round(evaluations["as-is"].accuracy, 4)
        figures["macro_f1"] = round(evaluations["as-is"].macro_f1, 4)
    return figures


def _check_band(task: TaskPreset) -> None:
    """Refuse features that a contract's rate cannot give: a band above Nyquist, or mel bands
    too narrow to hold one FFT bin (they would read a constant)."""
    f = task.features
    if (f.fmax or 0) > task.sample_rate / 2:
        raise ParameterError(f"--feature fmax={f.fmax:g} is above the Nyquist frequency of the {task.name} "
                             f"contract's {task.sample_rate} Hz")
    if f.kind != "spectrogram":
        bank = mel_filterbank(sr=task.sample_rate, n_fft=f.n_fft, n_mels=f.n_mels, fmin=f.fmin, fmax=f.fmax)
        empty = int((bank.sum(axis=1) == 0).sum())
        if empty:
            raise ParameterError(f"--feature: {empty} of {f.n_mels} mel bands between {f.fmin:g} and "
                                 f"{f.fmax or task.sample_rate / 2:g} Hz hold no FFT bin at n_fft={f.n_fft}; "
                                 "choose fewer n_mels, a wider band or a larger n_fft")


def train(
    data: str | Path | pd.DataFrame,
    *,
    out: str | Path,
    arch: str = "cnn",
    preset: str | TaskPreset | None = None,
    from_bundle: str | Path | None = None,
    freeze_features: bool = False,
    name: str | None = None,
    version: str | None = None,
    description: str | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 0,
    search: int = 0,
    search_epochs: int | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    learning_rate: float | None = None,
    patience: int = 6,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    test_groups: Sequence[str] = (),
    val_groups: Sequence[str] = (),
    real_repeat: int = 1,
    max_windows_per_epoch: int = 30000,
    time_budget_s: float | None = None,
    report: str | Path | None = None,
    verbose: int = 1,
    workers: int = 2,
    augment: Sequence[str] = (),
    features: Sequence[str] = (),
    consistency: float = 0.0,
    storage_options: Mapping[str, Any] | None = None,
    log: Log | None = None,
) -> TrainResult:
    """Train a bundle on labelled clips and evaluate it on held-out groups.

    Parameters
    ----------
    data : str, Path or DataFrame
        See :func:`load_table`.
    out : str or Path
        Folder for the new bundle; it must not hold one (bundles are never overwritten).
    arch : {"cnn", "resnet", "mlp"}
        Architecture (ignored with ``from_bundle``).
    preset : str or TaskPreset, optional
        The feature contract (rate, windows, features, silence), cropping and augmentation;
        ``smn`` (the default) or ``digits``. With ``from_bundle`` the parent's contract is
        kept whatever the preset, and cropping and augmentation are the parent's own
        (:func:`fine_tune_preset`) unless a preset is named. Without a parent the labels
        are those of the preset's labels the data has (in the preset's order), or the
        data's own; the bundle is named after the preset only when it has all its labels,
        else after the data folder, unless ``name`` is given.
    from_bundle : str or Path, optional
        Fine-tune this bundle. Its contract and network are kept (``arch_kwargs`` must be
        empty; the parent's are recorded), the result is a new version in ``out``, and the
        parent stays as it is. The data must have clips of every one of the parent's labels,
        or bring new ones: then the network gets a new output layer for the data's labels and
        the bundle is a new task, named after the data (version 1.0.0) unless ``name`` is given.
    freeze_features : bool
        With ``from_bundle``: train only the output layer.
    learning_rate : float, optional
        Adam's learning rate; default :data:`LEARNING_RATE` for a new network and
        :data:`FINE_TUNE_LEARNING_RATE` for a fine-tune, whose first steps would otherwise
        undo much of what the parent learned before validation can see it.
    search : int
        Hyper-parameter trials (0: none, else at least 2; not with ``from_bundle``): the given
        configuration and ``search - 1`` seeded draws, each run for ``search_epochs`` epochs
        (default: a third of ``epochs``, at least 2, never more than ``epochs``); the best
        validation accuracy wins.
    test_groups, val_groups : sequence of str
        Groups to hold out by name (default: drawn by :func:`group_split`).
    real_repeat : int
        Draw clips that are not synthetic this many times per epoch.
    time_budget_s : float, optional
        Stop the final training after this many seconds (at an epoch's end).
    report : str or Path, optional
        Also write the held-out evaluation report there (refused before any clip is read
        when the split holds no group out).
    verbose : int
        Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.
    augment : sequence of str
        ``NAME=VALUE`` changes to that augmentation (see :meth:`AugmentParams.with_items`).
    features : sequence of str
        ``NAME=VALUE`` changes to the preset's features (see :meth:`FeatureParams.with_items`),
        e.g. ``fmin=300``, ``fmax=3400`` for a front end that sees the telephone band only.
        A new bundle only: a fine-tune keeps its parent's contract.
    consistency : float
        Weight of the consistency term (0: off): each training window is also drawn through a
        telephone line, and the loss adds this many times the Jensen-Shannon divergence between
        the two views' probabilities (:func:`consistency_loss`; AugMix uses 12). Each step then
        runs the network on twice the windows.
    storage_options : mapping, optional
        fsspec options for data behind a URL (see :func:`load_table`).
    log : callable, optional
        Receives one line per step.

    Returns
    -------
    TrainResult
    """
    from .evaluation import evaluate_clips, not_scored, write_report

    say = log or (lambda _msg: None)
    for k, v in (("epochs", epochs), ("batch_size", batch_size), ("real_repeat", real_repeat),
                 ("max_windows_per_epoch", max_windows_per_epoch)):
        if int(v) < 1:
            raise ParameterError(param=k, value=v, reason="must be at least 1")
    if search < 0 or search == 1:
        raise ParameterError(param="search", value=search, reason="give 2 trials or more to compare (0: no search)")
    if search and from_bundle is not None:
        raise ParameterError("search does not apply to a fine-tune: it keeps its parent's network")
    if patience < 0:
        raise ParameterError(param="patience", value=patience, reason="must be 0 or more")
    if learning_rate is None:
        learning_rate = FINE_TUNE_LEARNING_RATE if from_bundle is not None else LEARNING_RATE
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ParameterError(param="learning_rate", value=learning_rate, reason="must be a positive number")
    _check_consistency(consistency)
    if time_budget_s is not None and not time_budget_s > 0:
        raise ParameterError(param="time_budget_s", value=time_budget_s, reason="must be positive (or None: no budget)")
    _check_arch_kwargs(arch_kwargs or {})
    out = check_new_bundle(out, version=version, hint=" (choose a new --out)")
    if report is not None:
        check_local_folder(report, what="report folder")
    parent: Bundle | None = None
    if from_bundle is not None:
        parent = load_bundle(from_bundle)
        if parent.manifest.architecture.startswith("ensemble"):
            raise ParameterError(f"{parent.path} is an {parent.manifest.architecture}: fine-tune one of its members "
                                 "(listed under provenance.ensemble_of), then build the ensemble again")
        if parent.path.resolve() == out.resolve():
            raise BundleError(f"--out {out} is the bundle being fine-tuned; a new version needs a new folder")
        if arch_kwargs:
            raise ParameterError(f"{', '.join(sorted(arch_kwargs))} cannot change in a fine-tune: it keeps the "
                                 f"network of {parent.path}")
        if features:
            raise ParameterError(f"features cannot change in a fine-tune ({' '.join(features)}): it keeps the "
                                 f"contract of {parent.path}")
        task = fine_tune_preset(parent, preset)
        arch = parent.manifest.architecture or "unknown"
    else:
        if arch not in ARCHITECTURES:
            raise ParameterError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if freeze_features:
            raise ParameterError("--freeze-features needs --from BUNDLE: there are no trained features to freeze")
        task = get_preset("smn" if preset is None else preset)
        if features:
            task = replace(task, features=task.features.with_items(features))
            _check_band(task)
    if augment:
        task = replace(task, augment=task.augment.with_items(augment))

    table = load_table(data, storage_options=storage_options)
    found = sorted(table["label"].unique())
    if parent is not None:
        # The parent's labels, unless the data brings new ones: then a new output layer.
        labels = tuple(found) if set(found) - set(parent.labels) else tuple(task.labels)
        lacking = [lab for lab in labels if lab not in found]
        if lacking:
            raise ParameterError(f"the data has no clips labelled {', '.join(lacking)}: a fine-tune keeps all of its "
                                 f"parent's labels ({', '.join(parent.labels)}) unless the data brings new ones, and "
                                 "a label without clips would be unlearned; add clips of it")
        if labels != tuple(parent.labels):
            say(f"new labels {', '.join(labels)} (the parent's: {', '.join(parent.labels)}): a new output layer on "
                f"the parent's features; the bundle takes the data's name unless --name is given")
    else:
        # The preset's order for the preset's labels the data has; a model learns no label without clips.
        labels = tuple(lab for lab in task.labels if lab in found) if set(found) <= set(task.labels) else tuple(found)
    if len(labels) < 2:
        raise ParameterError(f"the data has one label only ({found}); a classifier needs at least two")
    split = group_split(table, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                        test_groups=test_groups, val_groups=val_groups)
    if report is not None and not (split == "test").any():
        raise ParameterError(f"no held-out groups for --report: the split of {table['group'].nunique()} groups holds "
                             "none out (name one with --test-group, raise --test-fraction, or give more groups)")
    if search and not (split == "val").any():
        raise ParameterError(f"search compares trials on validation groups, and the split of {table['group'].nunique()} "
                             "groups has none (name one with --val-group, raise --val-fraction, or give more groups)")
    say(f"{len(table)} clips, {table['group'].nunique()} groups, labels {', '.join(labels)}")
    if len(table) > 1 and (table["group"] == table["path"]).all():  # no group named anywhere
        say("every clip is its own group: clips of one voice or source may fall on both sides of the split "
            "and flatter the held-out figures; name groups with sub-folders (<label>/<group>/...) or a group column")

    sr = task.sample_rate
    t_load = time.monotonic()
    paths, split_of_row = table["path"].tolist(), split.to_numpy()
    all_clips, errors = load_clips(paths, sr=sr, log=say, storage_options=storage_options)
    ok = decoded(all_clips, errors, data=data, log=say)
    table = table[ok].reset_index(drop=True)
    split = split[ok].reset_index(drop=True)
    clips = [c for c, k in zip(all_clips, ok) if k]
    say(f"decoded {len(clips)} clips, {sum(len(c) for c in clips) / sr / 3600:.2f} h, in {time.monotonic() - t_load:.0f} s")
    # the clips each side holds, not the rows the manifest names (a file that did not decode is in no figure)
    say("split by group: " + ", ".join(
        f"{s} {int((split == s).sum())} clips / {table.loc[split == s, 'group'].nunique()} groups" for s in SPLITS))
    n_cut = sum(longer_than_a_segment(c, sr=sr, silence=task.silence) for c in clips)
    clips, table, source = cut_recordings(clips, table, sr=sr, silence=task.silence, log=say)
    # held-out clips that no figure counts, for the report's left_out.csv
    heldout_left_out = not_scored(paths, all_clips, errors, ok, source, silence=task.silence,
                                  keep=[s == "test" for s in split_of_row])
    del all_clips
    split = split.iloc[source].reset_index(drop=True)
    lengths = pd.Series([len(c) for c in clips])
    y_all = table["label"].map({lab: i for i, lab in enumerate(labels)}).to_numpy()
    for lab in labels:
        if not ((table["label"] == lab) & (split == "train")).any():
            raise ParameterError(f"no training clips for label {lab!r} after the group split")

    fx = FeatureExtractor(task.features, sr=sr)
    window, hop = int(round(task.window_s * sr)), int(round(task.hop_s * sr))
    input_shape = (fx.n_frames(window), fx.n_features)
    idx = {s: np.flatnonzero((split == s).to_numpy()) for s in SPLITS}
    noise_pool = []
    if task.noise_label and task.noise_label in labels:
        noise_pool = [clips[i] for i in idx["train"] if table.at[i, "label"] == task.noise_label]
    repeat = np.where(table["synthetic"].to_numpy()[idx["train"]], 1, real_repeat)

    def sampler(max_windows: int, s: int) -> WindowSampler:
        return WindowSampler([clips[i] for i in idx["train"]], y_all[idx["train"]], fx, window, hop, task.crop,
                             task.augment, noise_pool, seed=s, max_windows=max_windows, repeat=repeat)

    if len(idx["val"]):
        val = validation_windows([clips[i] for i in idx["val"]], y_all[idx["val"]], fx=fx, window=window, hop=hop,
                                 seed=seed, params=task.augment)
    else:
        say("no validation groups: early stopping watches training accuracy")
        val = (np.zeros((0, *input_shape), np.float32), np.zeros(0, int))
    say(f"windows: {len(sampler(max_windows_per_epoch, seed))} per training epoch, {len(val[1])} for validation; "
        f"input {input_shape[0]} frames x {input_shape[1]} features")

    base_kwargs = dict(arch_kwargs or {})
    if parent is not None:  # the network is the parent's: record what its manifest records
        base_kwargs = dict(parent.manifest.provenance.get("training", {}).get("arch_kwargs") or {})
    trials = []
    if search:
        configs = search_configs(arch, search, seed=seed, base=base_kwargs, learning_rate=learning_rate)
        s_epochs = search_epochs or min(epochs, max(2, epochs // 3))
        for t, cfg in enumerate(configs):
            say(f"search trial {t + 1}/{len(configs)}: {cfg}")
            m = build(arch, input_shape, len(labels), seed=seed + t, **cfg["arch_kwargs"])
            r = fit(m, sampler(max(2000, max_windows_per_epoch // 2), seed + t), val, n_labels=len(labels),
                    epochs=s_epochs, batch_size=batch_size, learning_rate=cfg["learning_rate"], patience=patience,
                    verbose=verbose, workers=workers, consistency=consistency)
            trials.append({**cfg, "val_accuracy": round(r["best_val_accuracy"], 4), "epochs": r["epochs_run"],
                           "params": int(m.count_params()), "seconds": r["seconds"]})
            say(f"  -> validation accuracy {r['best_val_accuracy']:.4f}")
        best = max(trials, key=lambda t: (t["val_accuracy"], -t["params"]))
        base_kwargs, learning_rate = dict(best["arch_kwargs"]), best["learning_rate"]
        say(f"search picked {base_kwargs}, learning rate {learning_rate}")

    keras = _keras()
    if parent is None:
        model = build(arch, input_shape, len(labels), seed=seed, **base_kwargs)
    else:
        keras.utils.set_random_seed(seed)
        model = keras.models.clone_model(parent.model)
        model.set_weights(parent.model.get_weights())
        if tuple(labels) != tuple(parent.labels):
            model = _new_head(model, len(labels))
        if freeze_features:
            for layer in model.layers[:-1]:
                layer.trainable = False
    parent_val = None
    if parent is not None and tuple(labels) == tuple(parent.labels) and len(val[1]):
        from .model import Predictor

        parent_val = float((Predictor(parent.model, batch_size=1024)(val[0]).argmax(axis=1) == val[1]).mean())
        say(f"the parent gets {parent_val:.4f} of the validation windows before fine-tuning: "
            "a fine-tune whose best epoch stays under that has not learned this data")
    say(f"training {arch} ({model.count_params()} parameters) for up to {epochs} epochs, learning rate {learning_rate:g}")
    result = fit(model, sampler(max_windows_per_epoch, seed), val, n_labels=len(labels), epochs=epochs,
                 batch_size=batch_size, learning_rate=learning_rate, patience=patience, verbose=verbose,
                 time_budget_s=time_budget_s, workers=workers, consistency=consistency)
    say(f"trained {result['epochs_run']} epochs in {result['seconds']:.0f} s; best {result['monitor']} "
        f"{result['best_val_accuracy']:.4f}")
    if parent_val is not None and result["best_val_accuracy"] < parent_val:
        say(f"warning: on the validation windows the fine-tune ({result['best_val_accuracy']:.4f}) is under its parent "
            f"({parent_val:.4f}); the parent may serve this data better (compare both with audioclf evaluate)")

    model = _clean_copy(model)
    evaluations = {}
    test_idx = idx["test"]
    if len(test_idx):
        test_clips = [clips[i] for i in test_idx]
        meta = table.iloc[test_idx]
        for cond, transform in (("as-is", None), ("telephone", lambda y: telephone(y, sr=sr))):
            evaluations[cond] = evaluate_clips(
                model, [transform(c) if transform else c for c in test_clips], meta["label"].tolist(), labels=labels,
                fx=fx, window=window, hop=hop, pooling=task.pooling, files=meta["path"].tolist(),
                groups=meta["group"].tolist(), spans=meta[["start_s", "end_s"]].to_numpy(),
            )
            evaluations[cond].left_out = heldout_left_out
            say(f"held-out ({cond}): segment accuracy {evaluations[cond].accuracy:.4f}, macro F1 {evaluations[cond].macro_f1:.4f}")
    else:
        say("no held-out groups: the bundle carries no held-out figures")
    speed = measure_speed(model)
    say(f"inference: {speed['windows_per_s']} windows/s ({speed['ms_per_window']} ms per window)")

    def summary(s: str) -> dict:
        sel = (split == s).to_numpy()
        part = table[sel]
        return {"clips": int(sel.sum()), "hours": round(float(lengths[sel].sum()) / sr / 3600, 4),
                "hours_per_label": _hours(part, lengths[sel], sr) if sel.any() else {},
                "groups": _listed(sorted(part["group"].unique().tolist()))}

    data_summary = {
        "source": str(data) if not isinstance(data, pd.DataFrame) else "DataFrame",
        "clips": len(table), "hours": round(float(lengths.sum()) / sr / 3600, 4),
        "hours_per_label": _hours(table, lengths, sr),
        "synthetic_hours_per_label": _hours(table[table["synthetic"]], lengths[table["synthetic"].to_numpy()], sr)
        if table["synthetic"].any() else {},
        "decode_errors": len(errors),
        "long_clips_cut_at_silences": int(n_cut),  # their segments count as clips here
        "split": {s: summary(s) for s in SPLITS},
        "split_rule": f"by group, seed {seed}; test_fraction {test_fraction}, val_fraction {val_fraction}"
        + (f"; test groups named: {list(test_groups)}" if test_groups else "")
        + "; held-out groups are real recordings only",
    }
    if "source" in table.columns:
        data_summary["packages"] = sorted({str(s).split(":")[0] for s in table["source"].dropna() if not str(s).startswith("synthetic")})
        data_summary["synthetic_sources"] = sorted({":".join(str(s).split(":")[1:2]).split(" ")[0]
                                                    for s in table["source"].dropna() if str(s).startswith("synthetic")})
    training = {
        "arch": arch, "arch_kwargs": base_kwargs, "parameters": int(model.count_params()), "epochs": epochs,
        "epochs_run": result["epochs_run"], "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
        "patience": patience, "best_val_window_accuracy": round(result["best_val_accuracy"], 4),
        **({"parent_val_window_accuracy": round(parent_val, 4)} if parent_val is not None else {}),
        "class_weight": dict(zip(labels, result["class_weight"])), "seconds": result["seconds"],
        "windows_per_epoch": len(sampler(max_windows_per_epoch, seed)), "crop": task.crop, "real_repeat": real_repeat,
        "noise_label": task.noise_label,
        "augmentation": task.augment.to_dict(), "consistency": consistency, "search_trials": trials,
        "history": {k: [round(v, 5) for v in vals] for k, vals in result["history"].items()},
        "stopped_by_time_budget": result["stopped_by_time_budget"],
        "keras_backend": keras.backend.backend(),
    }
    provenance: dict[str, Any] = {"data": data_summary, "training": training, "built_by": "audioclf train"}
    if parent is not None:
        provenance["parent"] = {"name": parent.name, "version": parent.version, "sha256": parent.sha256,
                                "freeze_features": freeze_features}
    evaluation: dict[str, Any] = {"heldout_groups": data_summary["split"]["test"]["groups"],
                                  **_heldout_figures(evaluations, task.pooling), "speed": speed}
    from .bundle import save_bundle

    same_task = parent is not None and labels == tuple(parent.labels)  # else a new task on the parent's features
    bundle = save_bundle(
        model, out,
        name=name or (parent.name if same_task else task.name if labels == tuple(task.labels) else _data_name(data)),
        version=version or (_next_version(parent.version) if same_task else "1.0.0"),
        description=description if description is not None else (
            parent.manifest.description if same_task
            else f"Fine-tuned from {parent.name} {parent.version} with a new output layer for {', '.join(labels)}."
            if parent else task.description),
        trained=True, labels=labels, sample_rate=sr, window_s=task.window_s, hop_s=task.hop_s,
        features=task.features, silence=task.silence, pooling=task.pooling, architecture=arch, provenance=provenance,
        evaluation=evaluation,
    )
    say(f"wrote bundle {bundle.path} ({bundle.name} {bundle.version}, {(bundle.path / MODEL_FILE).stat().st_size / 1024:.0f} KiB)")
    report_dir = None
    if report is not None and evaluations:
        report_dir = write_report(evaluations, report, title=f"{bundle.name} {bundle.version}: held-out evaluation",
                                  context=_report_context(bundle))
        say(f"wrote report {report_dir / 'report.md'}")
    return TrainResult(bundle=bundle, model=model, evaluations=evaluations, split=split, table=table, report=report_dir)


def repool(
    bundle: str | Path | Bundle, data, *, out: str | Path, pooling: str, version: str, report: str | Path | None = None,
    log: Log | None = None,
) -> Bundle:
    """A new version of a bundle whose segments pool their windows another way.

    The weights (and the LiteRT file) are copied byte for byte, so ``model_sha256`` stays
    the same; the manifest gets ``pooling``, ``version``, ``provenance.repooled_from`` and
    held-out figures measured again on ``data`` (the bundle's held-out groups, as-is and
    through the telephone channel). Never overwrites a bundle.
    """
    from .evaluation import CONDITIONS, evaluate_bundle

    src = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if pooling not in POOLINGS:
        raise ParameterError(param="pooling", value=pooling, reason=f"use one of {', '.join(POOLINGS)}")
    out = check_new_bundle(out, version=version)
    if report is not None:
        check_local_folder(report, what="report folder")
    fields = src.manifest.model_dump(mode="json")
    provenance = {**fields["provenance"], "repooled_from": {"version": src.version, "pooling": src.pooling,
                                                            "sha256": src.sha256}}
    fields.update(version=version, pooling=pooling, provenance=provenance,
                  created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    staged = Bundle(path=src.path, manifest=Manifest.model_validate(fields))  # src's weights, the new pooling
    evaluations = {c: evaluate_bundle(staged, data, heldout_only=True, condition=c, log=log) for c in CONDITIONS}
    evaluation = {**fields["evaluation"], **_heldout_figures(evaluations, pooling)}
    manifest = Manifest.model_validate({**fields, "evaluation": evaluation})
    out.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, LITERT_FILE):
        if (src.path / name).exists():
            shutil.copyfile(src.path / name, out / name)
    return _publish(out, manifest, evaluations, report=report, log=log,
                    done=f"pooling {pooling}, held-out accuracy {src.manifest.evaluation.get('accuracy')} -> "
                         f"{evaluation['accuracy']}")


def _publish(out: Path, manifest: Manifest, evaluations: Mapping[str, Any], *, report: str | Path | None,
             log: Log | None, done: str) -> Bundle:
    """Write the manifest that completes the bundle in ``out``, say so, and write its report."""
    from .evaluation import write_report

    write_manifest(out, manifest)
    bundle = load_bundle(out)
    if log:
        log(f"wrote bundle {out} ({bundle.name} {bundle.version}): {done}")
    if report is not None:
        write_report(evaluations, report, title=f"{bundle.name} {bundle.version}: held-out evaluation",
                     context=_report_context(bundle))
    return bundle


# What members of one ensemble must share: the contract a pipeline reads from the manifest.
ENSEMBLE_CONTRACT = ("labels", "sample_rate", "window_s", "hop_s", "features", "silence", "pooling")


def _split_groups(b: Bundle) -> tuple[list, list]:
    split = b.manifest.provenance.get("data", {}).get("split", {})
    return (sorted(split.get("test", {}).get("groups", [])), sorted(split.get("val", {}).get("groups", [])))


def _members(bundles: Sequence[str | Path | Bundle], *, what: str) -> list[Bundle]:
    """Load the bundles to be joined and refuse any that cannot sit beside the first.

    They must be two or more distinct trained single models with one contract and one split
    (the same held-out and validation groups, so that no member trained on clips another
    holds out, and the held-out figure stays honest).
    """
    members = [b if isinstance(b, Bundle) else load_bundle(b) for b in bundles]
    if len(members) < 2:
        raise ParameterError(f"{what} needs at least two bundles, got {len(members)}")
    first = members[0]
    ref = first.manifest.model_dump(mode="json")
    for b in members:
        if not b.manifest.trained:
            raise ParameterError(f"{b.path}: an untrained bundle cannot be a member")
        if b.manifest.architecture.startswith("ensemble"):
            raise ParameterError(f"{b.path}: an ensemble cannot be a member; join its members instead")
        differ = [k for k in ENSEMBLE_CONTRACT if b.manifest.model_dump(mode="json")[k] != ref[k]]
        if differ:
            raise ParameterError(f"{b.path} differs from {first.path} in {', '.join(differ)}: members share one contract")
        if _split_groups(b) != _split_groups(first):
            raise ParameterError(f"{b.path} holds out other groups than {first.path}: a member could have trained on "
                                 "clips another holds out")
    if len({b.sha256 for b in members}) < len(members):
        raise ParameterError("the same weights are listed twice")
    if not _split_groups(first)[0]:
        raise ParameterError(f"{first.path} lists no held-out groups: {what} is measured on its members' held-out groups")
    return members


def _member_record(b: Bundle) -> dict:
    t = b.manifest.provenance.get("training", {})
    return {"name": b.name, "version": b.version, "sha256": b.sha256, "architecture": b.manifest.architecture,
            **{k: t.get(k) for k in ("seed", "arch_kwargs", "epochs_run", "best_val_window_accuracy", "seconds",
                                     "keras_backend", "machine", "members") if k in t}}


def _join(members: list[Bundle], model, data, *, out: Path, version: str, name: str | None, description: str | None,
          architecture: str, provenance: dict, report: str | Path | None, log: Log | None, done: str) -> Bundle:
    """Save ``model`` as a bundle with the members' contract, measure it on their groups, publish it."""
    from .bundle import save_bundle
    from .evaluation import CONDITIONS, evaluate_bundle

    first = members[0]
    ref = first.manifest.model_dump(mode="json")
    test_groups, val_groups = _split_groups(first)
    bundle = save_bundle(model, out, name=name or first.name, version=version, trained=True,
                         description=first.manifest.description if description is None else description,
                         architecture=architecture, provenance=provenance, **{k: ref[k] for k in ENSEMBLE_CONTRACT})
    try:
        evaluations = {c: evaluate_bundle(bundle, data, groups=test_groups, condition=c, log=log) for c in CONDITIONS}
        validation = evaluate_bundle(bundle, data, groups=val_groups).metrics() if val_groups else None
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # written here a moment ago: leave no bundle without figures
        raise
    evaluation = {
        "heldout_groups": test_groups, **_heldout_figures(evaluations, first.pooling),
        "validation": None if validation is None else {k: validation[k] for k in ("segments", "accuracy", "per_group")},
        "speed": measure_speed(model),
    }
    manifest = Manifest.model_validate({**bundle.manifest.model_dump(mode="json"), "evaluation": evaluation})
    return _publish(out, manifest, evaluations, report=report, log=log,
                    done=f"{done}, held-out accuracy {evaluation['accuracy']}, validation "
                         f"{None if validation is None else validation['accuracy']}")


def ensemble(
    bundles: Sequence[str | Path | Bundle], data, *, out: str | Path, version: str, name: str | None = None,
    description: str | None = None, report: str | Path | None = None, log: Log | None = None,
) -> Bundle:
    """One bundle whose model averages the window probabilities of several trained bundles.

    Runs of one recipe that differ only in their seed disagree on voices none of them heard;
    their mean depends less on the seed than any one of them does. The members must share the contract (labels,
    rate, windows, features, silence, pooling) and the split (the same held-out and validation
    groups, so that no member trained on clips another holds out). The result is a single
    Keras model (the members as sub-models, then their mean), so every engine, LiteRT
    included, runs it like any bundle. Its manifest records each member (version, weights'
    sha256, seed, validation accuracy) under ``provenance.ensemble_of``, and figures measured
    on ``data``: the held-out groups as-is and through the telephone channel, and the
    validation groups (``evaluation.validation``), which is how members and ensembles are
    compared without looking at the held-out figure. Never overwrites a bundle.
    """
    members = _members(bundles, what="an ensemble")
    out = check_new_bundle(out, version=version)
    if report is not None:
        check_local_folder(report, what="report folder")
    first = members[0]
    keras = _keras()
    window = keras.Input(shape=first.input_shape, name="window")
    outputs = [keras.Model(b.model.inputs[0], b.model.outputs[0], name=f"member_{i}")(window) for i, b in enumerate(members)]
    model = keras.Model(window, keras.layers.Average(name="mean_probability")(outputs), name="ensemble")
    archs = sorted({b.manifest.architecture for b in members})
    training = first.manifest.provenance.get("training", {})
    provenance = {
        "data": first.manifest.provenance.get("data", {}),
        "training": {"arch": "ensemble", "arch_kwargs": training.get("arch_kwargs", {}),
                     "parameters": int(model.count_params()), "members": len(members)},
        "ensemble_of": [_member_record(b) for b in members],
        "built_by": "audioclf_core.training.ensemble",
    }
    return _join(members, model, data, out=out, version=version, name=name, description=description,
                 architecture=f"ensemble of {len(members)} {'/'.join(archs)}", provenance=provenance, report=report,
                 log=log, done=f"{len(members)} members")


# Training facts that belong to one run, not to the weights averaged from several.
_PER_RUN = ("seed", "epochs_run", "best_val_window_accuracy", "seconds", "history", "search_trials",
            "stopped_by_time_budget", "machine")


def soup(
    bundles: Sequence[str | Path | Bundle], data, *, out: str | Path, version: str, name: str | None = None,
    description: str | None = None, report: str | Path | None = None, log: Log | None = None,
) -> Bundle:
    """One bundle whose weights are the mean of several fine-tunes of one parent (a "model soup").

    Fine-tunes of one bundle that differ only in their seed stay close to their parent in
    weight space, so the element-wise mean of their weights (batch-norm statistics included)
    is itself a good network, and usually a steadier one than any single run; it keeps one
    model's size and speed, where :func:`ensemble` adds every member's. Networks trained
    from different starting points do not average, so the members must record the same
    parent (``provenance.parent``, as ``train(from_bundle=...)`` writes it), the same
    architecture and width, besides what :func:`ensemble` asks (one contract, one split).
    The manifest keeps the parent and the training settings all members share, records each
    member under ``provenance.soup_of`` (seed, epochs, time) and their summed training time, and
    figures measured on ``data`` as :func:`ensemble` does. A member may itself be a soup of the
    same parent (its record says how many runs it averages): the soup of two five-run soups is
    the mean of all ten runs. Never overwrites a bundle.
    """
    members = _members(bundles, what="a soup")
    first = members[0]
    records = [b.manifest.provenance.get("parent") or {} for b in members]
    parents = {tuple(r.get(k) for k in ("name", "version", "sha256")) for r in records}
    parent = {k: records[0].get(k) for k in ("name", "version", "sha256")}
    if len(parents) > 1 or not parent["sha256"]:
        raise ParameterError("a soup averages fine-tunes of one parent bundle; these record "
                             + ("no parent" if not parent["sha256"] else "different parents")
                             + ": networks trained from different starting points do not average (use an ensemble: "
                             "`audioclf models join --mean probabilities`)")
    trainings = [b.manifest.provenance.get("training", {}) for b in members]
    arch_kwargs = _one_network(members, trainings)
    out = check_new_bundle(out, version=version)
    if report is not None:
        check_local_folder(report, what="report folder")
    weights = [b.model.get_weights() for b in members]
    model = _keras().models.clone_model(first.model)
    model.set_weights([np.mean(ws, axis=0, dtype=np.float64).astype(ws[0].dtype) for ws in zip(*weights)])
    seconds = [t.get("seconds") for t in trainings]
    provenance = {
        "data": first.manifest.provenance.get("data", {}),
        "parent": parent,
        "training": {**{k: v for k, v in trainings[0].items()  # the settings all members share
                        if k not in _PER_RUN and all(t.get(k) == v for t in trainings)},
                     "arch_kwargs": arch_kwargs, "members": len(members),
                     "seconds": None if None in seconds else round(sum(seconds), 1)},
        "soup_of": [{**_member_record(b), "freeze_features": bool(r.get("freeze_features"))} for b, r in zip(members, records)],
        "built_by": "audioclf_core.training.soup",
    }
    return _join(members, model, data, out=out, version=version, name=name, description=description,
                 architecture=first.manifest.architecture, provenance=provenance, report=report, log=log,
                 done=f"mean weights of {len(members)} fine-tunes of {parent.get('name')} {parent.get('version')}")


def _one_network(members: list[Bundle], trainings: list[dict]) -> dict:
    """The members' architecture settings, once they are known to be one network; refuse otherwise.

    What must agree is the network: its architecture and the shape of every weight. The
    recorded ``arch_kwargs`` must agree where both members record them; an empty record is a
    gap, not a difference (fine-tunes made before ``train(from_bundle=...)`` copied the
    parent's record wrote ``{}``), and the first non-empty one is the soup's.
    """
    first = members[0]
    recorded = [(b, t["arch_kwargs"]) for b, t in zip(members, trainings) if t.get("arch_kwargs")]
    ref, ref_kwargs = recorded[0] if recorded else (first, {})
    shapes = [tuple(w.shape) for w in first.model.weights]
    for b, t in zip(members, trainings):
        if b.manifest.architecture != first.manifest.architecture:
            raise ParameterError(f"{b.path} is a {b.manifest.architecture}, {first.path} a {first.manifest.architecture}: "
                                 "a soup averages one architecture")
        if t.get("arch_kwargs") and t["arch_kwargs"] != ref_kwargs:
            raise ParameterError(f"{b.path} is a {b.manifest.architecture} {t['arch_kwargs']}, {ref.path} one with "
                                 f"{ref_kwargs}: a soup averages one architecture")
        if [tuple(w.shape) for w in b.model.weights] != shapes:
            raise ParameterError(f"{b.path} and {first.path} record one architecture, but their layers differ in shape: "
                                 "a soup averages one architecture")
    return ref_kwargs


def _report_context(bundle: Bundle) -> dict:
    m = bundle.manifest
    data = m.provenance.get("data", {})
    tr = m.provenance.get("training", {})
    return {
        "bundle": f"{m.name} {m.version} (sha256 {m.sha256[:12]}…)",
        "contract": f"{m.sample_rate} Hz, window {m.window_s:g} s / hop {m.hop_s:g} s, {m.features.kind} "
                    f"{m.features.n_mels} bands up to {m.features.fmax or m.sample_rate / 2:g} Hz; windows pooled by "
                    f"{'their power' if m.pooling == 'energy' else 'their mean'} ({m.pooling})",
        "model": f"{m.architecture} {tr.get('arch_kwargs', {})}, {tr.get('parameters', '?')} parameters",
        "training data": f"{data.get('clips', '?')} clips, {data.get('hours', '?')} h; per label {data.get('hours_per_label', {})}",
        "held-out groups": ", ".join(m.evaluation.get("heldout_groups", [])[:40]) or "none",
        "speed": f"{m.evaluation.get('speed', {}).get('windows_per_s', '?')} windows/s (batch 1024)",
    }
