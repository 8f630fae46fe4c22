"""Safe archive handling: extraction that refuses members escaping the target, and clear corruption errors.

Archives come from arbitrary locations, so a member like ``../../etc/x`` or an absolute path must fail
loudly instead of writing outside the raw data directory.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from pathlib import Path

from anytime.data.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


def is_archive(path: str | Path) -> bool:
    """True for the tar/zip files :func:`extract` unpacks (plain ``.gz`` files are left as they are)."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _check_inside(name: str, dest: Path, archive: Path) -> None:
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"{archive.name}: member '{name}' escapes {dest}; refusing to extract")


def extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar or zip archive into ``dest``; corrupt archives and escaping members raise DataError."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_inside(info.filename, dest, archive)
                zf.extractall(dest)
            return
        with tarfile.open(archive) as tf:
            for member in tf:
                _check_inside(member.name, dest, archive)
                if member.issym() or member.islnk():
                    _check_inside(str(Path(member.name).parent / member.linkname), dest, archive)
            # The "data" filter re-checks paths and strips unsafe modes/devices (defence in depth).
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise DataError(f"{archive.name}: unsafe member refused ({exc})") from None
        reason = exc or type(exc).__name__
        raise DataError(f"{archive.name}: corrupt or truncated archive ({reason})") from None


def read_maybe_gzip(path: str | Path) -> bytes:
    """Whole content of ``path``, gunzipped when it ends in ``.gz``; a truncated gzip raises DataError."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise DataError(f"{path.name}: corrupt or truncated file ({exc or type(exc).__name__})") from None
