"""Run a pipeline stage as a Ray job on a remote cluster and bring its outputs back into this workspace.

    python infra/ray/submit_stage.py --out outputs/members --out outputs/opt -- python -m pipelines.train

With a cluster's job API address (``--address``, ``$RAY_API_SERVER_ADDRESS`` or an ``http(s)://``
``$RAY_ADDRESS``) the command runs on the cluster's head as a Ray job whose working dir is this checkout
(`ray job submit --working-dir .`); its log streams here. When it succeeds, the paths given with ``--out``
travel back through a staging location both sides can reach (``--staging`` / ``$ANYTIME_STAGING``: an
``s3://`` prefix, or a shared directory) and replace the local ones atomically, so a DVC stage wrapped in
this script records them as if it had run locally. Paths given with ``--in`` (Git-ignored data or
persisted outputs that the working dir upload skips) travel the other way first and are unpacked in the
job's working dir on the head node; workers on other nodes do not see them, so multi-node runs read their
shards from S3 (``train.shards``). Without an address the command simply runs here. A failed job leaves
the local outputs untouched and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import fsspec

from anytime.data.archives import extract
from pipelines.io import atomic_path

OUTPUTS, INPUTS = "outputs.tar.gz", "inputs.tar.gz"
AGENT_RETRY_S = 2.0
# Only endpoints and switches travel to the job; credentials come from the cluster's own IAM role.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "OMP_NUM_THREADS")


def job_api_address(explicit: str | None) -> str | None:
    """The jobs API to submit to; a GCS ``host:port`` RAY_ADDRESS (as inside a job) means "run here"."""
    for candidate in (explicit, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if candidate and candidate.startswith(("http://", "https://")):
            return candidate
    return None


def pack(paths: list[str], url: str) -> None:
    """Pack ``paths`` (files or directories, relative to the working dir; missing ones skipped) at ``url``."""
    with fsspec.open(url, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path in paths:
            if os.path.exists(path):
                tar.add(path, arcname=path)


def unpack(url: str, paths: list[str]) -> None:
    """Fetch the archive at ``url``, extract it with path checks, then swap each path in atomically."""
    with tempfile.TemporaryDirectory(prefix="submit-stage-") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        with fsspec.open(url, "rb") as src, archive.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        unpacked = Path(tmp) / "unpacked"
        extract(archive, unpacked)
        for path in paths:
            if (unpacked / path).exists():
                with atomic_path(path) as target:
                    os.replace(unpacked / path, target)


def submit_job_when_ready(client, *, attempts: int = 30, **job) -> str:
    """``client.submit_job``, waiting out a head whose job agent has not registered yet (fresh or busy)."""
    for _ in range(attempts - 1):
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "No available agent" not in str(exc):
                raise
            print("waiting for the cluster's job agent ...", file=sys.stderr, flush=True)
            time.sleep(AGENT_RETRY_S)
    return client.submit_job(**job)


async def _stream_logs(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


def submit(address: str, command: list[str], args: argparse.Namespace) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    moves = args.out or args.ins
    if moves and not args.staging:
        print(
            "error: --in/--out need --staging or $ANYTIME_STAGING (s3:// prefix or shared dir)",
            file=sys.stderr,
        )
        return 2
    run_staging = f"{args.staging.rstrip('/')}/{uuid.uuid4().hex}" if moves else None
    inner = ["python", "infra/ray/submit_stage.py", "--inside"]
    if run_staging:
        inner += ["--staging", run_staging, *(f"--out={out}" for out in args.out)]
        inner += [f"--in={path}" for path in args.ins]
    env = {name: os.environ[name] for name in (*FORWARDED_ENV, *args.env) if name in os.environ}
    client = JobSubmissionClient(address)
    try:
        if run_staging:
            pack(args.ins, f"{run_staging}/{INPUTS}")
        job_id = submit_job_when_ready(
            client,
            entrypoint=shlex.join([*inner, "--", *command]),
            # The job's outputs come back through staging: the local ones (Git-tracked small files included)
            # must not travel up with the code, or they would come back mixed with the job's.
            runtime_env={
                "working_dir": ".",
                "excludes": [f"/{out.strip('/')}/" for out in args.out],
                "env_vars": env,
            },
        )
        print(f"submitted Ray job {job_id} to {address}", flush=True)
        asyncio.run(_stream_logs(client, job_id))
        status = client.get_job_status(job_id)
        if status != JobStatus.SUCCEEDED:
            print(
                f"error: Ray job {job_id} ended {status.value}; local outputs left unchanged", file=sys.stderr
            )
            return 1
        if run_staging:
            unpack(f"{run_staging}/{OUTPUTS}", args.out)
        return 0
    finally:
        if run_staging:
            fs, path = fsspec.core.url_to_fs(run_staging)
            if fs.exists(path):
                fs.rm(path, recursive=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, and in ``command`` the stage command after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="Ray jobs API, e.g. http://127.0.0.1:8265")
    parser.add_argument("--out", action="append", default=[], help="output path to bring back (repeatable)")
    parser.add_argument(
        "--in", dest="ins", action="append", default=[], help="ignored path to send (repeatable)"
    )
    parser.add_argument("--staging", default=os.environ.get("ANYTIME_STAGING"), help="s3:// prefix or dir")
    parser.add_argument("--env", action="append", default=[], help="extra env var to forward (repeatable)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # set for the job's side
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the stage command")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("missing the stage command after --")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = args.command
    address = None if args.inside else job_api_address(args.address)
    if address:
        return submit(address, command, args)
    if args.inside and args.ins:
        unpack(f"{args.staging}/{INPUTS}", args.ins)
    code = subprocess.run(command).returncode
    if code == 0 and args.inside and args.out:
        pack(args.out, f"{args.staging}/{OUTPUTS}")
    return code


if __name__ == "__main__":
    sys.exit(main())
