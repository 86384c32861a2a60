"""The dependency direction: the core imports no orchestration, sound card or CLI code."""

import subprocess
import sys


def test_core_imports_neither_prefect_nor_sounddevice_nor_typer_nor_tensorflow():
    code = (
        "import sys\n"
        "import audioclf_core, audioclf_core.pipeline, audioclf_core.bundle, audioclf_core.results, audioclf_core.audio_io\n"
        "bad = [m for m in ('prefect', 'sounddevice', 'typer', 'tensorflow', 'keras', 'librosa', 'pydub') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "", f"the core pulled in: {out.stdout.strip()}"


def test_cli_does_not_import_prefect():
    code = "import sys, audioclf_cli.main\nprint('prefect' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
