"""The ``assemble`` section of params.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AssembleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
