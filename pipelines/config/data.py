"""The ``data`` section of params.yaml: which dataset, where to get it, and how to shard it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from anytime.data import DATASETS
from pipelines.paths import DOWNLOAD_CACHE

DatasetName = Literal[DATASETS]  # the library's readers

S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")
HTTP_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LOCATION_FORMS = "a local path, http(s)://host/path or s3://bucket/key"


class DataParams(BaseModel):
    """Dataset source and shard layout; ``location`` is unset only for the embedded ``digits``."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetName = "digits"
    location: str | None = Field(default=None, validate_default=True)
    files: list[str] = Field(default_factory=list)
    sha256: dict[str, str] = Field(default_factory=dict)
    endpoint_url: str | None = None
    region: str | None = None
    cache_dir: str = str(DOWNLOAD_CACHE)
    stall_timeout_s: float = Field(default=60.0, gt=0.0)  # a download with no bytes for this long ends
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    train_subset: int | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    rows_per_shard: int = Field(default=512, gt=0)
    row_group_rows: int = Field(default=128, gt=0)
    image_size: int = Field(default=224, gt=0)
    crop_padding: int | None = Field(default=None, ge=0)
    flip: bool | None = None

    @field_validator("location")
    @classmethod
    def _location_form(cls, value: str | None, info: ValidationInfo) -> str | None:
        dataset = info.data.get("dataset")
        if value is None:
            if dataset not in (None, "digits"):
                raise ValueError(f"dataset '{dataset}' needs a location: {LOCATION_FORMS}")
            return value
        if dataset == "digits":
            raise ValueError("digits is embedded (scikit-learn); leave location null")
        if not value.strip():
            raise ValueError(f"must be {LOCATION_FORMS}")
        if value.startswith("s3://"):
            if not S3_URI.match(value):
                raise ValueError("must be s3://bucket/key with a valid bucket name")
        elif value.startswith(("http://", "https://")):
            if not HTTP_URL.match(value):
                raise ValueError("must be http(s)://host/path")
        elif "://" in value:
            raise ValueError(f"unsupported scheme; must be {LOCATION_FORMS}")
        return value

    @field_validator("files")
    @classmethod
    def _relative_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"file {name!r} must be a relative name under location")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if not SHA256.match(digest):
                raise ValueError(f"sha256 of {name!r} must be 64 lowercase hex digits")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_form(cls, value: str | None) -> str | None:
        if value is not None and not HTTP_URL.match(value):
            raise ValueError("must be an http(s):// URL of an S3-compatible endpoint")
        return value

    @model_validator(mode="after")
    def _source_options_need_a_location(self) -> DataParams:
        if self.location is None:
            given = [key for key in ("files", "sha256") if getattr(self, key)]
            if given:
                raise ValueError(f"data.{given[0]} needs data.location (digits is embedded: leave it empty)")
        return self
