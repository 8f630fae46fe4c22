"""DVC stage ``tune``: Ray Tune search over the weighting strategy, its hyperparameters and the optimiser.

Each trial trains the tuned member (``tune.member``, a network of the train section) for ``tune.epochs`` with
one sample of ``tune.space`` (see :mod:`pipelines.tuning.trial`) and is judged on the validation split only,
on the heads that member is trained for: the area under its anytime error curve (``val_auc``) or the error at
a milestone head (``val_top1``). A member with EANN weights (any but the first, by default) is trained only
from half its depth, so its objective starts at that head (METHOD.md §6): its untrained first half, at
chance level by design, would otherwise make up most of the area.
Outputs in ``outputs/tune/``: every trial (``trials.csv`` / ``trials.parquet``), every epoch of every trial
(``history.csv``), a figure (``trials.png``), the winner (``best.json``) and its settings as train params
(``best_params.yaml``, ``train.<section>.<key>: value``) to use with

    dvc exp run $(python -m pipelines.tune --print-overrides)

A killed run resumes: the experiment lives in ``tune.storage_path`` under a name fingerprinting the search
(params, data, code), and the stage restores it with ``Tuner.restore`` when it exists.

    python -m pipelines.tune [--params params.yaml] [--address ADDR] [--print-overrides [FILE]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from ray import tune
from ray._common.constants import HEAD_NODE_RESOURCE_NAME  # private: why, below
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search import BasicVariantGenerator

from anytime.data import load_manifest
from anytime.flops import head_costs
from anytime.metrics import milestone_heads
from anytime.models import create_model
from anytime.weighting import eann_first_head
from pipelines import cli
from pipelines.config import Params, TrainParams, load_params
from pipelines.config.train import MILESTONE_KEYS, MemberParams
from pipelines.config.tune import TuneParams
from pipelines.io import atomic_path, write_json
from pipelines.paths import TUNE_BEST_PARAMS, TUNE_DIR
from pipelines.ray_cluster import NodeLog, stage_session, storage_uri
from pipelines.training.run_plan import code_digest, fingerprint, resolve_shards, run_config
from pipelines.training.worker_config import WorkerConfig
from pipelines.tuning.search_space import flat_overrides, param_space, trial_overrides
from pipelines.tuning.trial import Objective, TrialPlan, run_trial

# ray._common, pinned (pyproject.toml: ray <2.61) and checked by tests/test_ray_private.py: the resource only
# the head node has, which no public API names; trial drivers must run there (docs/cluster.md).
HEAD_NODE_SHARE = 0.001  # of the head's one HEAD_NODE_RESOURCE_NAME: room for a thousand trial drivers
# Settings that change where or how fast the search runs, not what it finds.
NOT_FINGERPRINTED = ("storage_path", "max_concurrent_trials", "driver_cpus", "driver_memory_mb")


def member_objective(tp: TuneParams, entry: MemberParams, member: WorkerConfig) -> Objective:
    """The objective over the heads the member is trained for (EANN weights: half on, METHOD.md §6)."""
    costs = head_costs(create_model(**member.model), member.input_shape)
    head = milestone_heads(costs)[MILESTONE_KEYS[tp.milestone]]
    first = eann_first_head(len(costs)) if entry.eann_weights else 0
    if tp.objective == "val_top1":
        if head is None:
            raise cli.UserError(
                f"tune.milestone = {tp.milestone}: member {entry.name} has no head that cheap"
            )
        if head < first:
            raise cli.UserError(
                f"tune.milestone = {tp.milestone}: head {head} of member {entry.name} is left untrained by "
                f"its EANN weights (heads 0..{first - 1}); choose a later milestone or objective val_auc"
            )
    return Objective(tp.objective, tuple(costs), first, head if head is not None else -1)


def tuned_train(params: Params) -> TrainParams:
    """The train section every trial starts from: the tuned member alone (its weighting is the trial's), with
    tune's epochs and scaling."""
    tp = params.tune
    entries = {e.name: e for e in params.train.member_entries()}
    name = list(entries)[-1] if tp.member == "last" else tp.member
    if name not in entries:
        raise cli.UserError(f"tune.member = {tp.member!r} is not a train member: choose from {list(entries)}")
    entry = entries[name].model_copy(update={"epochs": None, "weighting": None})
    update = {"epochs": tp.epochs, "scaling": tp.scaling, "eann": None, "members": [entry]}
    return params.train.model_copy(update=update)


def plan_search(params: Params) -> tuple[TrialPlan, str]:
    """The trials' shared plan and the experiment name (``<tune.name>-<fingerprint>``)."""
    tp = params.tune
    train = tuned_train(params)
    entry = train.members[0]
    shards = resolve_shards(params.train, params.data.dataset)
    manifest = load_manifest(shards, endpoint_url=params.data.endpoint_url)
    base = run_config(train, entry, manifest, shards=shards, endpoint_url=params.data.endpoint_url)
    objective = member_objective(tp, entry, base)
    search = tp.model_dump(mode="json", exclude=set(NOT_FINGERPRINTED))
    # Every trial replaces the weighting and the optimiser settings in the space: applying the winner to
    # params.yaml then leaves the name alone, and the re-run stage restores this search.
    trained = base.model_dump(mode="json", exclude={"weighting"})
    trained["optimizer"] = {k: v for k, v in base.optimizer.items() if k not in tp.space.optimizer}
    digest = fingerprint(
        {"tune": search, "member": trained, "objective_first_head": objective.first_head},
        manifest,
        code_digest(),
    )
    experiment = f"{tp.name}-{digest[:12]}"
    plan = TrialPlan(
        train=train,
        manifest=manifest,
        shards=shards,
        endpoint_url=params.data.endpoint_url,
        space=tp.space,
        objective=objective,
        train_storage=f"{storage_uri(tp.storage_path).rstrip('/')}/{experiment}/trials",
        max_failures=tp.max_failures,
    )
    return plan, experiment


def scheduler(tp: TuneParams):
    """Early stopping in epochs (``time_attr="epoch"``: Train reports 0-based epochs, resumed runs too)."""
    s = tp.scheduler
    if s.name == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=tp.epochs,
            grace_period=min(s.grace_period, tp.epochs),
            reduction_factor=s.reduction_factor,
        )
    if s.name == "median":
        return MedianStoppingRule(
            time_attr="epoch", grace_period=s.grace_period, min_samples_required=s.min_samples_required
        )
    return FIFOScheduler()


class TrialNodeLog(tune.Callback):
    """A line whenever a trial reports from another node than before: where each trial trains, and where it
    went on after its node was lost (the train stage logs its runs the same way)."""

    def __init__(self) -> None:
        self.node_log = NodeLog("tune")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if line := self.node_log.moved(f"trial {trial.trial_id}", result):
            print(line, flush=True)


def trial_driver(tp: TuneParams) -> dict[str, float]:
    """What a trial's driver asks for, on the head node.

    It only waits on its Train run, whose controller Ray places beside it: on the head, with the stage's own
    driver, losing a worker node costs the trial only its worker group, which Train restarts from the last
    checkpoint (Ray pins its own Train state actor to the head the same way).
    """
    memory = tp.driver_memory_mb * 2**20
    return {"CPU": tp.driver_cpus, "memory": memory, HEAD_NODE_RESOURCE_NAME: HEAD_NODE_SHARE}


def make_tuner(params: Params, plan: TrialPlan, experiment: str) -> tune.Tuner:
    """A new Tuner, or the stored one of the same search when a previous run was interrupted."""
    tp = params.tune
    storage = storage_uri(tp.storage_path)
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), trial_driver(tp))
    path = f"{storage.rstrip('/')}/{experiment}"
    if tune.Tuner.can_restore(path):
        print(f"tune: resuming {path}", flush=True)
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(tp.space, tp.search_alg),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="min",
            # Tune ignores max_concurrent_trials when given a variant generator: it limits itself.
            search_alg=BasicVariantGenerator(
                random_state=tp.seed, max_concurrent=tp.max_concurrent_trials or 0
            ),
            scheduler=scheduler(tp),
            num_samples=tp.num_samples,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=tp.trial_max_failures),
            callbacks=[TrialNodeLog()],
            verbose=1,
        ),
    )


def tables(results: tune.ResultGrid, plan: TrialPlan, epochs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial (its settings, how far it got, its last objective) and one per trial epoch."""
    rows, history = [], []
    for result in results:
        trial_id = Path(result.path).name
        overrides = trial_overrides(plan.space, result.config)
        weighting = overrides["weighting"]
        family = plan.space.weighting[result.config["weighting"]["candidate"]].family
        frame = result.metrics_dataframe
        reported = frame is not None and not frame.empty and "objective" in frame
        done = int(frame["epoch"].max()) + 1 if reported else 0
        status = "error" if result.error else ("completed" if done >= epochs else "stopped")
        last = frame.iloc[-1] if reported else {}
        rows.append(
            {
                "trial_id": trial_id,
                "family": family,
                "strategy": weighting["strategy"],
                **{f"weighting.{k}": v for k, v in weighting.items() if k != "strategy"},
                **{f"optimizer.{k}": v for k, v in overrides["optimizer"].items()},
                "status": status,
                "epochs": done,
                "objective": float(last["objective"]) if reported else math.nan,
                "val_auc": float(last["val_auc"]) if reported else math.nan,
                "val_top1_final": float(last["val_top1_final"]) if reported else math.nan,
            }
        )
        if reported:  # a restored trial re-reports from its last checkpoint: keep each epoch's latest
            for _, step in frame.drop_duplicates("epoch", keep="last").iterrows():
                history.append(
                    {
                        "trial_id": trial_id,
                        "strategy": weighting["strategy"],
                        "epoch": int(step["epoch"]),
                        "objective": float(step["objective"]),
                        "val_auc": float(step["val_auc"]),
                        "val_top1_final": float(step["val_top1_final"]),
                    }
                )
    trials = pd.DataFrame(rows).sort_values(["objective", "trial_id"], na_position="last")
    return trials.reset_index(drop=True), pd.DataFrame(history)


def pick_best(trials: pd.DataFrame) -> pd.Series:
    """Lowest objective among trials that ran every epoch (an early-stopped trial's last value is from
    fewer epochs, not comparable); if none completed, among all that reported."""
    scored = trials[trials["objective"].notna()]
    if scored.empty:
        raise RuntimeError("no trial reported a result: see the Ray logs above")
    completed = scored[scored["status"] == "completed"]
    pool = completed if not completed.empty else scored
    return pool.sort_values(["objective", "trial_id"]).iloc[0]


def plot_trials(trials: pd.DataFrame, history: pd.DataFrame, objective: str, path: Path) -> None:
    """Left: every trial's objective by strategy (hollow = stopped early). Right: objective per epoch."""
    strategies = sorted(trials["strategy"].unique())
    palette = matplotlib.colormaps["tab10"]
    colours = {s: palette(i % 10) for i, s in enumerate(strategies)}
    fig = Figure(figsize=(12, 4.5), layout="tight")
    left, right = fig.subplots(1, 2)
    for i, strategy in enumerate(strategies):
        group = trials[(trials["strategy"] == strategy) & trials["objective"].notna()]
        for _, row in group.iterrows():
            done = row["status"] == "completed"
            left.scatter(
                i,
                row["objective"],
                color=colours[strategy],
                facecolors=colours[strategy] if done else "none",
                s=40,
            )
    left.set_xticks(range(len(strategies)), strategies, rotation=30, ha="right")
    left.set_ylabel(f"{objective} (validation, lower is better)")
    left.set_title("Trials by weighting strategy (hollow: stopped early)")
    for _, steps in history.groupby("trial_id") if not history.empty else []:
        strategy = steps["strategy"].iloc[0]
        right.plot(steps["epoch"] + 1, steps["objective"], color=colours[strategy], marker=".", alpha=0.8)
    for strategy in strategies:
        right.plot([], [], color=colours[strategy], label=strategy)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("epoch")
    right.set_ylabel(objective)
    right.set_title("Objective over training")
    right.legend(fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def write_outputs(
    results: tune.ResultGrid, plan: TrialPlan, params: Params, experiment: str
) -> tuple[dict, str]:
    """The tables, figure, winner's settings and ``best.json``; returns that summary and the best trial."""
    tp = params.tune
    trials, history = tables(results, plan, tp.epochs)
    best = pick_best(trials)
    chosen = next(r for r in results if Path(r.path).name == best["trial_id"])
    overrides = flat_overrides(trial_overrides(plan.space, chosen.config), params.train)
    for name in ("trials.csv", "trials.parquet"):
        write_table(trials, TUNE_DIR / name)
    write_table(history, TUNE_DIR / "history.csv")
    plot_trials(trials, history, tp.objective, TUNE_DIR / "trials.png")
    with atomic_path(TUNE_BEST_PARAMS) as tmp:
        tmp.write_text(
            f"# Best of {len(trials)} trials of {experiment} ({tp.objective} = {best['objective']:.6g}).\n"
            "# Apply with: dvc exp run $(python -m pipelines.tune --print-overrides)\n"
            + yaml.safe_dump(overrides, sort_keys=False)
        )
    # Columns of `dvc exp show`: the winner's settings are in best_params.yaml, the rest in trials.csv.
    summary = {
        "objective": tp.objective,
        "best_objective": float(best["objective"]),
        "best_strategy": best["strategy"],
        "trials": len(trials),
    }
    write_json(TUNE_DIR / "best.json", summary)
    return summary, best["trial_id"]


def print_overrides(path: Path) -> None:
    """``-S ++key=value`` arguments for ``dvc exp run`` (Hydra's ``++``: set, adding keys params.yaml lacks;
    null clears another strategy's leftover hyperparameters)."""
    if not path.exists():
        raise cli.UserError(f"{path} not found: run the tune stage first (dvc repro tune)")
    overrides = yaml.safe_load(path.read_text())
    print(" ".join(f"-S ++{key}={json.dumps(value)}" for key, value in overrides.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument(
        "--print-overrides",
        nargs="?",
        const=str(TUNE_BEST_PARAMS),
        metavar="FILE",
        help=f"print the best params as dvc exp run -S arguments (default FILE: {TUNE_BEST_PARAMS}) and exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.print_overrides:
        print_overrides(Path(args.print_overrides))
        return
    params = load_params(args.params)
    plan, experiment = plan_search(params)
    # Ctrl-C must end the stage, not make Tune return early with partial results that DVC would record as
    # done; Tune keeps its experiment state on disk as it goes, so a re-run restores it.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    with stage_session(
        args.address,
        params.tune.scaling,
        shared_paths={"train.shards": plan.shards, "tune.storage_path": params.tune.storage_path},
        resume_hint="re-run the stage to resume the search",
        trial_driver=trial_driver(params.tune),
    ):
        results = make_tuner(params, plan, experiment).fit()
    try:
        summary, best_trial = write_outputs(results, plan, params, experiment)
    except RuntimeError as exc:  # every trial failed: nothing to write, the Ray log above says why
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(
        f"tune: best of {summary['trials']} trials is {best_trial} ({summary['best_strategy']}, "
        f"{summary['objective']} = {summary['best_objective']:.4f}); settings in {TUNE_BEST_PARAMS}"
    )


if __name__ == "__main__":
    cli.run(main)
