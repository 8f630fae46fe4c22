"""The ``tune.space`` params as a Ray Tune ``param_space``, and a sampled trial config back as train params.

A trial's config is ``{"candidate": i, "weighting": {...}, "optimizer": {...}}``: ``candidate`` indexes
``space.weighting`` and ``weighting`` holds that candidate's own sampled hyperparameters only (a conditional
space: Ray's variant generator resolves the distributions nested in the chosen candidate). The ``random``
search draws the candidate per trial; ``grid`` runs every candidate ``num_samples`` times.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from anytime.weighting import takes_eann_weights
from pipelines.config.train import TrainParams, WeightingParams
from pipelines.config.tune import (
    Candidate,
    Choice,
    Dimension,
    Grid,
    LogUniform,
    RandInt,
    SpaceParams,
    Uniform,
)

# train.weighting keys (pipelines.config.train.WeightingParams): every one is written to best_params.yaml,
# unused ones as null, so a `dvc exp run -S` over them leaves no stale hyperparameter of another strategy.
WEIGHTING_KEYS = tuple(WeightingParams.model_fields)


def domain(dimension: Dimension) -> Any:
    """A Ray Tune domain (or the constant itself) for one search dimension."""
    if isinstance(dimension, Choice):
        return tune.choice(dimension.choice)
    if isinstance(dimension, Grid):
        return tune.grid_search(dimension.grid)
    if isinstance(dimension, Uniform):
        return tune.uniform(*dimension.uniform)
    if isinstance(dimension, LogUniform):
        return tune.loguniform(*dimension.loguniform)
    if isinstance(dimension, RandInt):
        return tune.randint(*dimension.randint)
    return dimension


def _candidate_space(index: int, candidate: Candidate) -> dict[str, Any]:
    return {
        "candidate": index,
        "weighting": {name: domain(dim) for name, dim in candidate.dimensions().items()},
    }


def param_space(space: SpaceParams, search_alg: str) -> dict[str, Any]:
    """Tune's ``param_space``: the weighting candidate (chosen at random or gridded) and the optimiser."""
    candidates = [_candidate_space(i, c) for i, c in enumerate(space.weighting)]
    pick = tune.grid_search if search_alg == "grid" else tune.choice
    return {
        "weighting": pick(candidates),
        "optimizer": {name: domain(dim) for name, dim in space.optimizer.items()},
    }


def trial_count(space: SpaceParams, search_alg: str, num_samples: int) -> int:
    """How many trials Tune runs: ``num_samples`` of every grid point (grid: every candidate is one)."""
    count = num_samples * (len(space.weighting) if search_alg == "grid" else 1)
    for dim in space.optimizer.values():
        count *= len(dim.grid) if isinstance(dim, Grid) else 1
    return count


def trial_overrides(space: SpaceParams, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A sampled trial config as ``train`` overrides: ``{"weighting": {...}, "optimizer": {...}}``."""
    chosen = config["weighting"]
    candidate = space.weighting[chosen["candidate"]]
    return {"weighting": candidate.resolve(dict(chosen["weighting"])), "optimizer": dict(config["optimizer"])}


def flat_overrides(overrides: dict[str, dict[str, Any]], train: TrainParams) -> dict[str, Any]:
    """``train.<section>.<key>`` -> value, the form ``dvc exp run -S key=value`` takes.

    Generated EANN members keep their EANN weights only where the winning strategy takes them (AdaLoss does
    not, METHOD.md §4), so that the applied params validate: the winner was tuned the same way.
    """
    weighting = overrides["weighting"]
    flat = {f"train.weighting.{key}": weighting.get(key) for key in WEIGHTING_KEYS}
    flat |= {f"train.optimizer.{key}": value for key, value in overrides["optimizer"].items()}
    eann = train.eann
    if eann is not None and eann.eann_weights and not takes_eann_weights(weighting["strategy"]):
        flat["train.eann.eann_weights"] = False
    return flat
