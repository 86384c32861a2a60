"""Helpers of the live sidecar's tests: run ``audioclf-live``, read what it wrote."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "samples"
TRUTH = json.loads((SAMPLES / "truth.json").read_text())
NAMES = sorted(TRUTH["recordings"])
_SCRIPT = Path(sys.executable).with_name("audioclf-live")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "live"]


def run_cli(args: list[str], *, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


class LiveProcess:
    """``audioclf-live`` running in the background, its stderr collected line by line."""

    def __init__(self, args: list[str], *, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out: list[str] = []
        self._out_reader = threading.Thread(target=lambda: self._out.extend(self.proc.stdout), daemon=True)
        self._out_reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, text: str, *, timeout: float = 60) -> float:
        """Wait for a stderr line containing ``text``; return the time it was seen."""
        deadline = time.monotonic() + timeout
        with self._new:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {text!r} from audioclf-live; stderr: {self.lines}")
                self._new.wait(min(left, 0.2))
        return time.monotonic()

    def signal(self, sig: int = signal.SIGINT) -> None:
        self.proc.send_signal(sig)

    def finish(self, *, timeout: float = 60) -> tuple[int, str]:
        """Wait for the exit; return the exit code and the whole stderr."""
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        self._out_reader.join(timeout=10)
        return rc, "\n".join(self.lines)

    @property
    def stdout(self) -> str:
        return "".join(self._out)


def mix_truth(name: str) -> list[tuple[float, float]]:
    """Sound in the mono mix of a sample: the union of its channels' parts."""
    spans = sorted((p["start_s"], p["end_s"]) for p in TRUTH["parts"] if p["recording"] == name)
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a JSONL file, parsed (a broken line fails the test)."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "the last JSONL line is incomplete"
    return [json.loads(line) for line in text.splitlines()]


def one_error_line(stderr: str) -> str:
    """The stderr of a refused request: exactly one ``error:`` line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]
