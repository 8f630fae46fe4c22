"""What the reproduction trains: experiment sets as params overrides, at a laptop size and at full size.

Two kinds of experiment, each one ``dvc exp run`` per seed:

- ``weighting``: one ResANN architecture with a head after every unit, trained once per weighting strategy
  (explicit ``train.members`` of equal depth), plus OPT(j) networks at its milestone heads and a deeper CONST
  ANN (the weighting table and "small adaptive vs large constant", METHOD.md §8 claims 1 and 2).
- ``eann``: the default EANN (members growing by ``base``) with OPT(j) at the deepest member's milestones
  (the EANN-vs-OPT table, claim 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# The papers' weighting table, in its order: label -> train.weighting (AdaLoss and AANN as the papers ran).
WEIGHTINGS: dict[str, dict[str, Any]] = {
    "const": {"strategy": "const"},
    "linear": {"strategy": "linear"},
    "half_end": {"strategy": "half_end"},
    "sieve": {"strategy": "sieve"},
    "exp_lin": {"strategy": "exp_lin"},
    "alt_sieve": {"strategy": "alternating", "scheme": "sieve"},
    "adaloss": {"strategy": "adaloss", "update_period": 1, "final_extra": 0.5},
    "rwm": {"strategy": "rwm"},
    "exp3": {"strategy": "exp3"},
    "avgl": {"strategy": "avgl"},
}
OPT_OF = "sieve"  # OPT(j) baselines share the weighting members' architecture; any member names it
DEEP_CONST = "const_deep"  # the deeper CONST ANN that small adaptive ANNs are compared with
ADAPTIVE = ("sieve", "adaloss")
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_LOCATION = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package


@dataclass(frozen=True)
class Size:
    """How big the reproduction is: the laptop set trains a subset on CPU, the full one everything on GPUs."""

    train_subset: int | None
    n: int  # units per group of the weighting ANNs (K = 3n heads)
    deep_n: int  # units per group of the deeper CONST ANN
    c: int
    epochs: int
    seeds: tuple[int, ...]
    eann_n0: int
    use_gpu: bool


SIZES: dict[str, Size] = {
    "cpu": Size(train_subset=3000, n=2, deep_n=4, c=8, epochs=8, seeds=(0, 1, 2), eann_n0=1, use_gpu=False),
    "full": Size(
        train_subset=None, n=9, deep_n=18, c=16, epochs=60, seeds=(0, 1, 2), eann_n0=2, use_gpu=True
    ),
}


@dataclass(frozen=True)
class Experiment:
    """One ``dvc exp run``: its name, the params it sets and the stage it reproduces."""

    name: str
    kind: Literal["weighting", "eann"]
    seed: int
    overrides: dict[str, Any]
    target: str


def common_overrides(size: Size, seed: int) -> dict[str, Any]:
    """Dataset, network width, epochs, seed and hardware shared by every experiment of a size."""
    return {
        "data.dataset": "fashion_mnist",
        "data.location": FASHION_LOCATION,
        "data.files": list(FASHION_FILES),
        "data.train_subset": size.train_subset,
        "train.model.c": size.c,
        "train.model.period": 1,
        "train.epochs": size.epochs,
        "train.seed": seed,
        "train.scaling.use_gpu": size.use_gpu,
    }


def weighting_members(size: Size) -> list[dict[str, Any]]:
    members = [{"name": label, "n": size.n, "weighting": w} for label, w in WEIGHTINGS.items()]
    return [*members, {"name": DEEP_CONST, "n": size.deep_n, "weighting": WEIGHTINGS["const"]}]


def experiment_set(size_name: str, kinds: tuple[str, ...] = ("weighting", "eann")) -> list[Experiment]:
    """Every experiment of the reproduction at ``size_name`` (``cpu`` or ``full``), named ``repro-...``."""
    size = SIZES[size_name]
    experiments = []
    for seed in size.seeds:
        common = common_overrides(size, seed)
        if "weighting" in kinds:
            overrides = common | {
                "train.eann": None,
                "train.members": weighting_members(size),
                "train.opt.members": [OPT_OF],
            }
            name = f"repro-{size_name}-weighting-s{seed}"
            experiments.append(Experiment(name, "weighting", seed, overrides, "train"))
        if "eann" in kinds and seed == size.seeds[0]:  # one EANN run: its table has no seed spread
            overrides = common | {"train.eann.n0": size.eann_n0, "train.weighting.strategy": "sieve"}
            name = f"repro-{size_name}-eann-s{seed}"
            experiments.append(Experiment(name, "eann", seed, overrides, "train"))
    return experiments


def hydra_value(value: Any) -> str:
    """A params value in the override grammar ``dvc exp run -S key=value`` parses (YAML-like literals)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return str(value)


def set_args(experiment: Experiment) -> list[str]:
    """``-S ++key=value`` arguments for ``dvc exp run`` (``++``: also the keys params.yaml leaves at their
    defaults)."""
    args = []
    for key, value in experiment.overrides.items():
        args += ["-S", f"++{key}={hydra_value(value)}"]
    return args
