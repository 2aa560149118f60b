"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import sys


def print_failures(failures: list[str], header: str) -> None:
    """Report per-file failures on stderr: ``header`` on its own line, then one indented line per failure."""
    print(f"\n{header}", file=sys.stderr)
    for line in failures:
        print(f"  {line}", file=sys.stderr)
