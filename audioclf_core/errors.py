"""The one error root of audioclf and its few precise children.

Every message names the bad value and, where there is one, the file, so that a
row in ``recordings/`` or a CLI line is enough to act on.
"""

from __future__ import annotations


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
    """A public argument is out of range or inconsistent with another."""


class BundleError(AudioClfError):
    """A model bundle is missing, malformed or inconsistent with its manifest."""


class OutputError(AudioClfError):
    """Results cannot be written where they were asked to go."""


class OutputConflictError(OutputError):
    """The output location holds results that these cannot join (another model's labels).

    Unlike other output errors, trying again cannot help: orchestrators do not retry it.
    """
