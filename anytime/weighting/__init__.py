"""Loss-weighting strategies for anytime networks: static schemes, alternating, AdaLoss, no-regret learners.

Every strategy is a :class:`WeightingStrategy` built by name with :func:`create_strategy`; importing this
package registers the built-in ones.
"""

from anytime.weighting.base import WeightingStrategy, create_strategy, list_strategies, register_strategy
from anytime.weighting.static import NORMALISATIONS, SCHEMES, StaticStrategy, static_weights

__all__ = [
    "NORMALISATIONS",
    "SCHEMES",
    "StaticStrategy",
    "WeightingStrategy",
    "create_strategy",
    "list_strategies",
    "register_strategy",
    "static_weights",
]
