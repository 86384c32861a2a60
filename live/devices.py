"""Input devices, as PortAudio (through python-sounddevice) sees them.

sounddevice is imported here, lazily, so that ``--replay`` and ``--help`` work
on a machine without PortAudio. PortAudio and ALSA write diagnostics straight
to file descriptor 2 (``Expression '...' failed in pa_linux_alsa.c``); they are
hidden (see :func:`native_stderr_silenced`) so that a problem reads as one line
of ours, not a page of C traces.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from audioclf_core.errors import AudioClfError, ParameterError
from audioclf_core.model import quiet_native_stderr

MIN_RATE = 1_000
MAX_RATE = 384_000
# ALSA plugin devices (pulse, default, dmix...) report a channel *limit* (32),
# not what the hardware delivers; opening that many copies of a stereo source
# only costs time. Devices with at most this many inputs open them all.
DEFAULT_MAX_CHANNELS = 2
VERBOSE_ENV = "AUDIOCLF_LIVE_VERBOSE"


class DeviceError(AudioClfError):
    """An input device is missing, cannot be opened as asked, or went away."""


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio device with inputs.

    Attributes
    ----------
    index : int
        PortAudio's device index (what ``--device N`` takes).
    name : str
        PortAudio's name (``--device NAME`` matches it, or a part of it).
    hostapi : str
        The host API (ALSA, JACK, OSS, ...).
    max_channels : int
        Input channels the device offers.
    native_rate : int
        The device's default sample rate, Hz.
    is_default : bool
        Whether it is the system's default input.
    """

    index: int
    name: str
    hostapi: str
    max_channels: int
    native_rate: int
    is_default: bool

    @property
    def default_channels(self) -> int:
        """Channels opened when the user does not say (see ``DEFAULT_MAX_CHANNELS``)."""
        return self.max_channels if self.max_channels <= DEFAULT_MAX_CHANNELS else DEFAULT_MAX_CHANNELS

    def describe(self) -> str:
        return f"#{self.index} {self.name!r}"


def native_stderr_silenced():
    """Send what C libraries write to fd 2 to /dev/null, keep Python's stderr.

    PortAudio's and ALSA's traces, which they write to fd 2 from any thread, are
    hidden while our own messages (and tracebacks) still show: the core's
    :func:`~audioclf_core.model.quiet_native_stderr`. ``AUDIOCLF_LIVE_VERBOSE=1``
    shows everything.
    """
    return quiet_native_stderr(force=True, verbose_env=VERBOSE_ENV)


def sounddevice():
    """Import python-sounddevice (PortAudio starts and scans the devices)."""
    if "sounddevice" in sys.modules:
        return sys.modules["sounddevice"]
    try:
        with native_stderr_silenced():
            import sounddevice as sd
    except OSError as exc:  # libportaudio missing
        raise DeviceError(f"cannot use sound devices: PortAudio is not installed ({exc}); on Debian: apt-get install libportaudio2") from None
    return sd


def _pa_message(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text.split(" [PaErrorCode")[0] or type(exc).__name__


def list_input_devices() -> list[InputDevice]:
    """Every device with at least one input, in PortAudio's order.

    Returns
    -------
    list of InputDevice
        Empty when PortAudio finds no input (no sound card, no reachable sound
        server).
    """
    sd = sounddevice()
    with native_stderr_silenced():
        try:
            devices = sd.query_devices()
            apis = sd.query_hostapis()
        except sd.PortAudioError as exc:
            raise DeviceError(f"cannot list sound devices: {_pa_message(exc)}") from None
        default_in = sd.default.device[0]
        if default_in is None or default_in < 0:
            default_in = next((a["default_input_device"] for a in apis if a["default_input_device"] >= 0), -1)
    out = []
    for d in devices:
        if d["max_input_channels"] <= 0:
            continue
        out.append(
            InputDevice(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(apis[d["hostapi"]]["name"]),
                max_channels=int(d["max_input_channels"]),
                native_rate=int(round(d["default_samplerate"])),
                is_default=int(d["index"]) == default_in,
            )
        )
    return out


def resolve_input_device(spec: str | int | None) -> InputDevice:
    """Find the input device ``--device`` names.

    Parameters
    ----------
    spec : str, int or None
        None for the default input (the first input when the system has no
        default), an index (``3`` or ``"3"``), or a name: an exact match
        (ignoring case) wins, else the one input whose name contains it.

    Raises
    ------
    DeviceError
        No input device at all, no device with that index or name, a device
        without inputs, or a name that matches several devices.
    """
    sd = sounddevice()
    inputs = list_input_devices()
    hint = "run `audioclf-live devices` to list them"
    if not inputs:
        raise DeviceError(
            "no input device: PortAudio finds none (no sound card, and no PulseAudio/PipeWire server reachable)"
        )
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return next((d for d in inputs if d.is_default), inputs[0])
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
        index = int(spec)
        found = [d for d in inputs if d.index == index]
        if found:
            return found[0]
        with native_stderr_silenced():
            n_all = len(sd.query_devices())
        if 0 <= index < n_all:
            raise DeviceError(f"device #{index} has no inputs; {hint}")
        raise DeviceError(f"no input device #{index}: PortAudio has {n_all} devices (0-{n_all - 1}); {hint}")
    name = spec.strip()
    exact = [d for d in inputs if d.name.lower() == name.lower()]
    if len(exact) == 1:
        return exact[0]
    partial = [d for d in inputs if name.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        names = ", ".join(repr(d.name) for d in inputs[:8])
        raise DeviceError(f"no input device named {name!r} (inputs: {names}); {hint}")
    names = ", ".join(d.describe() for d in partial[:8])
    raise DeviceError(f"input device name {name!r} is ambiguous: it matches {names}; give the index")


def check_input_settings(device: InputDevice, *, samplerate: int, channels: int) -> None:
    """Fail now, with one line, if the device cannot deliver this rate and channel count.

    Raises
    ------
    ParameterError
        A rate outside 1 kHz-384 kHz, or a channel count under 1.
    DeviceError
        The device refuses the rate or the channel count.
    """
    if isinstance(samplerate, bool) or not isinstance(samplerate, int) or not MIN_RATE <= samplerate <= MAX_RATE:
        raise ParameterError(f"sample rate {samplerate!r} is not supported: use {MIN_RATE}-{MAX_RATE} Hz")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ParameterError(param="channels", value=channels, reason="must be at least 1")
    if channels > device.max_channels:
        raise DeviceError(f"input device {device.describe()} has {device.max_channels} input channels, not {channels}")
    sd = sounddevice()
    with native_stderr_silenced():
        try:
            sd.check_input_settings(device=device.index, samplerate=samplerate, channels=channels, dtype="float32")
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(
                f"input device {device.describe()} does not support {samplerate} Hz with {channels} channel(s): "
                f"{_pa_message(exc)}"
            ) from None
