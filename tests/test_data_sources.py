"""Fetching from a local path, a real HTTP server and moto's S3 server on 127.0.0.1: resume, restart,
checksums, the content-addressed cache, and one clear error for each kind of bad location."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from anytime.data import DataError, fetch_file, fetch_into, read_dataset
from tests.fixtures import http as http_fixtures
from tests.fixtures import s3 as s3_fixtures
from tests.fixtures.datasets import make_tar, write_cifar, write_mnist
from tests.fixtures.http import HttpServer, serve_directory
from tests.fixtures.s3 import S3Endpoint

s3_server = s3_fixtures.s3_server
http_server = http_fixtures.http_server

PAYLOAD = bytes(range(256)) * 2000  # 512 kB: several chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_file(cache: Path, url: str) -> Path:
    """Where an interrupted download of ``url`` is kept (mirrors the cache layout)."""
    return cache / "partial" / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob.bin").write_bytes(PAYLOAD)
    return root


def test_http_download_verified_and_cached(www: Path, tmp_path: Path) -> None:
    with serve_directory(www) as server:
        url = f"{server.url}/blob.bin"
        path = fetch_file(url, tmp_path / "cache", sha256=sha(PAYLOAD))
        assert path.read_bytes() == PAYLOAD
        assert path == tmp_path / "cache" / "sha256" / sha(PAYLOAD)
        fetch_file(url, tmp_path / "cache", sha256=sha(PAYLOAD))
        assert len(server.requests) == 1  # the second call is served from the cache


def test_http_interrupted_download_resumes_with_range(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serve_directory(www, cut_after=100_000) as server:
        url = f"{server.url}/blob.bin"
        with pytest.raises(DataError, match=r"interrupted .* run again to resume"):
            fetch_file(url, cache)
    assert part_file(cache, url).stat().st_size == 100_000
    server.cut_after = None
    with serve_directory(www) as server2:
        url2 = f"{server2.url}/blob.bin"
        part_file(cache, url).rename(part_file(cache, url2))
        part_file(cache, url).with_suffix(".validator").rename(
            part_file(cache, url2).with_suffix(".validator")
        )
        path = fetch_file(url2, cache, sha256=sha(PAYLOAD))
        assert server2.requests == [("/blob.bin", "bytes=100000-")]
    assert path.read_bytes() == PAYLOAD
    assert not part_file(cache, url2).exists()


def test_http_server_without_range_restarts_cleanly(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serve_directory(www, ranges=False) as server:
        url = f"{server.url}/blob.bin"
        part = part_file(cache, url)
        part.parent.mkdir(parents=True)
        part.write_bytes(b"stale prefix from another version")
        part.with_suffix(".validator").write_text('"old"')
        path = fetch_file(url, cache, sha256=sha(PAYLOAD))
    assert path.read_bytes() == PAYLOAD


def test_stale_partial_with_checksum_mismatch_restarts_once(www: Path, tmp_path: Path) -> None:
    """A resumed prefix that turns out wrong is discarded and downloaded again from byte 0."""
    cache = tmp_path / "cache"
    with serve_directory(www) as server:
        url = f"{server.url}/blob.bin"
        part = part_file(cache, url)
        part.parent.mkdir(parents=True)
        part.write_bytes(b"\xff" * 1000)
        path = fetch_file(url, cache, sha256=sha(PAYLOAD))
        assert [r[1] for r in server.requests] == [None]  # no validator kept: no Range, plain GET
    assert path.read_bytes() == PAYLOAD


def test_http_checksum_mismatch_leaves_nothing(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with (
        serve_directory(www) as server,
        pytest.raises(DataError, match=r"checksum mismatch: expected sha256 0+"),
    ):
        fetch_file(f"{server.url}/blob.bin", cache, sha256="0" * 64)
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_http_404_and_unreachable(www: Path, tmp_path: Path) -> None:
    with serve_directory(www) as server, pytest.raises(DataError, match="HTTP 404"):
        fetch_file(f"{server.url}/missing.bin", tmp_path / "cache")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(DataError, match=rf"http://127\.0\.0\.1:{port}/x\.tar: cannot reach"):
            fetch_file(f"http://127.0.0.1:{port}/x.tar", tmp_path / "cache")


def test_fetch_into_mnist_files_over_http_reads_back(tmp_path: Path) -> None:
    write_mnist(tmp_path / "www")
    files = sorted(p.name for p in (tmp_path / "www").iterdir())
    with serve_directory(tmp_path / "www") as server:
        fetch_into(server.url + "/", tmp_path / "raw", files=files, cache_dir=tmp_path / "cache")
    raw = read_dataset("mnist", tmp_path / "raw")
    assert len(raw.splits["train"]) == 30


def test_local_archive_path_and_checksum(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-bin", classes=10, kind="binary")
    archive = make_tar(tmp_path / "cifar-10-batches-bin", tmp_path / "cifar-10-binary.tar.gz")
    digest = sha(archive.read_bytes())
    fetch_into(str(archive), tmp_path / "raw", sha256={archive.name: digest}, cache_dir=tmp_path / "c")
    assert len(read_dataset("cifar10", tmp_path / "raw").splits["test"]) == 10
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_into(str(archive), tmp_path / "raw2", sha256={archive.name: "1" * 64}, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="no such file"):
        fetch_into(str(tmp_path / "nope.tar"), tmp_path / "raw3", cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="unsupported location 'ftp://x/y'"):
        fetch_into("ftp://x/y", tmp_path / "raw4", cache_dir=tmp_path / "c")


def test_s3_download_resume_and_cache(s3_server: S3Endpoint, tmp_path: Path) -> None:
    uri = s3_server.put(s3_server.make_bucket("datasets"), "cifar/blob.bin", PAYLOAD)
    cache = tmp_path / "cache"
    part = part_file(cache, uri)
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:200_000])
    etag = s3_server.client().head_object(Bucket="datasets", Key="cifar/blob.bin")["ETag"]
    part.with_suffix(".validator").write_text(etag)
    path = fetch_file(uri, cache, sha256=sha(PAYLOAD), endpoint_url=s3_server.url)
    assert path.read_bytes() == PAYLOAD
    s3_server.client().delete_object(Bucket="datasets", Key="cifar/blob.bin")
    assert fetch_file(uri, cache, sha256=sha(PAYLOAD)).read_bytes() == PAYLOAD  # cache hit, no S3 call


def test_s3_changed_object_restarts_instead_of_splicing(s3_server: S3Endpoint, tmp_path: Path) -> None:
    uri = s3_server.put(s3_server.make_bucket("data"), "blob.bin", PAYLOAD)
    cache = tmp_path / "cache"
    part = part_file(cache, uri)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 5000)
    part.with_suffix(".validator").write_text('"etag-of-an-older-version"')
    assert fetch_file(uri, cache).read_bytes() == PAYLOAD  # endpoint from AWS_ENDPOINT_URL


def test_s3_missing_bucket_key_and_credentials(
    s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_server.make_bucket("present")
    with pytest.raises(DataError, match="S3 bucket 'absent' does not exist"):
        fetch_file("s3://absent/x.tar", tmp_path / "c")
    with pytest.raises(DataError, match="no such object in bucket 'present'"):
        fetch_file("s3://present/x.tar", tmp_path / "c")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(DataError, match="no AWS credentials found"):
        fetch_file("s3://present/x.tar", tmp_path / "c")
    assert not any(p.is_file() and p.suffix != ".validator" for p in (tmp_path / "c").rglob("*"))


def test_s3_archive_into_raw_dir(s3_server: S3Endpoint, tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-100-python", classes=100, kind="python")
    archive = make_tar(tmp_path / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    uri = s3_server.put(s3_server.make_bucket("ml-data"), "cifar-100-python.tar.gz", archive.read_bytes())
    fetch_into(uri, tmp_path / "raw", cache_dir=tmp_path / "cache", endpoint_url=s3_server.url)
    raw = read_dataset("cifar100", tmp_path / "raw")
    assert len(raw.class_names) == 100 and len(raw.splits["train"]) == 24


def test_http_server_fixture_is_range_capable(http_server: HttpServer) -> None:
    """The shared fixture itself: a ranged GET returns exactly the tail."""
    import urllib.request

    (http_server.root / "f").write_bytes(b"0123456789")
    req = urllib.request.Request(f"{http_server.url}/f", headers={"Range": "bytes=4-"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 206 and resp.read() == b"456789"


def test_stalled_download_ends_and_stays_resumable(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serve_directory(www, trickle_after=1000, trickle_s=2.0) as server:
        url = f"{server.url}/blob.bin"
        started = time.monotonic()
        with pytest.raises(
            DataError, match=r"blob\.bin: download stalled \(no bytes for 0.5 s\) at 1000 bytes"
        ):
            fetch_file(url, cache, stall_timeout_s=0.5)
        assert time.monotonic() - started < 10
        server.trickle_after = None
        path = fetch_file(url, cache, sha256=sha(PAYLOAD), stall_timeout_s=0.5)
        assert server.requests[-1] == ("/blob.bin", "bytes=1000-")  # resumed, not restarted
    assert path.read_bytes() == PAYLOAD


def test_sha256_for_a_folder_is_refused_not_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    with pytest.raises(
        DataError, match=r"images: is a folder, and sha256 checks files: list them in data\.files"
    ):
        fetch_into(str(folder), tmp_path / "raw", sha256={"images": "0" * 64}, cache_dir=tmp_path / "c")
    fetch_into(
        str(folder), tmp_path / "raw", files=["a.png"], sha256={"a.png": sha(b"x")}, cache_dir=tmp_path / "c"
    )
    assert (tmp_path / "raw" / "a.png").read_bytes() == b"x"
