"""A private PulseAudio daemon with a null sink: a sound card for machines without one.

What is played into the sink (``paplay``) comes out of its monitor source,
which is the server's default source; PortAudio reaches the server through
ALSA's pulse plugin (Debian ``libasound2-plugins``) and lists it as the
``pulse`` (and ``default``) input device. Everything lives under one folder:
the daemon's runtime dir, HOME and socket, so it runs as root without
touching the system's sound setup, and several can run side by side.

Used by the tests (``tests/live/conftest.py``) and ``benchmarks/bench_live.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SINK = "audioclf"
RATE = 44100
CHANNELS = 2


def available() -> str | None:
    """None if PulseAudio can be used, else why not (for a skip message)."""
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        return f"PulseAudio is not installed ({', '.join(missing)} missing): apt-get install pulseaudio pulseaudio-utils libasound2-plugins"
    return None


class PulseServer:
    """``pulseaudio`` in the foreground with only a null sink and a unix socket.

    Parameters
    ----------
    root : Path
        Folder for the socket, runtime dir, HOME, script and log.
    rate, channels : int
        The sink's (and so its monitor's) sample spec.
    """

    def __init__(self, root: Path, *, rate: int = RATE, channels: int = CHANNELS) -> None:
        self.root = Path(root)
        self.rate = rate
        self.channels = channels
        self.socket = self.root / "native"
        self.log = self.root / "pulseaudio.log"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for clients (pactl, paplay, PortAudio) of this server."""
        return {
            **os.environ,
            "PULSE_SERVER": f"unix:{self.socket}",
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "HOME": str(self.root / "home"),
        }

    def start(self, *, timeout_s: float = 20.0) -> "PulseServer":
        for sub in ("run", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        script = self.root / "default.pa"
        script.write_text(
            f"load-module module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels} "
            f"sink_properties=device.description={SINK}\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )
        # -n: no default script; --system=false and our own HOME/XDG_RUNTIME_DIR:
        # a per-user daemon even as root (it only warns); no idle exit.
        cmd = ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--system=false", "--exit-idle-time=-1",
               "--disallow-exit", "--use-pid-file=false", "--log-target=stderr", "--log-level=warning"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            ok = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=10).returncode == 0
            if ok:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not answer within {timeout_s} s: {self.log.read_text()[-2000:]}")

    def play(self, path: str | Path, *, wait: bool = True) -> subprocess.Popen:
        """Play a file into the sink (paplay decodes it with libsndfile)."""
        proc = subprocess.Popen(["paplay", f"--device={SINK}", str(path)], env=self.env)
        if wait:
            if proc.wait(timeout=3600) != 0:
                raise RuntimeError(f"paplay {path} failed with {proc.returncode}")
        return proc

    def kill(self) -> None:
        """Kill the daemon at once (a device that disappears)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> "PulseServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
