"""The anytime network skeleton shared by every architecture: stem, units, heads after chosen units.

Architectures only build a stem and a list of residual units; this module places the heads (METHOD.md §1),
runs them lazily so that stopping after head k really skips the rest, and builds OPT(j) truncations.
"""

from collections.abc import Iterator, Sequence
from itertools import islice

from torch import Tensor, nn


def head_positions(num_units: int, period: int) -> list[int]:
    """0-based units followed by a head: (N-1) mod s, then every s-th; the last has one (METHOD.md §1)."""
    if not isinstance(num_units, int) or num_units < 1:
        raise ValueError(f"num_units={num_units!r} is invalid: must be an integer >= 1")
    if not isinstance(period, int) or isinstance(period, bool) or not 1 <= period <= num_units:
        raise ValueError(
            f"period={period!r} is invalid: must be an integer in [1, {num_units}] (the number of units)"
        )
    return list(range((num_units - 1) % period, num_units, period))


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dims, (N, C, H, W) -> (N, C). Unlike AdaptiveAvgPool2d its CUDA backward is
    deterministic, so seeded runs stay reproducible without warnings."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class AnytimeHead(nn.Sequential):
    """BN-ReLU, global average pool, linear: the same as a pre-activation ResNet's final classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            GlobalAvgPool(),
            nn.Linear(in_channels, num_classes),
        )


def kaiming_init(module: nn.Module) -> None:
    """torchvision ResNet init: He-normal convs (fan_out), BN weight 1 / bias 0, default Linear init.

    A network on the meta device (shapes only, for planning: :mod:`anytime.budget`) has no values to set."""
    for m in module.modules():
        if any(p.is_meta for p in m.parameters(recurse=False)):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class AnytimeNet(nn.Module):
    """Abstract anytime network: ``stem``, ``units`` and one ``heads[k]`` after unit ``head_units[k]``.

    Subclasses build the stem and units and call :meth:`_attach_heads`. ``config`` is filled by
    :func:`anytime.models.create_model` so that ``create_model(**model.config)`` rebuilds the model.
    """

    stem: nn.Module
    units: nn.ModuleList
    heads: nn.ModuleList
    head_units: list[int]
    config: dict

    def _attach_heads(
        self,
        stem: nn.Module,
        units: Sequence[nn.Module],
        unit_channels: Sequence[int],
        *,
        num_classes: int,
        period: int,
        truncate_at: int | None,
    ) -> None:
        """Place heads per METHOD.md §1 on the full backbone, then keep units/heads up to ``truncate_at``."""
        check_positive_int("num_classes", num_classes)
        positions = head_positions(len(units), period)
        if truncate_at is not None:
            if not isinstance(truncate_at, int) or not 0 <= truncate_at < len(positions):
                raise ValueError(
                    f"truncate_at={truncate_at!r} is invalid: must be None or a head index in "
                    f"[0, {len(positions) - 1}] (this backbone has {len(positions)} heads)"
                )
            positions = positions[: truncate_at + 1]
        last_unit = positions[-1]
        self.stem = stem
        self.units = nn.ModuleList(units[: last_unit + 1])
        self.heads = nn.ModuleList(AnytimeHead(unit_channels[u], num_classes) for u in positions)
        self.head_units = positions
        self.config = {}
        kaiming_init(self)

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def iter_heads(self, x: Tensor) -> Iterator[Tensor]:
        """Yield each head's logits in depth order; unit work for head k+1 runs only when it is requested."""
        x = self.stem(x)
        head = 0
        for index, unit in enumerate(self.units):
            x = unit(x)
            if index == self.head_units[head]:
                yield self.heads[head](x)
                head += 1

    def forward(self, x: Tensor, until: int | None = None) -> list[Tensor]:
        """Logits of heads ``0..until`` (all when ``None``); no module past head ``until`` runs."""
        if until is None:
            return list(self.iter_heads(x))
        if not isinstance(until, int) or isinstance(until, bool) or not 0 <= until < self.num_heads:
            raise ValueError(
                f"until={until!r} is invalid: must be None or a head index in [0, {self.num_heads - 1}]"
            )
        return list(islice(self.iter_heads(x), until + 1))


def check_positive_int(name: str, value: object) -> None:
    """Config is validated at the door: one message naming the key, the value and what is allowed."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 1")
