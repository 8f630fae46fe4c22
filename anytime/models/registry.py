"""timm-style model registry: factories registered by name, so configs and checkpoints name models."""

import fnmatch
import inspect
from collections.abc import Callable

from anytime.models.base import AnytimeNet

ModelFactory = Callable[..., AnytimeNet]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(factory: ModelFactory, *, name: str | None = None) -> ModelFactory:
    """Register ``factory`` (a function or an AnytimeNet class) under ``name``, by default its ``__name__``.

    Usable as a bare decorator. The factory's signature is the model's public config: its keyword arguments
    are what ``create_model`` accepts and records in ``model.config``.
    """
    name = name or factory.__name__
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = factory
    return factory


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(fnmatch.filter(_REGISTRY, pattern))


def create_model(name: str, **kwargs: object) -> AnytimeNet:
    """Build a registered model; ``model.config`` (name + every resolved kwarg) rebuilds it exactly."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name={name!r}: must be one of {', '.join(list_models())}")
    signature = inspect.signature(_REGISTRY[name])
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}: "
            f"allowed are {', '.join(signature.parameters)}"
        )
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    model = _REGISTRY[name](**bound.arguments)
    model.config = {"name": name, **bound.arguments}
    return model
