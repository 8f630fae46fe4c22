"""Anytime networks: ResANN (small images), bottleneck ResANN (ImageNet-size) and a timm-style registry.

Importing this package registers ``resann`` and ``resann26`` / ``resann50`` / ``resann101``.
"""

from anytime.models.base import AnytimeHead, AnytimeNet, head_positions
from anytime.models.registry import create_model, list_models, register_model
from anytime.models.resann import ResANN
from anytime.models.resann_imagenet import LAYOUTS, BottleneckResANN

__all__ = [
    "LAYOUTS",
    "AnytimeHead",
    "AnytimeNet",
    "BottleneckResANN",
    "ResANN",
    "create_model",
    "head_positions",
    "list_models",
    "register_model",
]
