"""Run the command line: `python -m vlmlib --help`."""

from vlmlib.cli import main

raise SystemExit(main())
