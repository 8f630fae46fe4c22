"""The hostile-input corpus: every row is a file the test builds, fed to the real fetch/shard entry
points. Expected for each: exit 2, one ``error:`` line naming what the user gave (and the member or file
inside it), no partial output, nothing left in the download cache. Rows with hostile sizes run in a
subprocess under a 2 GiB address-space limit, so a reader that trusts a header fails the test."""

from __future__ import annotations

import os
import resource
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipelines import fetch, shard
from pipelines.cli import run
from tests.fixtures import hostile
from tests.fixtures.datasets import write_imagefolder, write_svhn
from tests.fixtures.http import serve_directory
from tests.fixtures.stages import REPO, run_stage

MEMORY_LIMIT = 2 << 30


@dataclass(frozen=True)
class Case:
    """params.data for the row (``{url}`` = the test server), the failing stage, the expected text."""

    data: dict
    stage: str
    expected: str


def _mnist(www: Path, expected: str, edit: Callable[[Path], object], *, gz: bool = True) -> Case:
    files = hostile.mnist_files(www, gz=gz)
    edit(www)
    return Case({"dataset": "mnist", "location": "{url}", "files": files}, "fetch", expected)


def _tar(www: Path, info: tarfile.TarInfo, expected: str) -> Case:
    hostile.tar_with(www / "c.tar.gz", info, b"x")
    return Case({"dataset": "cifar10", "location": "{url}/c.tar.gz"}, "fetch", expected)


def _pets(www: Path, edit: Callable[[Path], object], stage: str, expected: str) -> Case:
    hostile.imagefolder_tar(www, edit)
    return Case({"dataset": "imagefolder", "location": "{url}/pets.tar", "image_size": 16}, stage, expected)


def _svhn(www: Path) -> Case:
    write_svhn(www)
    hostile.truncate(www / "train_32x32.mat")
    files = ["train_32x32.mat", "test_32x32.mat"]
    return Case({"dataset": "svhn", "location": "{url}", "files": files}, "fetch", "train_32x32.mat: corrupt")


def _set_labels(www: Path, labels: list[int]) -> None:
    (www / "t10k-labels-idx1-ubyte.gz").unlink()
    hostile.write_idx_labels(www / "t10k-labels-idx1-ubyte", labels)


def _mnist_raw_labels(www: Path, labels: list[int], expected: str) -> Case:
    files = hostile.mnist_files(www)
    _set_labels(www, labels)
    files = [f.replace("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte") for f in files]
    return Case({"dataset": "mnist", "location": "{url}", "files": files}, "fetch", expected)


def _truncated_pets(www: Path) -> Case:
    hostile.truncate(hostile.imagefolder_tar(www, lambda pets: None))
    return Case(
        {"dataset": "imagefolder", "location": "{url}/pets.tar"}, "fetch", "corrupt or truncated archive"
    )


def _folder_with_sha256(www: Path) -> Case:
    write_imagefolder(www / "pets")
    data = {"dataset": "imagefolder", "location": str(www / "pets"), "sha256": {"pets": "0" * 64}}
    return Case(data, "fetch", "pets: is a folder, and sha256 checks files")


def _huge_member(www: Path) -> Case:
    hostile.huge_member_tar(www / "big.tar.gz", 10**12)
    return Case(
        {"dataset": "cifar10", "location": "{url}/big.tar.gz"},
        "fetch",
        "big.tar.gz: corrupt or truncated archive",
    )


def _truncated_jpeg(pets: Path) -> None:
    hostile.truncate(pets / "val" / "cat" / "img0.jpg", 0.6)


def _empty_val(pets: Path) -> None:
    for path in (pets / "val").rglob("*.*"):
        path.unlink()


ROWS: dict[str, Callable[[Path], Case]] = {
    "tar-dotdot": lambda w: _tar(w, tarfile.TarInfo("../escape.txt"), "member '../escape.txt' escapes"),
    "tar-absolute": lambda w: _tar(w, tarfile.TarInfo("/tmp/escape.txt"), "member '/tmp/escape.txt' escapes"),
    "tar-symlink": lambda w: _tar(w, hostile.link_member("l", tarfile.SYMTYPE, "/etc/passwd"), "escapes"),
    "tar-hardlink": lambda w: _tar(w, hostile.link_member("h", tarfile.LNKTYPE, "../../x"), "escapes"),
    "pickle-batch": lambda w: Case(
        {"dataset": "cifar10", "location": str(hostile.cifar_with_pickle_bomb(w, "data_batch_1"))},
        "fetch",
        "data_batch_1: refusing to unpickle posix.system",
    ),
    "pickle-meta": lambda w: Case(
        {"dataset": "cifar10", "location": str(hostile.cifar_with_pickle_bomb(w, "batches.meta"))},
        "fetch",
        "batches.meta: refusing to unpickle posix.system",
    ),
    "truncated-gz": lambda w: _mnist(
        w,
        "t10k-images-idx3-ubyte.gz: corrupt or truncated",
        lambda d: hostile.truncate(d / "t10k-images-idx3-ubyte.gz"),
    ),
    "truncated-idx": lambda w: _mnist(
        w,
        "train-images-idx3-ubyte: truncated or corrupt",
        lambda d: hostile.truncate(d / "train-images-idx3-ubyte"),
        gz=False,
    ),
    "truncated-tar": _truncated_pets,
    "truncated-mat": _svhn,
    "wrong-counts": lambda w: _mnist_raw_labels(
        w, [0] * 11, "has 12 images but t10k-labels-idx1-ubyte has 11"
    ),
    "label-out-of-range": lambda w: _mnist_raw_labels(w, [10] * 12, "label 10 outside 0..9"),
    "empty-split": lambda w: _pets(w, _empty_val, "fetch", "split 'test' has no samples"),
    "corrupt-jpeg-in-val": lambda w: _pets(
        w, _truncated_jpeg, "shard", "pets/val/cat/img0.jpg: cannot decode"
    ),
    "non-image-in-folder": lambda w: _pets(
        w,
        lambda p: (p / "train" / "dog" / "notes.jpg").write_text("not an image"),
        "shard",
        "pets/train/dog/notes.jpg: not a JPEG or PNG image",
    ),
    "sha256-for-folder": _folder_with_sha256,
    "gzip-bomb": lambda w: _mnist(
        w,
        "train-images-idx3-ubyte.gz: header declares [4000000, 28, 28]",
        lambda d: hostile.gzip_bomb(d / "train-images-idx3-ubyte.gz", (4_000_000, 28, 28), 3),
    ),
    "idx-declares-1e9-images": lambda w: _mnist(
        w,
        "train-images-idx3-ubyte: truncated or corrupt: header promises 784000000000 bytes",
        lambda d: (d / "train-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + (10**9).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(784)
        ),
        gz=False,
    ),
    "tar-member-declares-1TB": _huge_member,
    "image-declares-1e10-pixels": lambda w: _pets(
        w,
        lambda p: (p / "train" / "cat" / "huge.png").write_bytes(hostile.png_header(100_000, 100_000)),
        "shard",
        "pets/train/cat/huge.png: refusing a decompression bomb (Image size (10000000000 pixels)",
    ),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run(stage: str, work: Path, bounded: bool, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    if bounded:
        done = run_stage(
            stage,
            work,
            # glibc reserves 64 MiB of address space per thread arena: cap them so the limit measures data
            env={**os.environ, "PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2"},
            preexec_fn=_limit_memory,
        )
        return done.returncode, done.stderr
    try:
        run({"fetch": fetch.main, "shard": shard.main}[stage])
    except SystemExit as exc:
        return int(exc.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


# Hostile sizes: a subprocess each under MEMORY_LIMIT (~25 s of imports each on a loaded CI box).
BOUNDED = {"gzip-bomb", "idx-declares-1e9-images", "tar-member-declares-1TB", "image-declares-1e10-pixels"}


@pytest.mark.parametrize(
    "row", [pytest.param(row, marks=[pytest.mark.heavy] if row in BOUNDED else []) for row in ROWS]
)
def test_hostile_input_is_refused_in_one_line_naming_it(
    row: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    www, work = tmp_path / "www", tmp_path / "work"
    www.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    case = ROWS[row](www)
    with serve_directory(www) as server:
        data = {k: v.format(url=server.url) if isinstance(v, str) else v for k, v in case.data.items()}
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"] = {**params["data"], "cache_dir": str(tmp_path / "cache"), **data}
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        if case.stage == "shard":
            assert _run("fetch", work, False, capsys)[0] == 0
        code, err = _run(case.stage, work, row in BOUNDED, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.expected in lines[0] and data["location"] in lines[0], lines[0]
    assert str(tmp_path / "cache") not in lines[0] and "/data/raw/." not in lines[0]  # no cache or temp path
    output = work / "data" / ("raw" if case.stage == "fetch" else "shards")
    assert not output.exists() or list(output.iterdir()) == []  # nothing half-written, no temp folder
    if case.stage == "fetch":
        assert not list((tmp_path / "cache").glob("sha256/*"))  # a bad download is not kept
    assert not (work / "pwned").exists() and not (tmp_path / "escape.txt").exists()
