"""What the benchmark scripts share: tables, the machine's description, and ``RESULTS.md``.

``benchmarks/RESULTS.md`` holds the latest tables of every benchmark. Each
script owns one section of it, between ``<!-- section: NAME -->`` and
``<!-- end: NAME -->``, and replaces only that section, so the file stays one
current report whichever script ran last. The ``machine`` section (cores, RAM,
CPU, versions) is refreshed by every script; each section also says when it
was made and how busy the machine was then.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
# Sections in the order the file shows them; a section not listed goes last.
SECTIONS = ("machine", "throughput", "segmentation", "memory", "orchestration", "live", "classify")
PREAMBLE = """# audioclf benchmarks

The latest tables of every script in `benchmarks/` (see [README.md](README.md) for what each one
measures and the command that runs it). Each script rewrites only its own section. Every section
says when it was made and the load average at the time: a busy machine distorts seconds. Each
figure is compared with a reference measured in the same run. Compare those ratios between runs,
not seconds across machines.
"""
_SECTION_RE = re.compile(r"<!-- section: ([a-z0-9-]+) -->\n(.*?)<!-- end: \1 -->\n?", re.S)


# --------------------------------------------------------------------------------------
# Tables: one definition, rendered as plain text for the terminal and Markdown for the file
# --------------------------------------------------------------------------------------


@dataclass
class Table:
    """A titled table with optional notes below it."""

    title: str
    headers: Sequence[str]
    rows: list[Sequence[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _cells(self) -> list[list[str]]:
        return [[fmt(v) for v in row] for row in self.rows]

    def _numeric(self, cells: list[list[str]]) -> list[bool]:
        """Columns to right-align: all numbers, and not the first (row labels)."""
        return [i > 0 and all(_is_number(r[i]) for r in cells) for i in range(len(self.headers))]

    def text(self) -> str:
        """Aligned plain text: numbers right-aligned, words left-aligned."""
        cells = self._cells()
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.headers)]
        numeric = self._numeric(cells)

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

        out = [f"== {self.title} ==", line(self.headers), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in cells]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table under a level-3 heading."""
        cells = self._cells()
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        out.append("|" + "|".join("---:" if num else "---" for num in self._numeric(cells)) + "|")
        out += ["| " + " | ".join(r) + " |" for r in cells]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out)


# The memory target, shared by bench_memory.py and bench_classify.py: at most 1 GB (as the target
# states it, 10^9 bytes) and flat, i.e. ten times the audio in one recording costs at most a
# quarter more memory (what may grow is the result rows and the allocator's slack, not the audio).
MEMORY_LIMIT_MIB = 1e9 / 2**20
FLAT_RATIO = 1.25


def memory_verdict(*, peak_mib: float, short_mib: float, long_mib: float, short_h: float, long_h: float) -> str:
    """``Target: ...: met (...)``: both halves of the memory target judged, with the figures."""
    ratio = long_mib / short_mib
    flat, within = ratio <= FLAT_RATIO, peak_mib <= MEMORY_LIMIT_MIB
    return (f"Target: at most 1 GB ({MEMORY_LIMIT_MIB:,.0f} MiB) and flat ({long_h / short_h:g}x the audio, at most "
            f"{FLAT_RATIO:g}x the memory): {'met' if flat and within else 'NOT met'} (highest {peak_mib:,.0f} MiB: "
            f"{'within' if within else 'OVER'}; {long_h:g} h / {short_h:g} h = {ratio:.2f}: {'flat' if flat else 'NOT flat'}).")


def fmt(v: object) -> str:
    """A cell: floats to three significant figures or so, NaN and None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:  # NaN: not measured
            return "–"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", "").rstrip("x%"))
        return True
    except ValueError:
        return s in ("–", "")


def rt(audio_s: float, wall_s: float) -> str:
    """Real-time factor as a cell: audio seconds per wall second."""
    return f"{audio_s / wall_s:,.0f}x" if wall_s > 0 else "–"


# --------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------

VERSIONED = ("numpy", "scipy", "tensorflow", "keras", "ai-edge-litert", "soxr", "soundfile", "pandas", "pyarrow",
             "prefect", "dask", "pydub", "librosa")


def load_average() -> str:
    """1, 5 and 15-minute load averages: other work on the machine makes timings noisy."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def busy_warning() -> str | None:
    """A warning line when the 1-minute load is over half the cores, else None."""
    load = os.getloadavg()[0]
    if load > 0.5 * cores():
        return (f"warning: the machine is busy (load {load:.1f} on {cores()} cores): timings will be noisy; "
                "ratios within one table suffer least")
    return None


def version(dist: str) -> str:
    """Installed version of a distribution without importing it (TensorFlow takes seconds)."""
    from importlib import metadata

    names = [dist] + ([f"{dist}-cpu", f"{dist}_cpu", f"{dist}-intel"] if dist == "tensorflow" else [])
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name) + ("" if name == dist else f" ({name})")
    return "not installed"


def machine_table(*, with_load: bool = True) -> Table:
    """CPU, cores, memory, OS and the versions of what does the work (and the load now)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = float("nan")
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 2**20
    rows = [
        ("cores (nproc)", str(cores())),
        ("CPU", cpu),
        ("RAM", f"{ram_gib:.1f} GiB"),
        ("OS", platform.platform()),
        ("python", platform.python_version()),
    ]
    if with_load:
        rows.append(("load average at start", load_average()))
    rows += [(dist, version(dist)) for dist in VERSIONED]
    return Table("Machine and versions", ["item", "value"], rows)


# --------------------------------------------------------------------------------------
# RESULTS.md
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    """When and how a benchmark ran: the header of its section."""

    command: str
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    load_start: str = field(default_factory=load_average)

    def header(self, *, took_s: float) -> str:
        return (f"Generated by `{self.command}` on {self.started:%Y-%m-%d %H:%M} UTC in {took_s / 60:.1f} min; "
                f"load average {self.load_start} at the start, {load_average()} at the end, on {cores()} cores.")


def begin(script: str, argv: Sequence[str] | None) -> Run:
    """Start benchmark ``script`` (run with ``argv``, or the command line's when None): its
    :class:`Run`, with the machine table and a warning if the machine is busy printed first."""
    run = Run(command_line(script, sys.argv[1:] if argv is None else argv))
    print(machine_table().text(), "\n", flush=True)
    if warning := busy_warning():
        print(warning, flush=True)
    return run


def command_line(script: str, argv: Sequence[str]) -> str:
    """How a script was run, as a user would type it from the repository root."""
    return " ".join([".venv/bin/python", f"benchmarks/{script}", *argv])


def update_section(name: str, title: str, body: str, *, path: Path = RESULTS_MD) -> None:
    """Replace section ``name`` of ``path`` (created if missing), keeping every other section.

    Sections are kept in the order of :data:`SECTIONS`; text outside the
    markers other than the preamble is not kept, so edit inside a section.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    found = {m.group(1): m.group(2) for m in _SECTION_RE.finditer(text)}
    first = _SECTION_RE.search(text)
    preamble = text[: first.start()] if first else (text or PREAMBLE)
    found[name] = f"## {title}\n\n{body.strip()}\n"
    order = [s for s in SECTIONS if s in found] + [s for s in found if s not in SECTIONS]
    parts = [preamble.rstrip() + "\n"]
    parts += [f"<!-- section: {s} -->\n{found[s].rstrip()}\n\n<!-- end: {s} -->\n" for s in order]
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)


def writable_file(text: str) -> Path:
    """An argparse ``type`` for output files (``--results``, ``--out``): refused at parse time,
    in one line, if the file could not be written, not after the benchmark has run."""
    import argparse

    from audioclf_core.errors import OutputError
    from audioclf_core.storage import check_local_file

    try:
        return check_local_file(text, what="output file")
    except OutputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def write_results(name: str, title: str, tables: Sequence[Table], *, run: Run, took_s: float,
                  path: Path = RESULTS_MD, intro: str = "") -> None:
    """Write a benchmark's tables as its section, and refresh the machine section."""
    body = "\n\n".join([run.header(took_s=took_s)] + ([intro] if intro else []) + [t.markdown() for t in tables])
    update_section(name, title, body, path=path)
    machine = machine_table(with_load=False)
    machine.notes.append(f"Described by the `{name}` run of {run.started:%Y-%m-%d %H:%M} UTC.")
    update_section("machine", "Machine", machine.markdown().split("\n", 2)[2], path=path)
