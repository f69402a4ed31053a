"""Lets `python -m monitor` run the command line."""

from __future__ import annotations

from monitor.cli import main

raise SystemExit(main())
