"""anytime: train and evaluate anytime neural networks (ANNs, AdaLoss, no-regret weighting, EANNs).

The most used entry points are re-exported here for notebooks; submodules hold the rest
(``anytime.models``, ``anytime.weighting``, ``anytime.metrics``, ``anytime.train``, ``anytime.data``,
``anytime.eann``).
"""

from anytime.flops import forward_flops, head_costs
from anytime.models import create_model, list_models, register_model
from anytime.weighting import create_strategy, list_strategies, static_weights

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "create_strategy",
    "forward_flops",
    "head_costs",
    "list_models",
    "list_strategies",
    "register_model",
    "static_weights",
]
