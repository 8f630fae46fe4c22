"""Typed schema of ``params.yaml``, validated before any stage does work.

Each section lives in its own module; :func:`load_params` turns any validation failure into a
single :class:`ParamsError` line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

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

    @model_validator(mode="after")
    def _tune_fits_train(self) -> Params:
        """The tune stage trains a train member for tune.epochs with the train schedule."""
        names = self.train.member_names()
        if self.tune.member != "last" and self.tune.member not in names:
            raise ValueError(f"tune.member = {self.tune.member!r} is not a train member: choose from {names}")
        self.train.schedule.check_epochs(self.tune.epochs, "tune.epochs")
        return self


VALUE_CHARS = 80  # a bad value is shown cut to this many characters
MESSAGE_CHARS = 400  # and a rule's message (which may quote values) to this many


class StrictLoader(yaml.SafeLoader):
    """YAML for params: no aliases or anchors (a billion-laughs value expands to gigabytes), and a key
    given twice in one mapping is an error (PyYAML keeps the last silently; DVC refuses the file)."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "anchors and aliases are not allowed in params", mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_shown(key)!s} (lines {seen[key]} and {line})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = VALUE_CHARS


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    """``repr`` of a value the user gave, bounded (however large the value) to about 80 characters."""
    return _cut(_REPR.repr(value), VALUE_CHARS)


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if error["type"] == "missing":
        return f"{source}: missing key '{key or '<root>'}'"
    message = _cut(error["msg"].removeprefix("Value error, "), MESSAGE_CHARS)
    if isinstance(error.get("input"), dict):  # a section-level rule: its message names the keys itself
        return f"{source}: {message}" if message.startswith(key) else f"{source}: {key}: {message}"
    return f"{source}: {key or '<root>'} = {_shown(error.get('input'))}: {message}"


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping (e.g. from a notebook) against the schema."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_describe(exc.errors()[0], source)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, one line."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}" if mark is not None else problem


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raises :class:`ParamsError` with one clear line."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=StrictLoader)  # a SafeLoader
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    return validate_params(raw, str(path))
