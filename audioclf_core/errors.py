"""The one error root of audioclf and its few precise children.

Every message names the bad value and, where there is one, the file, so that a
row in ``recordings/`` or a CLI line is enough to act on.
"""

from __future__ import annotations

from collections.abc import Mapping


class AudioClfError(Exception):
    """Root of every error audioclf raises on purpose."""


class DecodeError(AudioClfError):
    """A recording could not be opened or decoded (the input is at fault)."""


class SourceUnavailableError(DecodeError):
    """The storage failed while a recording was read (network, server error).

    Unlike other decode errors, the recording itself may be fine: trying again
    later may succeed, so orchestrators retry instead of recording an error row.
    """


class ParameterError(AudioClfError, ValueError):
    """A public argument is out of range or inconsistent with another.

    Raised with ``param``, ``value`` and ``reason``, it is about that one argument: its message
    reads ``param=value: reason``, and :meth:`naming` says the same with the option a command
    line gives the argument by.
    """

    def __init__(self, message: str = "", *, param: str | None = None, value: object = None, reason: str = "") -> None:
        super().__init__(message or f"{param}={value!r}: {reason}")
        self.param, self.value, self.reason = param, value, reason

    def naming(self, options: Mapping[str, str]) -> str:
        """The message, with the argument called by its option when ``options`` (argument name ->
        option, e.g. ``{"max_windows_per_epoch": "--max-windows"}``) has it.

        >>> ParameterError(param="epochs", value=0, reason="must be at least 1").naming({"epochs": "--epochs"})
        '--epochs 0: must be at least 1'
        """
        option = options.get(self.param) if self.param else None
        return f"{option} {self.value!r}: {self.reason}" if option else str(self)


class BundleError(AudioClfError):
    """A model bundle is missing, malformed or inconsistent with its manifest."""


class OutputError(AudioClfError):
    """Results cannot be written where they were asked to go."""


class OutputConflictError(OutputError):
    """The output location holds results that these cannot join (another model's labels).

    Unlike other output errors, trying again cannot help: orchestrators do not retry it.
    """
