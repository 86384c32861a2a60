"""Console-script entry points: ``audioclf`` here, ``audioclf-live`` in :func:`live.main`.

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
    guarded_main("audioclf_cli.main")


def guarded_main(module: str) -> None:
    """Import ``module`` and call its ``main()``; Ctrl-C during the import is one line and exit 130."""
    import importlib

    try:
        main = importlib.import_module(module).main
        from audioclf_core.storage import bound_s3_waits

        bound_s3_waits()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    main()
