"""The interface every loss-weighting strategy implements, the name registry, and argument checks.

The training loop only ever talks to :class:`WeightingStrategy`, so static, alternating, adaptive and
no-regret weighting are interchangeable by name (``create_strategy("adaloss", num_heads=K)``).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

StrategyFactory = Callable[..., "WeightingStrategy"]

_REGISTRY: dict[str, StrategyFactory] = {}


class WeightingStrategy(ABC):
    """Per-head loss weights for the coming step, updated from the per-head losses after each step.

    Loop protocol: ``to(device)`` and ``start_epoch(e)`` at each epoch start; per step ``w = weights()``,
    ``loss = (w * losses).sum()``, then ``update(losses.detach())``. Under data-parallel training the loop
    passes globally averaged losses, and every rank makes the same calls, so strategies that sample draw the
    same numbers on every rank as long as they are built with the same ``seed``. ``state_dict`` holds only
    tensors, floats, ints and lists so checkpoints load with ``torch.load(weights_only=True)``.

    State lives on the training device (``to``), so a step neither copies weights to the GPU nor losses
    back: the loop stays free of host syncs. Only a seeded CPU generator stays on the CPU; what it draws
    depends on nothing the GPU computes, so it is copied over without waiting for the GPU.
    """

    def __init__(self, num_heads: int, *, min_heads: int = 1) -> None:
        self.num_heads = check_int("num_heads", num_heads, low=min_heads)
        self.epoch = 0
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> WeightingStrategy:
        """Move every state tensor to ``device`` (a no-op where they are); returns the strategy."""
        self.device = torch.device(device)
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value.to(self.device))
        return self

    @abstractmethod
    def weights(self) -> Tensor:
        """float32 (K,) on the strategy's device: the weight of each head's loss for the coming step."""

    def update(self, losses: Tensor, *, validate: bool = True) -> None:
        """Consume the step's per-head losses (K,). Static strategies only check them. ``validate=False``:
        the caller checks finiteness itself (the training loop does so deferred, to spare a host sync)."""
        self._check_losses(losses, validate=validate)

    def start_epoch(self, epoch: int) -> None:
        """Called by the loop at the start of each (0-based) epoch."""
        self.epoch = check_int("epoch", epoch, low=0)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(_require_key(state, "epoch"))

    def _check_losses(self, losses: Tensor, *, validate: bool = True) -> Tensor:
        """The losses as a float64 vector on the strategy's device; a wrong shape, NaN/inf or a negative
        value (per-head losses are cross-entropies) would silently corrupt a learned state, so they are
        refused (the values only with ``validate``: reading them waits for the device)."""
        if not isinstance(losses, Tensor):
            losses = torch.as_tensor(losses)
        if losses.shape != (self.num_heads,):
            raise ValueError(
                f"losses of shape {tuple(losses.shape)} are invalid: expected one loss per head, "
                f"shape ({self.num_heads},)"
            )
        values = losses.detach().to(self.device, torch.float64)
        if validate and not bool((torch.isfinite(values) & (values >= 0)).all()):
            raise ValueError(
                f"losses={values.tolist()} are invalid: every per-head loss must be finite and >= 0"
            )
        return values


def _require_key(state: dict[str, Any], key: str) -> Any:
    if key not in state:
        raise ValueError(f"state_dict is missing {key!r}: it was saved by a different weighting strategy")
    return state[key]


def check_state_tensor(state: dict[str, Any], key: str, shape: tuple[int, ...]) -> Tensor:
    """A tensor from a loaded state dict, checked to have the shape this strategy expects."""
    value = _require_key(state, key)
    if not isinstance(value, Tensor) or tuple(value.shape) != shape:
        found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"state_dict[{key!r}] is {found}: expected a tensor of shape {shape}")
    return value.clone()


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer in [low, high]; bools and floats are refused so typos in configs fail loudly."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{name}={value!r} is invalid: must be an integer in {bounds}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A real number in the interval given; the message shows the interval in (, ] notation."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open or math.isinf(high) else ']'}"
        raise ValueError(f"{name}={value!r} is invalid: must be a number in {interval}")
    return float(value)


def register_strategy(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: make a strategy class (or factory) constructible by ``create_strategy(name, ...)``."""

    def decorate(factory: StrategyFactory) -> StrategyFactory:
        if name in _REGISTRY:
            raise ValueError(f"weighting strategy {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_strategies() -> list[str]:
    return sorted(_REGISTRY)


def _signature(factory: StrategyFactory) -> inspect.Signature:
    """The factory's signature, with a class's ``**kwargs`` expanded into what its base ``__init__`` takes."""
    signature = inspect.signature(factory)
    params = list(signature.parameters.values())
    if isinstance(factory, type) and params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        inherited = _signature(factory.__mro__[1]).parameters.values()
        params = params[:-1] + [p for p in inherited if p.name not in signature.parameters]
    return signature.replace(parameters=params)


def strategy_hparams(name: str) -> tuple[str, ...]:
    """The hyperparameters ``create_strategy(name, ...)`` accepts besides ``num_heads`` (e.g. whether it takes
    a ``seed`` or ``eann``), so callers keep no table of their own."""
    if name not in _REGISTRY:
        raise ValueError(f"weighting strategy {name!r} is unknown: choose one of {list_strategies()}")
    return tuple(p for p in _signature(_REGISTRY[name]).parameters if p != "num_heads")


def takes_eann_weights(name: str) -> bool:
    """Whether strategy ``name`` can train an EANN member (zero its first heads, METHOD.md §7): it takes
    ``eann``. The one rule the params schema, the tune space and its trials all ask."""
    return "eann" in strategy_hparams(name)


def create_strategy(name: str, num_heads: int, **hparams: Any) -> WeightingStrategy:
    """Build a registered strategy; an unknown name or hyperparameter is a ValueError listing what exists."""
    if name not in _REGISTRY:
        raise ValueError(f"weighting strategy {name!r} is unknown: choose one of {list_strategies()}")
    factory = _REGISTRY[name]
    signature = _signature(factory)
    try:
        signature.bind(num_heads, **hparams)
    except TypeError as err:
        allowed = list(strategy_hparams(name))
        raise ValueError(
            f"weighting strategy {name!r} rejects hyperparameters {sorted(hparams)} ({err}): "
            f"allowed are {allowed}"
        ) from None
    return factory(num_heads, **hparams)
