"""Getting files from a location: a local path, an ``http(s)://`` URL or ``s3://bucket/key``.

Downloads land in a content-addressed cache (``<cache>/sha256/<digest>``), so a file with a known
checksum is fetched once. Interrupted downloads resume from their ``.part`` file with an HTTP Range
or S3 ranged GET (guarded by the ETag, so a changed object restarts cleanly instead of splicing).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlparse

from tqdm.auto import tqdm

from anytime.data.archives import extract, is_archive
from anytime.data.errors import DataError

CHUNK = 1 << 20
STALL_TIMEOUT_S = 60.0  # a download receiving no bytes for this long ends (resumably)


def location_kind(location: str) -> str:
    """``"s3"``, ``"http"`` or ``"local"``; other URL schemes raise DataError."""
    if location.startswith("s3://"):
        return "s3"
    if location.startswith(("http://", "https://")):
        return "http"
    if "://" in location:
        raise DataError(
            f"unsupported location {location!r}: use a local path, http(s)://... or s3://bucket/key"
        )
    return "local"


def join_location(base: str, name: str) -> str:
    """``base`` + ``/`` + ``name`` for URLs and paths alike."""
    return base.rstrip("/") + "/" + name if location_kind(base) != "local" else str(Path(base) / name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _copy_stream(
    body: BinaryIO | Iterator[bytes], out: BinaryIO, total: int | None, start: int, label: str
) -> None:
    # read1: whatever has arrived, so the socket timeout measures time without any byte (a stall)
    chunks = iter(lambda: body.read1(CHUNK), b"") if hasattr(body, "read1") else body
    with tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=label, disable=None) as bar:
        for chunk in chunks:
            out.write(chunk)
            bar.update(len(chunk))


def _check_complete(part: Path, total: int | None, url: str) -> None:
    if total is not None and part.stat().st_size != total:
        raise DataError(
            f"{url}: download interrupted at {part.stat().st_size} of {total} bytes; run again to resume"
        )


def _http_download(url: str, part: Path, stall_timeout_s: float) -> None:
    validator_file = part.with_suffix(".validator")
    offset = part.stat().st_size if part.exists() else 0
    headers = {}
    if offset and validator_file.exists():
        headers = {"Range": f"bytes={offset}-", "If-Range": validator_file.read_text()}
    try:
        request = urllib.request.Request(url, headers=headers)
        response = urllib.request.urlopen(request, timeout=stall_timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # our partial file is no prefix of this resource: start over
            part.unlink()
            return _http_download(url, part, stall_timeout_s)
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: cannot reach ({getattr(exc, 'reason', exc)})") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if validator:
            validator_file.write_text(validator)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                _copy_stream(response, out, total, offset, Path(url).name)
        except TimeoutError:
            raise DataError(
                f"{url}: download stalled (no bytes for {stall_timeout_s:g} s) at {part.stat().st_size} "
                "bytes; run again to resume"
            ) from None
        except OSError as exc:
            raise DataError(f"{url}: download interrupted ({exc}); run again to resume") from None
    _check_complete(part, total, url)


def _s3_client(endpoint_url: str | None, region: str | None, stall_timeout_s: float):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=stall_timeout_s
    )
    return boto3.session.Session(region_name=region).client("s3", endpoint_url=endpoint_url, config=config)


def _s3_error(url: str, exc: Exception, client, bucket: str) -> DataError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return DataError(
            f"{url}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
            "or ~/.aws/credentials)"
        )
    if isinstance(exc, EndpointConnectionError):
        return DataError(f"{url}: cannot reach the S3 endpoint ({exc})")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}:
            try:
                client.head_bucket(Bucket=bucket)
            except Exception:
                return DataError(f"{url}: S3 bucket '{bucket}' does not exist or is not accessible")
            return DataError(f"{url}: no such object in bucket '{bucket}'")
        if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return DataError(f"{url}: access denied ({code}); check the AWS credentials")
        return DataError(f"{url}: S3 error {code}")
    return DataError(f"{url}: S3 download failed ({exc})")


def _s3_download(
    url: str, part: Path, endpoint_url: str | None, region: str | None, stall_timeout_s: float
) -> None:
    bucket, _, key = url[len("s3://") :].partition("/")
    client = _s3_client(endpoint_url, region, stall_timeout_s)
    etag_file = part.with_suffix(".validator")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        total, etag = head["ContentLength"], head["ETag"]
        offset = part.stat().st_size if part.exists() else 0
        if offset > total or (offset and (not etag_file.exists() or etag_file.read_text() != etag)):
            offset = 0  # the object changed since the partial download: restart cleanly
        etag_file.write_text(etag)
        with open(part, "ab" if offset else "wb") as out:
            if offset < total:
                ranged = {"Range": f"bytes={offset}-", "IfMatch": etag}
                body = client.get_object(Bucket=bucket, Key=key, **ranged)["Body"]
                _copy_stream(body.iter_chunks(CHUNK), out, total, offset, Path(key).name)
    except DataError:
        raise
    except Exception as exc:
        raise _s3_error(url, exc, client, bucket) from None
    _check_complete(part, total, url)


def fetch_file(
    location: str,
    cache_dir: str | Path,
    *,
    sha256: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> Path:
    """A local path holding the bytes of ``location``, checked against ``sha256`` when given.

    Local paths are used in place; remote files are downloaded (resuming a previous partial download)
    into the cache and returned from ``<cache>/sha256/<digest>``. A download that receives no bytes for
    ``stall_timeout_s`` ends with DataError and keeps its partial file for the next run.
    """
    kind = location_kind(location)
    if kind == "local":
        path = Path(location)
        if not path.exists():
            raise DataError(f"{location}: no such file or directory")
        if sha256 and path.is_dir():
            raise DataError(
                f"{location}: is a folder, and sha256 checks files: list them in data.files "
                "and key data.sha256 by those names"
            )
        if sha256 and path.is_file() and (digest := file_sha256(path)) != sha256:
            raise DataError(f"{location}: checksum mismatch: expected sha256 {sha256}, got {digest}")
        return path
    cache = Path(cache_dir)
    if sha256 and (cached := cache / "sha256" / sha256).is_file():
        return cached
    (cache / "partial").mkdir(parents=True, exist_ok=True)
    part = cache / "partial" / (hashlib.sha256(location.encode()).hexdigest()[:32] + ".part")
    resumed = part.exists() and part.stat().st_size > 0
    if kind == "http":
        _http_download(location, part, stall_timeout_s)
    else:
        _s3_download(location, part, endpoint_url, region, stall_timeout_s)
    digest = file_sha256(part)
    if sha256 and digest != sha256:
        part.unlink()
        part.with_suffix(".validator").unlink(missing_ok=True)
        if resumed:  # the kept prefix may be stale: one clean download before giving up
            return fetch_file(
                location,
                cache_dir,
                sha256=sha256,
                endpoint_url=endpoint_url,
                region=region,
                stall_timeout_s=stall_timeout_s,
            )
        raise DataError(f"{location}: checksum mismatch: expected sha256 {sha256}, got {digest}")
    final = cache / "sha256" / digest
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    part.with_suffix(".validator").unlink(missing_ok=True)
    return final


def _base_name(location: str) -> str:
    """The file name a location ends in (URL query strings dropped)."""
    path = location if location_kind(location) == "local" else urlparse(location).path
    return PurePosixPath(path.rstrip("/")).name


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def evict(paths: Sequence[Path]) -> None:
    """Drop cached downloads (e.g. ones that turned out corrupt) so the next run fetches them again."""
    for path in paths:
        path.unlink(missing_ok=True)


def fetch_into(
    location: str,
    dest: str | Path,
    *,
    files: Sequence[str] = (),
    sha256: Mapping[str, str] | None = None,
    cache_dir: str | Path,
    endpoint_url: str | None = None,
    region: str | None = None,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> list[Path]:
    """Fill ``dest`` from ``location``: each of ``files`` under it, or ``location`` itself when none.

    Tar/zip archives are extracted (refusing members that escape ``dest``); other files are copied
    under their own name; a local directory is copied as a tree (hard links where possible).
    ``sha256`` maps file names (base names) to expected hex digests. Returns the cached downloads used,
    for :func:`evict` when their content proves bad; an archive that fails to extract is evicted here.
    """
    dest, sha256 = Path(dest), dict(sha256 or {})
    dest.mkdir(parents=True, exist_ok=True)
    sources = [(name, join_location(location, name)) for name in files] or [(_base_name(location), location)]
    unknown = set(sha256) - {name for name, _ in sources}
    if unknown:
        fetched = [n for n, _ in sources]
        raise DataError(
            f"sha256 given for {sorted(unknown)}, which are not among the fetched files {fetched}"
        )
    cached: list[Path] = []
    for name, src in sources:
        local = fetch_file(
            src,
            cache_dir,
            sha256=sha256.get(name),
            endpoint_url=endpoint_url,
            region=region,
            stall_timeout_s=stall_timeout_s,
        )
        if location_kind(src) != "local":
            cached.append(local)
        try:
            _place(local, name, dest, label=src)
        except DataError:
            evict(cached)
            raise
    return cached


def _place(local: Path, name: str, dest: Path, *, label: str) -> None:
    """Put a fetched file or folder into ``dest``: trees copied, archives extracted, files copied."""
    try:
        if local.is_dir():
            shutil.copytree(local, dest, dirs_exist_ok=True, copy_function=_link_or_copy)
        elif is_archive(name):
            extract(local, dest, label=label)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dest / name)
    except shutil.Error as exc:  # copytree gathers per-file errors: (src, dst, reason) triples
        src, _, reason = exc.args[0][0]
        raise DataError(f"{label}: cannot copy {Path(src).relative_to(local)} ({reason})") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot read ({exc.strerror or exc})") from None
