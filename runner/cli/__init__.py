"""The command line: the only place that knows argparse and exit codes (``scenebench``)."""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
