"""Typed schema of ``params.yaml``, validated before any stage does work.

Each section lives in its own module; :func:`load_params` turns any validation failure into a
single :class:`ParamsError` line naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines.config.assemble import AssembleParams
from pipelines.config.data import DataParams
from pipelines.config.train import TrainParams
from pipelines.config.tune import TuneParams

__all__ = [
    "AssembleParams",
    "DataParams",
    "Params",
    "ParamsError",
    "TrainParams",
    "TuneParams",
    "load_params",
]


class ParamsError(ValueError):
    """A bad ``params.yaml``: the message is one line, fit for a user."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataParams
    train: TrainParams
    tune: TuneParams
    assemble: AssembleParams


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if error["type"] == "missing":
        return f"{source}: missing key '{key}'"
    return f"{source}: {key} = {error.get('input')!r}: {error['msg']}"


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping (e.g. from a notebook) against the schema."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_describe(exc.errors()[0], source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raises :class:`ParamsError` with one clear line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate_params(raw, str(path))
