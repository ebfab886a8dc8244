# Lets `python -m holysheep_trio` run the command line.
from __future__ import annotations

import sys

try:
    from holysheep_trio.cli import main

    code = main()
except KeyboardInterrupt:
    # A Ctrl-C in the instant before main() has its own guard up (it maps every later one).
    from holysheep_trio.cli import _interrupted_exit_code

    code = _interrupted_exit_code(sys.argv[1:])
raise SystemExit(code)
