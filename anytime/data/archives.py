"""Safe archive handling: extraction that refuses members escaping the target, and clear corruption errors.

Archives come from arbitrary locations, so a member like ``../../etc/x`` or an absolute path must fail
loudly instead of writing outside the raw data directory.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from anytime.data.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


def is_archive(path: str | Path) -> bool:
    """True for the tar/zip files :func:`extract` unpacks (plain ``.gz`` files are left as they are)."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


# No real dataset compresses better than this; a larger declared size is a bomb or a lying header.
MAX_COMPRESSION_RATIO = 200


def _check_inside(name: str, dest: Path, label: str) -> None:
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"{label}: member '{name}' escapes the archive's folder; refusing to extract")


def _check_size(total: int, archive: Path, dest: Path, label: str) -> None:
    """Refuse members declaring more bytes than the archive can hold or the disk has room for."""
    limit = archive.stat().st_size * MAX_COMPRESSION_RATIO + (1 << 20)
    if total > limit:
        raise DataError(
            f"{label}: members declare {total} bytes, more than a {archive.stat().st_size}-byte archive "
            "holds; corrupt or a decompression bomb"
        )
    if total > shutil.disk_usage(dest).free:
        raise DataError(f"{label}: members need {total} bytes, more than the free disk space")


def extract(archive: str | Path, dest: str | Path, *, label: str | None = None) -> None:
    """Extract a tar or zip archive into ``dest``; corrupt archives, escaping members and members larger
    than the archive can hold raise DataError naming ``label`` (the user's location; default the path)."""
    archive, dest = Path(archive), Path(dest)
    label = label or str(archive)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_inside(info.filename, dest, label)
                _check_size(sum(i.file_size for i in zf.infolist()), archive, dest, label)
                zf.extractall(dest)
            return
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _check_inside(member.name, dest, label)
                if member.issym() or member.islnk():
                    _check_inside(str(Path(member.name).parent / member.linkname), dest, label)
            _check_size(sum(m.size for m in members if m.isfile()), archive, dest, label)
            # The "data" filter re-checks paths and strips unsafe modes/devices (defence in depth).
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            name = exc.tarinfo.name
            raise DataError(f"{label}: unsafe member '{name}' refused ({type(exc).__name__})") from None
        reason = getattr(exc, "strerror", None) or exc or type(exc).__name__
        raise DataError(f"{label}: corrupt or truncated archive ({reason})") from None


def max_content_bytes(path: Path) -> int:
    """The most bytes ``path`` can honestly hold once opened with :func:`open_maybe_gzip`."""
    size = path.stat().st_size
    return size * MAX_COMPRESSION_RATIO if path.suffix == ".gz" else size


@contextlib.contextmanager
def open_maybe_gzip(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for streaming reads, gunzipped when it ends in ``.gz``; a truncated or corrupt
    file raises DataError naming it (read in bounded pieces, so a gzip bomb never fills memory)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
            yield fh
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path.name}: corrupt or truncated file ({exc or type(exc).__name__})") from None
