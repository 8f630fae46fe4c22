"""Run a pipeline stage as a Ray job on a remote cluster and bring its outputs back into this workspace.

    python infra/ray/submit_stage.py --out outputs/members --out outputs/opt -- python -m pipelines.train

With a cluster's job API address (``--address``, ``$RAY_API_SERVER_ADDRESS`` or an ``http(s)://``
``$RAY_ADDRESS``) the command runs on the cluster's head as a Ray job whose working dir is this checkout
(`ray job submit --working-dir .`); its log streams here. When it succeeds, the paths given with ``--out``
travel back through a staging location both sides can reach (``--staging`` / ``$ANYTIME_STAGING``: an
``s3://`` prefix, or a shared directory) and replace the local ones atomically, so a DVC stage wrapped in
this script records them as if it had run locally. Without an address the command simply runs here.
A failed job leaves the local outputs untouched and exits non-zero.
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
import uuid
from pathlib import Path

import fsspec

from anytime.data.archives import extract
from pipelines.io import atomic_path

ARCHIVE = "outputs.tar.gz"
# Only endpoints and switches travel to the job; credentials come from the cluster's own IAM role.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "OMP_NUM_THREADS")


def job_api_address(explicit: str | None) -> str | None:
    """The jobs API to submit to; a GCS ``host:port`` RAY_ADDRESS (as inside a job) means "run here"."""
    for candidate in (explicit, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if candidate and candidate.startswith(("http://", "https://")):
            return candidate
    return None


def upload_outputs(outs: list[str], staging: str) -> None:
    """Pack ``outs`` (files or directories, relative to the working dir) into one archive at ``staging``."""
    with fsspec.open(f"{staging}/{ARCHIVE}", "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for out in outs:
            tar.add(out, arcname=out)


def download_outputs(outs: list[str], staging: str) -> None:
    """Fetch the archive, extract it with path checks, then swap each output in atomically."""
    with tempfile.TemporaryDirectory(prefix="submit-stage-") as tmp:
        archive = Path(tmp) / ARCHIVE
        with fsspec.open(f"{staging}/{ARCHIVE}", "rb") as src, archive.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        unpacked = Path(tmp) / "unpacked"
        extract(archive, unpacked)
        for out in outs:
            with atomic_path(out) as target:
                os.replace(unpacked / out, target)


async def _stream_logs(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


def submit(address: str, command: list[str], outs: list[str], staging: str | None, forward: list[str]) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    if outs and not staging:
        raise SystemExit("error: --out needs --staging or $ANYTIME_STAGING (an s3:// prefix or a shared dir)")
    run_staging = f"{staging.rstrip('/')}/{uuid.uuid4().hex}" if outs else None
    inner = ["python", "infra/ray/submit_stage.py", "--inside"]
    if run_staging:
        inner += ["--upload-to", run_staging, *(f"--out={out}" for out in outs)]
    env = {name: os.environ[name] for name in (*FORWARDED_ENV, *forward) if name in os.environ}
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=shlex.join([*inner, "--", *command]),
        runtime_env={"working_dir": ".", "env_vars": env},
    )
    print(f"submitted Ray job {job_id} to {address}", flush=True)
    asyncio.run(_stream_logs(client, job_id))
    status = client.get_job_status(job_id)
    if status != JobStatus.SUCCEEDED:
        print(f"error: Ray job {job_id} ended {status.value}; local outputs left unchanged", file=sys.stderr)
        return 1
    if run_staging:
        download_outputs(outs, run_staging)
        fs, path = fsspec.core.url_to_fs(run_staging)
        fs.rm(path, recursive=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="Ray jobs API, e.g. http://127.0.0.1:8265")
    parser.add_argument("--out", action="append", default=[], help="output path to bring back (repeatable)")
    parser.add_argument("--staging", default=os.environ.get("ANYTIME_STAGING"), help="s3:// prefix or dir")
    parser.add_argument("--env", action="append", default=[], help="extra env var to forward (repeatable)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # set for the job's side
    parser.add_argument("--upload-to", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the stage command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("missing the stage command after --")
    address = None if args.inside else job_api_address(args.address)
    if address:
        return submit(address, command, args.out, args.staging, args.env)
    code = subprocess.run(command).returncode
    if code == 0 and args.upload_to:
        upload_outputs(args.out, args.upload_to)
    return code


if __name__ == "__main__":
    sys.exit(main())
