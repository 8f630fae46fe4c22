"""What a Ray stage prints: a line saying what it will do, live progress, its summary; Ray's output in a log.

A Ray driver prints a great deal that a user of the pipeline does not read: its workers' and actors' output
(Train and Tune controllers, ``TrainingReport(...)`` dumps, checkpoint notices), raylet warnings, C++ core
worker errors and Tune's status tables. Within :func:`stage_console` the stage's own file descriptors 1 and 2
(so C++ and child-process output too) go to ``outputs/logs/<stage>.log``, which neither Git nor DVC tracks,
and the stage's lines go to the terminal through :func:`say`, :func:`warn` and :func:`bar`. Ray keeps every
process's own log in its session directory besides (``ray_logs`` names it).

``--verbose`` or ``ANYTIME_VERBOSE=1`` leaves everything on the terminal, as Ray prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

from pipelines.cli import UserError
from pipelines.paths import LOGS_DIR

VERBOSE_ENV = "ANYTIME_VERBOSE"
TAIL_LINES = 15  # of the log, printed when a stage fails


class _Terminal:
    """Where the stage's own lines go: the terminal's streams while Ray's output is sent to the log."""

    out: TextIO | None = None
    err: TextIO | None = None
    log: Path | None = None


_terminal = _Terminal()


def verbose_requested(flag: bool = False) -> bool:
    """``--verbose`` given, or ``$ANYTIME_VERBOSE`` set to anything but empty or ``0``."""
    return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"print Ray's own output (its workers', controllers', tables) too; or set {VERBOSE_ENV}=1",
    )


def _out() -> TextIO:
    return _terminal.out or sys.stdout


def _err() -> TextIO:
    return _terminal.err or sys.stderr


def log_path() -> Path | None:
    """The stage log, while Ray's output goes there."""
    return _terminal.log


def say(line: str) -> None:
    """One line for the user on stdout (above the progress bars, which tqdm redraws below it)."""
    tqdm.write(line, file=_out())
    _out().flush()


def warn(line: str) -> None:
    """One line on stderr for something that matters, pointing to the log for the details."""
    where = f" (details in {_terminal.log})" if _terminal.log else ""
    tqdm.write(f"{line}{where}", file=_err())
    _err().flush()


def live() -> bool:
    """True when progress bars can redraw in place (a terminal); otherwise a line per finished step."""
    return _err().isatty()


def bar(**kwargs) -> tqdm:
    """A tqdm progress bar on the terminal; off when it is not one (a pipe or a CI log)."""
    return tqdm(file=_err(), disable=not live(), dynamic_ncols=True, **kwargs)


def brief(exc: BaseException, width: int = 200) -> str:
    """An exception in one line: its type and the last line of its message (a worker's error ends there)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def _tail(path: Path, lines: int) -> list[str]:
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - 64 * 1024))
        text = file.read().decode(errors="replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


@contextlib.contextmanager
def stage_console(stage: str, *, verbose: bool = False) -> Iterator[None]:
    """Send this process's output to ``outputs/logs/<stage>.log`` (unless verbose) and say so in one line.

    When the stage fails with anything but bad input (which is one line of its own) or Ctrl-C, the log's last
    lines and its path follow on stderr.
    """
    if verbose_requested(verbose):
        yield
        return
    path = LOGS_DIR / f"{stage}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _terminal.out = os.fdopen(os.dup(1), "w", buffering=1)
    _terminal.err = os.fdopen(os.dup(2), "w", buffering=1)
    _terminal.log = path
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # plain text in the log
    with path.open("w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    say(f"{stage}: Ray's output goes to {path} (ANYTIME_VERBOSE=1 or --verbose: to the terminal)")
    failed = False
    try:
        yield
    except SystemExit as exc:
        failed = exc.code not in (0, None, 2, 130)  # 2: bad input, said in one line; 130: interrupted
        raise
    except (KeyboardInterrupt, UserError, ValueError, FileNotFoundError, ConnectionError):
        raise  # bad input: one line of its own (pipelines.cli.run)
    except BaseException:
        failed = True
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)
        for stream in (_terminal.out, _terminal.err):
            stream.close()
        _terminal.out = _terminal.err = _terminal.log = None
        if failed:
            lines = [
                f"{stage}: failed; the last lines of {path}:",
                *("  " + line for line in _tail(path, TAIL_LINES)),
            ]
            print(*lines, sep="\n", file=sys.stderr)
