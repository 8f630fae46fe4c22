"""One Tune trial: a Ray Train run of the tuned member with the trial's weighting and optimiser settings.

Ray 2.60 runs Train V2, where a trainer is no longer a Tune trainable (no ``Tuner(trainer)``). As the Ray
Train user guide "Hyperparameter Tuning with Ray Tune" documents, each trial is a Tune *function* that
builds a ``TorchTrainer`` (here :func:`pipelines.training.train_worker.build_trainer`, the same one the
train stage uses) and calls ``fit()``; a ``TuneReportCallback`` on the Train controller forwards every
epoch's report to Tune, so schedulers like ASHA see ``objective`` per epoch and can stop the trial (which
ends its Train run). The Train run is named after the trial id under a fixed storage path, so a restored Tune
experiment resumes each unfinished trial from its last epoch checkpoint. The same code runs data-parallel on
GPUs: only ``tune.scaling`` changes.

Kept apart from the stage module so Train controllers unpickle the callback without importing plotting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from anytime.metrics import anytime_auc
from anytime.weighting import takes_eann_weights
from pipelines.config.train import TrainParams
from pipelines.config.tune import SpaceParams
from pipelines.ray_cluster import scaling_config
from pipelines.training.run_plan import run_config
from pipelines.training.train_worker import build_trainer
from pipelines.training.worker_config import WorkerConfig
from pipelines.tuning.search_space import trial_overrides


@dataclass(frozen=True)
class Objective:
    """What a trial minimises, on the heads the tuned member is trained for (METHOD.md §6).

    ``val_auc`` is the anytime AUC of the validation errors from ``first_head`` on: a member with EANN
    weights is only trained (and only used by the EANN) from half its depth, so its untrained first half
    would otherwise make up most of the area. ``first_head`` is fixed per member, not per sampled strategy,
    so every trial of a search is judged on the same heads. ``val_top1`` is the error of head ``head``.
    """

    name: str  # val_auc | val_top1
    costs: tuple[int, ...]  # cumulative FLOPs per sample of every head
    first_head: int  # val_auc: the first head the member is trained for
    head: int  # val_top1: the milestone head

    def value(self, metrics: dict[str, Any]) -> float:
        """The value Tune minimises, from one epoch's validation report (never the test split)."""
        errors = metrics["val_top1"]
        if self.name == "val_auc":
            return anytime_auc(self.costs[self.first_head :], errors[self.first_head :])
        return float(errors[self.head])


EARLIER = "earlier"  # report key: JSON rows (HISTORY_COLUMNS) of the epochs before a resumed run's first
HISTORY_COLUMNS = ("epoch", "objective", "val_auc", "val_top1_final")


class ObjectiveReporter(TuneReportCallback):
    """Forwards rank 0's report of every epoch to Tune, with the searched ``objective`` added.

    The worker's ``history`` (every earlier epoch, in each report) is not forwarded as is: Tune keeps every
    row. The first report after a (re)start carries the earlier epochs once, as :data:`EARLIER`: a trial
    restored from its checkpoint reports only the epochs after it, and the tune history keeps them all.
    """

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.objective = objective
        self.started = False

    def row(self, record: dict[str, Any]) -> dict[str, Any]:
        """One epoch's :data:`HISTORY_COLUMNS` from its record (``val_top1`` per head)."""
        errors = record["val_top1"]
        return {
            "epoch": int(record["epoch"]),
            "objective": self.objective.value(record),
            "val_auc": anytime_auc(self.objective.costs, errors),
            "val_top1_final": float(errors[-1]),
        }

    def after_report(self, run_context, metrics, checkpoint) -> None:
        first = {key: value for key, value in metrics[0].items() if key != "history"}
        first["objective"] = self.objective.value(first)
        if not self.started:
            self.started = True
            first[EARLIER] = json.dumps([self.row(r) for r in metrics[0].get("history", [])])
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs besides its sampled config (shipped once with ``tune.with_parameters``)."""

    train: TrainParams  # the tuned member alone (its depth, EANN weights, seed), tune's epochs and scaling
    manifest: dict[str, Any]
    shards: str
    endpoint_url: str | None
    space: SpaceParams
    objective: Objective
    train_storage: str  # Ray Train runs of the trials: <storage>/<experiment>/trials/<trial id>
    max_failures: int

    def trial_train(self, config: dict[str, Any]) -> TrainParams:
        """The train section as this trial sets it (validated again: the library checks every value).

        The member keeps its EANN weights where the trial's strategy takes them (AdaLoss does not)."""
        overrides = trial_overrides(self.space, config)
        raw = self.train.model_dump()
        raw["weighting"] = overrides["weighting"]
        raw["optimizer"] = {**raw["optimizer"], **overrides["optimizer"]}
        member = raw["members"][0]
        member["eann_weights"] &= takes_eann_weights(raw["weighting"]["strategy"])
        return TrainParams.model_validate(raw)

    def member_config(self, config: dict[str, Any]) -> WorkerConfig:
        """The resolved worker config of this trial (what ``train_loop_per_worker`` receives)."""
        train = self.trial_train(config)
        return run_config(
            train,
            train.members[0],
            self.manifest,
            shards=self.shards,
            endpoint_url=self.endpoint_url,
        )


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """The Tune function trainable: one Train run, its epochs streamed to Tune by the callback."""
    trainer = build_trainer(
        plan.member_config(config),
        name=ray.tune.get_context().get_trial_id(),
        storage_path=plan.train_storage,
        scaling=scaling_config(plan.train.scaling),
        max_failures=plan.max_failures,
        callbacks=[ObjectiveReporter(plan.objective)],
    )
    trainer.fit()
