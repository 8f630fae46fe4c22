"""Shared entry-point plumbing: each stage's command line, and user errors as one line and a non-zero exit."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

# The machine, not the code: no permission, read-only or full filesystem, over quota.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class UserError(Exception):
    """Bad input from the user (params, data, location): reported as one line, exit code 2."""


class StageParser(argparse.ArgumentParser):
    """argparse with a bad argument reported as one line (``error: ...``, as every other user error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def stage_parser(module: str, doc: str | None) -> StageParser:
    """The parser of ``python -m <module>``: the module's docstring as help, and ``--params``."""
    parser = StageParser(
        prog=f"python -m {module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; turn bad input into ``error: ...`` on one line and exit 2.

    Bad input is :class:`UserError`, ``ValueError`` (``DataError``, ``ParamsError``, a corrupt file), a
    missing file and a connection that failed; a file the stage may not write (read-only, full disk) is one
    line naming it, exit 1. Other exceptions are bugs and keep their traceback.
    """
    try:
        main()
    except (UserError, ValueError, FileNotFoundError, ConnectionError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = exc.filename if exc.filename is not None else "a file"
        print(f"error: {where}: {exc.strerror}", file=sys.stderr)
        sys.exit(1)


def run_command(main: Callable[[Sequence[str]], None]) -> None:
    """A stage's ``__main__``: :func:`run` on its command-line arguments (``--help`` exits first)."""
    run(lambda: main(sys.argv[1:]))
