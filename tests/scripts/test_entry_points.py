"""The project's scripts refuse a bad request in one line, before any work, and never delete what is not theirs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, timeout=300, cwd=cwd)


def last_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_setup_takes_test_or_nothing_and_explains_itself():
    done = run("bash", "scripts/setup.sh", "--help")
    assert done.returncode == 0 and "--test" in done.stdout
    for args in (["--tset"], ["--test", "extra"]):
        done = run("bash", "scripts/setup.sh", *args)
        assert done.returncode == 2 and done.stderr.startswith("setup: ")


@pytest.mark.parametrize("args, code, message", [
    (["--jobs", "0"], 2, "--jobs 0: must be at least 1"),
    (["--clip-s", "0"], 2, "--clip-s 0.0: must be at least 0.5"),
    (["--rate", "0"], 2, "invalid choice: 0"),
    (["--out", "{file}/corpus"], 1, "cannot write the corpus folder"),
])
def test_build_corpus_refuses_before_it_installs_or_reads_anything(tmp_path, args, code, message):
    (tmp_path / "file").write_text("")
    done = run(PY, "scripts/build_corpus.py", "--task", "smn", "--no-install",
               *[a.replace("{file}", str(tmp_path / "file")) for a in args])
    assert done.returncode == code and message in last_line(done)


def test_make_samples_refuses_an_output_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    done = run(PY, "scripts/make_samples.py", "--no-install", "--out", str(tmp_path / "file" / "samples"))
    assert done.returncode == 1 and "cannot write the samples folder" in last_line(done)


def test_the_placeholder_script_replaces_only_a_placeholder(tmp_path):
    other = tmp_path / "digits"
    shutil.copytree(ROOT / "audioclf_core" / "bundles" / "digits", other)
    before = sorted(p.name for p in other.iterdir())
    done = run(PY, "scripts/build_placeholder_bundle.py", "--out", str(other), "--force")
    assert done.returncode == 1 and "holds another bundle" in last_line(done)
    assert sorted(p.name for p in other.iterdir()) == before


@pytest.mark.parametrize("script", ["benchmarks/bench_segment.py", "benchmarks/bench_throughput.py"])
def test_a_benchmark_checks_where_its_results_go_before_it_runs(tmp_path, script):
    (tmp_path / "file").write_text("")
    done = run(PY, script, "--results", str(tmp_path / "file" / "RESULTS.md"))
    assert done.returncode == 2 and "argument --results" in last_line(done) and "is a file" in last_line(done)


def test_the_reference_recipe_refuses_a_bad_model_in_one_line(tmp_path):
    done = run(PY, "benchmarks/reference_recipe.py", str(ROOT / "samples" / "call-001.wav"), "--out",
               str(tmp_path / "rows.csv"), "--model", "no-such-model")
    assert done.returncode == 1 and last_line(done).startswith("error: no model bundle 'no-such-model'")
