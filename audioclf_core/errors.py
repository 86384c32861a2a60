"""The one error root of audioclf and its few precise children.

Every message names the bad value and, where there is one, the file, so that a
row in ``recordings/`` or a CLI line is enough to act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple


class AudioClfError(Exception):
    """Root of every error audioclf raises on purpose."""


class DecodeError(AudioClfError):
    """A recording could not be opened or decoded (the input is at fault).

    Attributes
    ----------
    size, etag : int or str or None
        The file's identity (as in :class:`~audioclf_core.audio_io.AudioInfo`) where the
        storage gave it before the failure, so that an error row says which version of the
        file failed; None where it was not reached.
    info : AudioInfo or None
        What the header said, where it was read before the file was refused (a rate out of
        range, data shorter than the header promises): the error row keeps the rate,
        channels and the duration the header claims.
    """

    size: int | None = None
    etag: str | None = None
    info: object | None = None  # an AudioInfo; the core's I/O module sets it


class SourceUnavailableError(DecodeError):
    """The storage failed while a recording was read (network, server error).

    Unlike other decode errors, the recording itself may be fine: trying again
    later may succeed, so orchestrators retry instead of recording an error row.
    """


class Problem(NamedTuple):
    """One thing wrong with an argument: ``param=value: reason``, or the reason alone when it is
    about several arguments (``param`` None)."""

    param: str | None
    value: object
    reason: str

    def __str__(self) -> str:
        return f"{self.param}={self.value!r}: {self.reason}" if self.param else self.reason

    def naming(self, options: Mapping[str, str]) -> str:
        option = options.get(self.param) if self.param else None
        reason = _call_by_option(self.reason, options)
        if option:
            return f"{option} {self.value!r}: {reason}"
        return f"{self.param}={self.value!r}: {reason}" if self.param else reason


# ``name=`` in a reason about several arguments: ``max_segment_s=1.0 is shorter than min_segment_ms=60000.0``
_ARGUMENT_IN_TEXT = re.compile(r"\b([a-z][a-z0-9_]*)=")


def _call_by_option(text: str, options: Mapping[str, str]) -> str:
    """``text`` with each ``name=`` of an argument in ``options`` written as its option and a space."""
    return _ARGUMENT_IN_TEXT.sub(lambda m: f"{options[m[1]]} " if m[1] in options else m[0], text)


class ParameterError(AudioClfError, ValueError):
    """A public argument is out of range or inconsistent with another.

    Raised with ``param``, ``value`` and ``reason`` it is about that one argument, and its
    message reads ``param=value: reason``; with ``problems`` (:class:`Problem`), about each of
    them. :meth:`naming` says the same with the options a command line gives the arguments by.
    """

    def __init__(self, message: str = "", *, param: str | None = None, value: object = None, reason: str = "",
                 problems: Iterable[Problem] = ()) -> None:
        self.problems = tuple(problems) or ((Problem(param, value, reason),) if param else ())
        super().__init__(message or "; ".join(map(str, self.problems)))
        one = self.problems[0] if len(self.problems) == 1 else Problem(None, None, "")
        self.param, self.value, self.reason = one

    def naming(self, options: Mapping[str, str]) -> str:
        """The message, with each argument called by its option where ``options`` (argument name
        -> option, e.g. ``{"max_windows_per_epoch": "--max-windows"}``) has it.

        >>> ParameterError(param="epochs", value=0, reason="must be at least 1").naming({"epochs": "--epochs"})
        '--epochs 0: must be at least 1'
        """
        if not self.problems:  # a message about several arguments: ``a=1 and b=2 leave ...``
            return _call_by_option(str(self), options)
        named = "; ".join(p.naming(options) for p in self.problems)
        return named if named != "; ".join(map(str, self.problems)) else str(self)


class BundleError(AudioClfError):
    """A model bundle is missing, malformed or inconsistent with its manifest."""


class OutputError(AudioClfError):
    """Results cannot be written where they were asked to go."""


class OutputConflictError(OutputError):
    """The output location holds results that these cannot join (another model's labels).

    Unlike other output errors, trying again cannot help: orchestrators do not retry it.
    """
