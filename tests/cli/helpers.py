"""Shared checks for the command-line tests."""

from __future__ import annotations

import subprocess


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A refused request: exit code 1, no traceback, exactly one ``error:`` line (returned)."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]
