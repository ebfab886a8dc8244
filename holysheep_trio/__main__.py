# Lets `python -m holysheep_trio` run the command line.
from __future__ import annotations

from holysheep_trio.cli import main

raise SystemExit(main())
