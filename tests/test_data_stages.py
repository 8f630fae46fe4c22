"""The fetch and shard stage entry points end to end (local, HTTP and S3 sources), their one-line
errors that leave no partial output, and ``dvc repro`` rerunning only what changed."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from anytime.data import DataError
from pipelines import fetch, shard
from pipelines.cli import run
from tests.fixtures import s3 as s3_fixtures
from tests.fixtures.datasets import make_tar, write_cifar, write_mnist
from tests.fixtures.http import serve_directory
from tests.fixtures.s3 import S3Endpoint

s3_server = s3_fixtures.s3_server
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def set_data_params(work: Path, **data: object) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = {**params["data"], "cache_dir": str(work / "cache"), **data}
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def run_stage(main, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        run(main)
    except SystemExit as exc:
        return int(exc.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_digits_fetch_then_shard(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_data_params(workdir)
    assert run_stage(fetch.main, capsys)[0] == 0
    assert leftovers(workdir / "data/raw") == ["digits"]
    assert run_stage(shard.main, capsys)[0] == 0
    assert leftovers(workdir / "data/shards") == ["digits"]
    manifest = yaml.safe_load((workdir / "data/shards/digits/manifest.json").read_text())
    assert manifest["splits"]["val"]["count"] == 144 and manifest["splits"]["test"]["count"] == 360


def test_mnist_over_http_with_checksum(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_mnist(tmp_path / "www")
    files = sorted(p.name for p in (tmp_path / "www").iterdir())
    digest = hashlib.sha256((tmp_path / "www" / files[0]).read_bytes()).hexdigest()
    with serve_directory(tmp_path / "www") as server:
        set_data_params(
            workdir, dataset="kmnist", location=server.url, files=files, sha256={files[0]: digest}
        )
        assert run_stage(fetch.main, capsys) == (0, "")
    assert run_stage(shard.main, capsys)[0] == 0
    manifest = yaml.safe_load((workdir / "data/shards/kmnist/manifest.json").read_text())
    assert manifest["class_names"][0] == "o" and manifest["splits"]["test"]["count"] == 12


def test_cifar_archive_from_s3(
    workdir: Path, tmp_path: Path, s3_server: S3Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cifar(tmp_path / "cifar-10-batches-bin", classes=10, kind="binary")
    archive = make_tar(tmp_path / "cifar-10-batches-bin", tmp_path / "cifar-10-binary.tar.gz")
    uri = s3_server.put(
        s3_server.make_bucket("datasets"), "cifar/cifar-10-binary.tar.gz", archive.read_bytes()
    )
    set_data_params(workdir, dataset="cifar10", location=uri, endpoint_url=s3_server.url, crop_padding=2)
    assert run_stage(fetch.main, capsys)[0] == 0
    assert run_stage(shard.main, capsys)[0] == 0
    manifest = yaml.safe_load((workdir / "data/shards/cifar10/manifest.json").read_text())
    assert manifest["augment"] == {"crop_padding": 2, "flip": True, "resized_crop": False}


def _escaping_tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))


def _bad_source(kind: str, www: Path) -> tuple[dict, str]:
    """params.data changes and the expected error text for one kind of bad input."""
    www.mkdir()
    if kind == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return {"dataset": "cifar10", "location": f"http://127.0.0.1:{port}/c.tar.gz"}, "cannot reach"
    if kind == "checksum":
        write_cifar(www / "c", classes=10, kind="binary")
        make_tar(www / "c", www / "c.tar.gz")
        return {
            "dataset": "cifar10",
            "location": "{url}/c.tar.gz",
            "sha256": {"c.tar.gz": "a" * 64},
        }, "checksum"
    if kind == "truncated":
        write_cifar(www / "c", classes=10, kind="binary")
        data = make_tar(www / "c", www / "c.tar.gz").read_bytes()
        (www / "c.tar.gz").write_bytes(data[: len(data) // 2])
        return {"dataset": "cifar10", "location": "{url}/c.tar.gz"}, "corrupt or truncated archive"
    if kind == "escaping":
        _escaping_tar(www / "c.tar.gz")
        return {"dataset": "cifar10", "location": "{url}/c.tar.gz"}, "escapes"
    assert kind == "count_mismatch"
    write_mnist(www, gz=False)
    from anytime.data.formats.idx import write_idx

    write_idx(www / "t10k-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    files = sorted(p.name for p in www.iterdir())
    return {
        "dataset": "mnist",
        "location": "{url}",
        "files": files,
    }, "12 images but t10k-labels-idx1-ubyte has 11"


@pytest.mark.parametrize("kind", ["unreachable", "checksum", "truncated", "escaping", "count_mismatch"])
def test_bad_source_one_error_line_and_no_output(
    kind: str, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, expected = _bad_source(kind, tmp_path / "www")
    with serve_directory(tmp_path / "www") as server:
        change["location"] = change["location"].format(url=server.url)
        set_data_params(workdir, **change)
        code, err = run_stage(fetch.main, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert leftovers(workdir / "data/raw") == []
    assert not (tmp_path / "escape.txt").exists() and not (workdir / "escape.txt").exists()


def test_missing_bucket_and_missing_raw(
    workdir: Path, s3_server: S3Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    set_data_params(workdir, dataset="svhn", location="s3://no-such-bucket/svhn/train_32x32.mat")
    code, err = run_stage(fetch.main, capsys)
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in err and err.count("\n") == 1
    code, err = run_stage(shard.main, capsys)
    assert code == 2 and "run the fetch stage first" in err
    assert leftovers(workdir / "data/raw") == [] and leftovers(workdir / "data/shards") == []


def test_bad_params_fail_before_work(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_data_params(workdir, dataset="cifar10", location="ftp://mirror/cifar.tar")
    code, err = run_stage(fetch.main, capsys)
    assert code == 2 and err.startswith("error: params.yaml: data.location = 'ftp://mirror/cifar.tar'")
    assert not (workdir / "data").exists()


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # stages write __pycache__ into their deps, as for users
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.heavy
def test_dvc_repro_reruns_only_on_change(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for folder in ("anytime", "pipelines"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {k: stages[k] for k in ("fetch", "shard")}}))
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)

    first = _dvc(repo, "repro")
    assert "Running stage 'fetch'" in first and "Running stage 'shard'" in first
    assert (repo / "data/shards/digits/manifest.json").is_file()
    again = _dvc(repo, "repro")
    assert "Running stage" not in again
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    changed = _dvc(repo, "repro")
    assert "Running stage 'shard'" in changed and "Running stage 'fetch'" not in changed


@pytest.mark.parametrize(
    "error",
    [ConnectionResetError(104, "Connection reset by peer"), DataError("x.tar: bad\nsecond line")],
)
def test_cli_turns_input_errors_into_one_line(error: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        raise error

    code, err = run_stage(main, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err


def test_cli_keeps_the_traceback_of_a_bug() -> None:
    def main() -> None:
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run(main)
