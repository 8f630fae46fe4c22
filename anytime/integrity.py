"""Checksums of saved artifacts, and loading them back without trusting their bytes.

A directory of outputs (a trained run, an epoch checkpoint) carries ``checksums.json``: the sha256 of every
file in it, whatever files it holds. Readers verify it before use, so a truncated or altered file is named
in one line instead of being loaded (or, worse, silently passed on as current). Arrays load with
``allow_pickle=False``: a file holding pickled objects is refused, never loaded "unsafely".
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKSUMS_FILE = "checksums.json"
NPY_MAGIC = b"\x93NUMPY"
_CHUNK = 1 << 20


class CorruptFileError(ValueError):
    """A saved file is missing, altered or unreadable: the message names it, on one line."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (model files and arrays may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUMS_FILE)


def write_checksums(directory: str | Path) -> dict[str, str]:
    """Record the sha256 of every file under ``directory`` (relative POSIX paths) in its checksums file."""
    directory = Path(directory)
    sums = {p.relative_to(directory).as_posix(): sha256_file(p) for p in _files(directory)}
    (directory / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
    return sums


def verify_checksums(directory: str | Path) -> None:
    """Raise :class:`CorruptFileError` naming the first file of ``directory`` that does not match its
    checksums file (missing, changed, or not recorded), or the checksums file itself when unreadable."""
    directory = Path(directory)
    listing = directory / CHECKSUMS_FILE
    try:
        sums = json.loads(listing.read_text())
        if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
            raise ValueError("not a mapping of file to sha256")
    except FileNotFoundError:
        raise CorruptFileError(f"{listing}: missing (outputs written without checksums)") from None
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{listing}: unreadable ({_short(exc)})") from None
    present = {p.relative_to(directory).as_posix() for p in _files(directory)}
    for name, expected in sorted(sums.items()):
        path = directory / name
        if name not in present:
            raise CorruptFileError(f"{path}: missing")
        if sha256_file(path) != expected:
            raise CorruptFileError(f"{path}: corrupt (sha256 differs from {CHECKSUMS_FILE})")
    if extra := sorted(present - set(sums)):
        raise CorruptFileError(f"{directory / extra[0]}: not listed in {CHECKSUMS_FILE}")


def _short(exc: BaseException, limit: int = 80) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_array(path: str | Path, *, mmap_mode: Any = None) -> np.ndarray:
    """``np.load`` of a plain array (never pickled objects); a damaged file is one line naming it."""
    with open(path, "rb") as fh:
        if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise CorruptFileError(f"{path}: not a .npy array (no NumPy header)")
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CorruptFileError(f"{path}: holds pickled objects, not a plain array: refused") from None
        raise CorruptFileError(f"{path}: not a readable .npy array ({_short(exc)})") from None
    except (OSError, EOFError) as exc:
        raise CorruptFileError(f"{path}: not a readable .npy array ({_short(exc)})") from None


def load_weights(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``; a truncated or foreign file is one line naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:  # weights_only refused it: never advise loading it unsafely
        raise CorruptFileError(f"{path}: holds objects beyond tensors and plain data: refused") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(f"{path}: not a readable torch file ({_short(exc)})") from None
