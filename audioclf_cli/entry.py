"""The console scripts, ``audioclf`` and ``audioclf-live``.

Each imports its command line inside the same guard that its ``main`` keeps around the command:
the imports take about a second (numpy, pandas, rich, the core), and Ctrl-C in that second ends
with ``interrupted`` and exit code 130, as it does later, not with a traceback. Nothing is
imported here at module level.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def audioclf() -> None:
    """``audioclf``: :func:`audioclf_cli.main.main`."""
    try:
        from audioclf_cli.main import main
    except KeyboardInterrupt:
        _interrupted()
    main()


def audioclf_live() -> None:
    """``audioclf-live``: :func:`live.app.main`."""
    try:
        from live.app import main
    except KeyboardInterrupt:
        _interrupted()
    main()


def _interrupted() -> None:
    print("interrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
