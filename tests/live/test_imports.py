"""The sidecar starts fast: no Prefect ever, and no TensorFlow or PortAudio before they are needed."""

from __future__ import annotations

import subprocess
import sys


def test_the_live_cli_imports_neither_prefect_nor_tensorflow_nor_sounddevice():
    code = (
        "import sys\n"
        "import live.app, live.session, live.processing, live.outputs, live.inference, live.sources, live.devices\n"
        "print(','.join(m for m in ('prefect', 'tensorflow', 'keras', 'sounddevice') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "", f"importing the sidecar pulled in: {out.stdout.strip()}"


def test_the_core_does_not_import_the_sidecar():
    code = "import sys, audioclf_core.pipeline, audioclf_core.segment\nprint('live' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
