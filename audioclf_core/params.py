"""Frozen parameter objects for the algorithms.

Algorithm parameters travel explicitly (and inside a model bundle's manifest);
deployment settings are read at entry points, never here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ParameterError, Problem


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid(type(self).__name__, exc) from None

    def replace(self, **changes) -> "_Frozen":
        """Return a copy with ``changes`` applied and validated."""
        return type(self)(**{**self.model_dump(), **changes})


def invalid(name: str, exc: ValidationError) -> ParameterError:
    """A pydantic ``ValidationError`` of the parameter object ``name`` as one line,
    ``invalid NAME: field=value: reason; ...``, that names each field (a check of several fields
    says which itself), so that a command line can call each by its option."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        reason = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
        problems.append(Problem(where, err.get("input"), reason) if where else Problem(None, None, reason))
    return ParameterError(f"invalid {name}: " + "; ".join(map(str, problems)), problems=problems)


def split_setting(item: str, names, *, option: str) -> tuple[str, str]:
    """``NAME=VALUE`` as a command-line ``option`` gives it: ``(NAME, VALUE)``, stripped, with
    NAME one of ``names``; anything else is a :class:`ParameterError` that lists them."""
    name, sep, text = (part.strip() for part in item.partition("="))
    if not sep or name not in names:
        raise ParameterError(f"{option} {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
    return name, text


class SilenceParams(_Frozen):
    """How a recording is cut into segments at its silences.

    The first three mirror pydub's ``split_on_silence`` so that users can carry
    their settings over: a stretch of at least ``min_silence_ms`` whose RMS is at
    or below the threshold is silence; ``keep_silence_ms`` of it is kept on each
    side of a segment.

    The threshold is ``threshold_dbfs`` (absolute, like pydub's
    ``silence_thresh``), raised to ``level + threshold_rel_db`` when
    ``threshold_rel_db`` is set, where ``level`` is the running RMS level (dBFS)
    of the recording heard so far: pydub's ``sound.dBFS - 16`` idiom, made
    causal so that the batch and live paths decide identically.
    """

    min_silence_ms: float = Field(500.0, gt=0, le=60_000)
    threshold_dbfs: float = Field(-50.0, le=0)
    threshold_rel_db: float | None = Field(None, le=0)
    keep_silence_ms: float = Field(100.0, ge=0)
    min_segment_ms: float = Field(100.0, ge=0)
    max_segment_s: float = Field(30.0, gt=0, le=3600)
    frame_ms: float = Field(10.0, gt=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> "SilenceParams":
        if self.min_silence_ms < self.frame_ms:
            raise ValueError(
                f"min_silence_ms={self.min_silence_ms} is shorter than one analysis frame "
                f"(frame_ms={self.frame_ms})"
            )
        if 2 * self.keep_silence_ms > self.min_silence_ms:
            # Padding never reaches past half a gap, so padded segments never
            # overlap and the streaming splitter can close a segment at once.
            raise ValueError(
                f"keep_silence_ms={self.keep_silence_ms} must be at most half of "
                f"min_silence_ms={self.min_silence_ms}"
            )
        if self.max_segment_s * 1000 < max(self.min_segment_ms, self.frame_ms):
            raise ValueError(
                f"max_segment_s={self.max_segment_s} is shorter than min_segment_ms={self.min_segment_ms}"
            )
        return self


FeatureKind = Literal["logmel", "mfcc", "spectrogram"]


class FeatureParams(_Frozen):
    """The time-frequency features a model was trained on.

    Frames are taken without centre padding (frame ``i`` covers samples
    ``[i*hop_length, i*hop_length + n_fft)``) so that the frames of a window are
    exactly a slice of the frames of the segment that holds it.
    """

    kind: FeatureKind = "logmel"
    n_fft: int = Field(512, ge=16, le=16384)
    win_length: int | None = Field(400, ge=16)
    hop_length: int = Field(160, ge=1)
    n_mels: int = Field(64, ge=1, le=512)
    n_mfcc: int = Field(20, ge=1, le=128)
    fmin: float = Field(0.0, ge=0)
    fmax: float | None = None
    normalize: Literal["none", "window"] = "window"

    @model_validator(mode="after")
    def _check(self) -> "FeatureParams":
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length={self.win_length} exceeds n_fft={self.n_fft}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} exceeds n_mels={self.n_mels}")
        if self.fmax is not None and self.fmax <= self.fmin:
            raise ValueError(f"fmax={self.fmax} must exceed fmin={self.fmin}")
        return self

    def with_items(self, items) -> "FeatureParams":
        """These features with ``NAME=VALUE`` items applied, as ``audioclf train --feature`` gives
        them (``none`` for an optional value, e.g. ``fmax=none``); the result is validated."""
        names = tuple(type(self).model_fields)
        changes: dict[str, object] = {}
        for item in items:
            name, text = split_setting(item, names, option="--feature")
            changes[name] = None if text.lower() == "none" else text
        try:
            return self.replace(**changes)
        except ParameterError as exc:
            raise ParameterError(f"--feature {' '.join(items)}: {exc}") from None

    @property
    def n_features(self) -> int:
        """Number of feature rows per frame."""
        return {"logmel": self.n_mels, "mfcc": self.n_mfcc, "spectrogram": self.n_fft // 2 + 1}[self.kind]


ChannelMode = Literal["mix", "split"]

# How a segment's window probabilities become the segment's (a bundle's manifest says which):
# "mean" weighs every window alike; "energy" weighs each by its mean power.
Pooling = Literal["mean", "energy"]
POOLINGS: tuple[str, ...] = ("mean", "energy")


def given(**values):
    """The keyword arguments that were given, not None.

    Options a user left unset keep the model's own value: pass the result to
    ``SilenceParams.replace``.
    """
    return {k: v for k, v in values.items() if v is not None}
