"""The dependency direction: the core imports no orchestration, sound card or CLI code."""

import subprocess
import sys

import pytest


def test_core_imports_neither_prefect_nor_sounddevice_nor_typer_nor_tensorflow():
    code = (
        "import sys\n"
        "import audioclf_core, audioclf_core.pipeline, audioclf_core.bundle, audioclf_core.results, audioclf_core.audio_io\n"
        "bad = [m for m in ('prefect', 'sounddevice', 'typer', 'tensorflow', 'keras', 'librosa', 'pydub') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "", f"the core pulled in: {out.stdout.strip()}"


def test_cli_does_not_import_prefect_nor_the_sidecar():
    # the sidecar uses the command lines' shared console and entry modules; they never use it.
    # Evaluation (scipy.stats, about 50 MiB and half a second) loads only where a command needs it:
    # every classify and run would pay for it at start-up.
    code = ("import sys, audioclf_cli.main, audioclf_cli.entry\n"
            "print([m for m in ('prefect', 'live', 'audioclf_core.evaluation', 'scipy.stats') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


INTERRUPT_ON_IMPORT = """
import importlib.abc, importlib.metadata, os, signal, sys

class CtrlC(importlib.abc.MetaPathFinder):
    # a Ctrl-C that lands while the command line imports its modules (about a second of it)
    def find_spec(self, name, path=None, target=None):
        if name == "rich.console":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = [sys.argv[1], "--help"]
script = importlib.metadata.entry_points(group="console_scripts")[sys.argv[0]]
sys.exit(script.load()())
"""


@pytest.mark.parametrize("script", ["audioclf", "audioclf-live"])
def test_ctrl_c_while_the_command_line_imports_ends_in_one_line(script):
    # the installed console script, loaded and run as its wrapper does
    out = subprocess.run([sys.executable, "-c", INTERRUPT_ON_IMPORT, script], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stderr, out.stdout) == (130, "interrupted\n", "")
