"""Shared entry-point plumbing: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (params, data, location): reported as one line, exit code 2."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; turn :class:`UserError` / ``ValueError`` into ``error: ...`` and exit 2."""
    try:
        main()
    except (UserError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
