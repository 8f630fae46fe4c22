"""`dvc push` / `dvc pull` round-trip through the S3 remote that infra/dvc configures (moto on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.s3 import S3Endpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGURE = ROOT / "infra" / "dvc" / "configure-s3-remote.sh"
VENV_BIN = str(Path(sys.executable).parent)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path, s3_server: S3Endpoint) -> tuple[Path, dict[str, str]]:
    """A fresh git + DVC repo. Its env has S3 credentials but no endpoint: the remote config must carry it."""
    env = {
        **os.environ,
        **s3_server.env,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    env.pop("AWS_ENDPOINT_URL")
    path = tmp_path / "repo"
    path.mkdir()
    _run(["git", "init", "-q", "-b", "main"], path, env)
    _run(["dvc", "init", "-q"], path, env)
    return path, env


@pytest.mark.heavy
def test_push_then_pull_restores_data_from_s3(repo, s3_server: S3Endpoint):
    path, env = repo
    bucket = s3_server.make_bucket("anytime-dvc")
    _run(
        [str(CONFIGURE), f"s3://{bucket}/cache", "--endpoint", s3_server.url, "--region", "us-east-1"],
        path,
        env,
    )
    config = (path / ".dvc" / "config").read_text()
    assert f"url = s3://{bucket}/cache" in config and f"endpointurl = {s3_server.url}" in config
    assert "testing" not in config, "credentials must never be written to .dvc/config"

    shards = path / "data" / "shards"
    shards.mkdir(parents=True)
    files = {"manifest.json": b'{"dataset": "toy"}\n', "train/part-00000.parquet": os.urandom(4096)}
    for name, body in files.items():
        (shards / name).parent.mkdir(parents=True, exist_ok=True)
        (shards / name).write_bytes(body)
    _run(["dvc", "add", "-q", "data/shards"], path, env)
    _run(["git", "add", "-A"], path, env)
    _run(["git", "commit", "-q", "-m", "data"], path, env)
    _run(["dvc", "push", "-q"], path, env)

    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert len([k for k in keys if k.startswith("cache/files/md5/")]) == len(files) + 1  # + the .dir listing

    for target in (shards, path / ".dvc" / "cache"):
        subprocess.run(["rm", "-rf", str(target)], check=True)
    _run(["dvc", "pull", "-q"], path, env)
    assert {n: (shards / n).read_bytes() for n in files} == files
    assert "in sync" in _run(["dvc", "status", "--cloud"], path, env)


@pytest.mark.parametrize(
    "args", [["/tmp/cache"], ["s3://b/p", "--access-key", "AKIA"]], ids=["not-s3", "key"]
)
def test_configure_script_refuses_bad_input(tmp_path: Path, args: list[str]):
    result = subprocess.run([str(CONFIGURE), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert not (tmp_path / ".dvc").exists()
