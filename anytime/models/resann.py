"""ResANN for small images (METHOD.md §1): 3x3 stem, three groups of n pre-activation basic units, c/2c/4c."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anytime.models.base import AnytimeNet, check_positive_int
from anytime.models.registry import register_model

SHORTCUTS = ("pad", "projection")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PoolPadShortcut(nn.Module):
    """Parameter-free downsampling shortcut: 2x2 average pool, then zero channels appended (option A).

    ``ceil_mode`` keeps odd sizes aligned with the stride-2 conv branch (7x7 -> 4x4 on both paths).
    """

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicUnit(nn.Module):
    """Pre-activation basic unit: BN-ReLU-conv3x3-BN-ReLU-conv3x3, added to the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.pool_pad: nn.Module | None = None
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            if shortcut == "pad":
                self.pool_pad = PoolPadShortcut(out_channels - in_channels)
            else:
                self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        if self.projection is not None:  # as in He et al.'s pre-activation code: project the activated input
            shortcut = self.projection(pre)
        elif self.pool_pad is not None:
            shortcut = self.pool_pad(x)
        else:
            shortcut = x
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + shortcut


class ResANN(AnytimeNet):
    """ResANN of depth 6n+2, N = 3n units; heads every ``period`` units ending at the last (METHOD.md §1)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        n: int = 3,
        c: int = 16,
        period: int = 1,
        shortcut: str = "pad",
        truncate_at: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("n", n), ("c", c)):
            check_positive_int(name, value)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r} is invalid: must be one of {', '.join(SHORTCUTS)}")
        units: list[nn.Module] = []
        channels: list[int] = []
        width = c
        for group in range(3):
            out = c * 2**group
            for index in range(n):
                stride = 2 if group > 0 and index == 0 else 1
                units.append(BasicUnit(width, out, stride, shortcut))
                channels.append(out)
                width = out
        self._attach_heads(
            conv3x3(in_channels, c),
            units,
            channels,
            num_classes=num_classes,
            period=period,
            truncate_at=truncate_at,
        )


register_model(ResANN, name="resann")
