"""Every data and output path of the pipeline, relative to the project root (where DVC runs the stages).

The stages, their helpers and the tests take paths from here only; dvc.yaml names the same paths as stage
deps and outs.
"""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the code's own checkout (e.g. for code fingerprints)
RAW_ROOT = Path("data/raw")  # fetch: data/raw/<dataset>/, the dataset's original files
SHARDS_ROOT = Path("data/shards")  # shard: data/shards/<dataset>/, Parquet shards + manifest.json
DOWNLOAD_CACHE = Path("data/cache")  # fetch's downloads, content-addressed by sha256
MEMBERS_DIR = Path("outputs/members")  # train: outputs/members/<member>/
OPT_DIR = Path("outputs/opt")  # train: outputs/opt/<member>-opt<j>/
LIVE_DIR = Path("outputs/live")  # train: per-epoch history and a summary of every run (pipelines/live.py)
TUNE_DIR = Path("outputs/tune")  # tune: trials, history, figure, best.json, best_params.yaml
TUNE_BEST_PARAMS = TUNE_DIR / "best_params.yaml"
ASSEMBLE_DIR = Path("outputs/assemble")  # assemble: assembly.json (the typed contract report reads)
ASSEMBLY_FILE = ASSEMBLE_DIR / "assembly.json"
WORKSPACE_LOCK = Path("outputs/.lock")  # held by a stage while it writes (pipelines.workspace)
REPORT_DIR = Path("outputs/report")  # report: report.md, metrics.json, plots/, figures/
LOGS_DIR = Path("outputs/logs")  # the Ray stages' logs (pipelines/console.py): tracked by neither Git nor DVC


def raw_dir(dataset: str) -> Path:
    return RAW_ROOT / dataset


def shards_dir(dataset: str) -> Path:
    return SHARDS_ROOT / dataset


def member_name(k: int) -> str:
    """The name of the ``k``-th generated EANN member (``train.eann``), by depth: m0, m1, ..."""
    return f"m{k}"


OPT_RUN_NAME = re.compile(r"^(?P<member>.+)-opt(?P<head>\d+)$")  # OPT_DIR's run names, parsed back


def opt_run_name(member: str, head: int) -> str:
    """The run (and output folder) name of OPT(``head``) of ``member``."""
    return f"{member}-opt{head}"
