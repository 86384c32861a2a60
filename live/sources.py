"""Where blocks come from: a sound card (PortAudio) or a replayed recording.

Both put the same items into the same bounded :class:`BlockQueue`: the block
(float32, ``(frames, channels)`` at the source's rate), the offset of its first
frame in the stream, and the ``time.perf_counter()`` at which it arrived. The
consumer cannot tell them apart, which is what makes a replay a test of the
live path.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from audioclf_core.audio_io import open_audio
from audioclf_core.errors import AudioClfError

from .devices import DeviceError, InputDevice, _pa_message, native_stderr_silenced, sounddevice


class Block(NamedTuple):
    """One block as the callback (or the replay thread) saw it."""

    data: np.ndarray  # float32, (frames, channels)
    offset: int  # stream frame index of data[0], at the source's rate
    arrived: float  # time.perf_counter() when it arrived


@dataclass
class Counters:
    """What the producer side counts; read by the consumer and the view.

    Each field has one writer (the audio callback or the replay thread), so no
    lock is needed; readers may see a value one block old.
    """

    blocks: int = 0  # blocks delivered (queued or dropped)
    frames: int = 0  # frames delivered
    overflows: int = 0  # callbacks flagged input_overflow: the device lost audio before we saw it
    dropped_blocks: int = 0  # blocks lost because the queue was full (the consumer fell behind)
    dropped_frames: int = 0


class BlockQueue:
    """A bounded queue of :class:`Block` and the producer's counters."""

    def __init__(self, maxsize: int) -> None:
        self._q: queue.Queue[Block | None] = queue.Queue(maxsize=max(1, int(maxsize)))
        self.counters = Counters()
        self.maxsize = self._q.maxsize

    def offer(self, data: np.ndarray, *, arrived: float) -> None:
        """Add a block without waiting; count it as dropped if the queue is full."""
        c = self.counters
        offset = c.frames
        c.blocks += 1
        c.frames += len(data)
        try:
            self._q.put_nowait(Block(data, offset, arrived))
        except queue.Full:
            c.dropped_blocks += 1
            c.dropped_frames += len(data)

    def put(self, data: np.ndarray, *, arrived: float, stop: threading.Event) -> bool:
        """Add a block, waiting for room (replay ``--fast``); False if stopped first."""
        c = self.counters
        block = Block(data, c.frames, arrived)
        while not stop.is_set():
            try:
                self._q.put(block, timeout=0.1)
            except queue.Full:
                continue
            c.blocks += 1
            c.frames += len(data)
            return True
        return False

    def get(self, timeout: float | None = None) -> Block | None:
        """Next block, or None once the end mark is reached. Raises queue.Empty on timeout."""
        return self._q.get(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        """Put the end mark (after the producer has stopped); raises queue.Full on timeout."""
        self._q.put(None, timeout=timeout)

    def qsize(self) -> int:
        return self._q.qsize()


class DeviceSource:
    """A PortAudio input stream whose callback feeds a :class:`BlockQueue`.

    Parameters
    ----------
    device : InputDevice
        The device to open.
    samplerate, channels, blocksize : int
        As the stream is opened (``blocksize=0``: PortAudio chooses, per block).
    blocks : BlockQueue
        Where blocks go (may be set after construction, before :meth:`start`).
    latency : str or float
        PortAudio's suggested input latency ("low", "high" or seconds).
    """

    kind = "device"

    def __init__(self, device: InputDevice, *, samplerate: int, channels: int, blocksize: int,
                 blocks: BlockQueue | None = None, latency: str | float = "low") -> None:
        self.device = device
        self.samplerate = int(samplerate)
        self.channels = int(channels)
        self.blocksize = int(blocksize)
        self.blocks = blocks
        self.latency = latency
        self._stream = None
        self._stopping = False
        self._ended = threading.Event()

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: stamp, copy, queue, count. Nothing else.
        arrived = time.perf_counter()
        if status.input_overflow:
            self.blocks.counters.overflows += 1
        self.blocks.offer(indata.copy(), arrived=arrived)

    def _finished(self) -> None:
        self._ended.set()

    def start(self) -> None:
        sd = sounddevice()
        with native_stderr_silenced():
            try:
                self._stream = sd.InputStream(
                    device=self.device.index, samplerate=self.samplerate, channels=self.channels, dtype="float32",
                    blocksize=self.blocksize, latency=self.latency, callback=self._callback,
                    finished_callback=self._finished,
                )
                self._stream.start()
            except (sd.PortAudioError, ValueError) as exc:
                self._close()
                raise DeviceError(
                    f"cannot open input device {self.device.describe()} at {self.samplerate} Hz with "
                    f"{self.channels} channel(s): {_pa_message(exc)}"
                ) from None

    @property
    def ended(self) -> bool:
        """True once the stream has stopped by itself (device gone, host error)."""
        return self._ended.is_set() and not self._stopping

    @property
    def failure(self) -> str | None:
        if self.ended:
            return f"input device {self.device.describe()} stopped delivering audio (unplugged, or its sound server went away)"
        return None

    def stop(self) -> None:
        """Stop the stream; the callback is not called again after this returns."""
        self._stopping = True
        self._close()

    def _close(self) -> None:
        if self._stream is None:
            return
        sd = sounddevice()
        with native_stderr_silenced():
            try:
                self._stream.abort(ignore_errors=True)
                self._stream.close(ignore_errors=True)
            except sd.PortAudioError:
                pass  # a device that vanished cannot be closed cleanly; nothing is lost
        self._stream = None


class ReplaySource:
    """A recording fed block by block, as a device would feed it.

    Parameters
    ----------
    uri : str
        Any recording ``open_audio`` reads.
    blocksize : int
        Frames per block (at the recording's rate); 0 for 20 ms.
    blocks : BlockQueue
        Where blocks go (may be set after construction, before :meth:`start`).
    realtime : bool
        Pace blocks at the recording's rate and drop them when the queue is
        full, like a device; else feed them as fast as they are consumed,
        losing none.
    storage_options : mapping, optional
        fsspec options for remote recordings.
    """

    kind = "replay"

    def __init__(self, uri: str, *, blocksize: int, realtime: bool, blocks: BlockQueue | None = None,
                 storage_options=None) -> None:
        self.uri = uri
        self.blocks = blocks
        self.realtime = bool(realtime)
        self._reader = open_audio(uri, storage_options=storage_options)
        info = self._reader.info
        self.samplerate = int(info.sample_rate)
        self.channels = int(info.channels)
        self.blocksize = int(blocksize) if blocksize else max(1, round(0.02 * self.samplerate))
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="audioclf-live-replay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            t0 = time.perf_counter()
            sent = 0
            for x in self._reader.blocks(self.blocksize):
                if self._stop.is_set():
                    return
                sent += len(x)
                if self.realtime:
                    # A device delivers a block once its last frame is captured.
                    delay = t0 + sent / self.samplerate - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    self.blocks.offer(np.ascontiguousarray(x, dtype=np.float32), arrived=time.perf_counter())
                elif not self.blocks.put(np.ascontiguousarray(x, dtype=np.float32), arrived=time.perf_counter(), stop=self._stop):
                    return
        except AudioClfError as exc:
            self._error = str(exc)
        except Exception as exc:  # a bad file ends the replay with its reason, never silently
            self._error = f"cannot replay {self.uri}: {type(exc).__name__}: {exc}"
        finally:
            self._ended.set()

    @property
    def ended(self) -> bool:
        """True once the recording has been fed to its end (or failed)."""
        return self._ended.is_set()

    @property
    def failure(self) -> str | None:
        return self._error

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)

    def close(self) -> None:
        """Stop, and close the recording."""
        self.stop()
        self._reader.close()
