"""Archive extraction refuses members that escape the target and reports corrupt archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from anytime.data import DataError
from anytime.data.archives import extract


def _tar_with(path: Path, name: str, data: bytes = b"x", **member: object) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        for key, value in member.items():
            setattr(info, key, value)
        tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt"])
def test_tar_member_escaping_target_is_refused(tmp_path: Path, name: str) -> None:
    archive = _tar_with(tmp_path / "bad.tar.gz", name)
    with pytest.raises(DataError, match="escapes"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_tar_symlink_escaping_target_is_refused(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "link.tar.gz", "data/link", type=tarfile.SYMTYPE, linkname="../../../etc")
    with pytest.raises(DataError, match="escapes"):
        extract(archive, tmp_path / "out")


def test_zip_member_escaping_target_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(DataError, match="escapes"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_truncated_tar_gz_is_reported(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "ok.tar.gz", "data/file.bin", data=bytes(range(256)) * 400)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"ok\.tar\.gz: corrupt or truncated archive"):
        extract(archive, tmp_path / "out")


def test_good_tar_extracts(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "ok.tar.gz", "data/file.bin", data=b"hello")
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out/data/file.bin").read_bytes() == b"hello"
