"""Bottleneck ResANN for ImageNet-size images (METHOD.md §1): ResNet-26/50/101 layouts with anytime heads.

Units are pre-activation bottlenecks so that every head (BN-ReLU-pool-linear) sees the raw residual stream,
as in the small-image ResANN; the stride sits on the 3x3 conv (torchvision's "ResNet v1.5").
"""

from functools import partial

import torch
from torch import Tensor, nn

from anytime.models.base import AnytimeNet, check_positive_int
from anytime.models.registry import register_model

LAYOUTS: dict[int, tuple[int, int, int, int]] = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EXPANSION = 4


class BottleneckUnit(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (4x); 1x1 projection on shape change."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(pre)
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + shortcut


class BottleneckResANN(AnytimeNet):
    """7x7/2 conv + BN-ReLU + 3x3/2 max-pool, four bottleneck groups (base width ``width``, doubling)."""

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: int = 64,
        period: int = 2,
        truncate_at: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"depth={depth!r} is invalid: must be one of {', '.join(map(str, LAYOUTS))}")
        check_positive_int("in_channels", in_channels)
        check_positive_int("width", width)
        stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        units: list[nn.Module] = []
        channels: list[int] = []
        in_width = width
        for group, count in enumerate(LAYOUTS[depth]):
            group_width = width * 2**group
            for index in range(count):
                stride = 2 if group > 0 and index == 0 else 1
                units.append(BottleneckUnit(in_width, group_width, stride))
                in_width = group_width * EXPANSION
                channels.append(in_width)
        self._attach_heads(
            stem, units, channels, num_classes=num_classes, period=period, truncate_at=truncate_at
        )


for _depth in LAYOUTS:
    register_model(partial(BottleneckResANN, _depth), name=f"resann{_depth}")
