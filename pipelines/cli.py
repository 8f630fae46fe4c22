"""Shared entry-point plumbing: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (params, data, location): reported as one line, exit code 2."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; turn bad input into ``error: ...`` on one line and exit 2.

    Bad input is :class:`UserError`, ``ValueError`` (``DataError``, ``ParamsError``), a missing file and a
    connection that failed; other exceptions are bugs and keep their traceback.
    """
    try:
        main()
    except (UserError, ValueError, FileNotFoundError, ConnectionError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
