"""The ``tune`` section of params.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TuneParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
