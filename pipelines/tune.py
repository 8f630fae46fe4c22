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
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from ray import tune
from ray._common.constants import HEAD_NODE_RESOURCE_NAME  # private: why, below
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
from ray.tune.search import BasicVariantGenerator

from anytime.budget import meta_model
from anytime.data import load_manifest
from anytime.data.verify import verify_shards
from anytime.flops import head_costs
from anytime.metrics import milestone_heads
from anytime.weighting import eann_first_head
from pipelines import cli, console
from pipelines.config import Params, TrainParams, load_params
from pipelines.config.train import MILESTONE_KEYS, MemberParams
from pipelines.config.tune import TuneParams
from pipelines.io import atomic_path, write_json
from pipelines.paths import TUNE_BEST_PARAMS, TUNE_DIR
from pipelines.ray_cluster import NodeLog, stage_session, storage_uri
from pipelines.training.run_plan import code_digest, fingerprint, require_fits, resolve_shards, run_config
from pipelines.training.worker_config import WorkerConfig
from pipelines.tuning.halving import SynchronousHalving, rungs, verdicts
from pipelines.tuning.search_space import flat_overrides, param_space, trial_count, trial_overrides
from pipelines.tuning.trial import EARLIER, HISTORY_COLUMNS, Objective, TrialPlan, run_trial
from pipelines.workspace import workspace_lock

# ray._common, pinned (pyproject.toml: ray <2.61) and checked by tests/test_ray_private.py: the resource only
# the head node has, which no public API names; trial drivers must run there (docs/cluster.md).
HEAD_NODE_SHARE = 0.001  # of the head's one HEAD_NODE_RESOURCE_NAME: room for a thousand trial drivers
# Settings that change where or how fast the search runs, not what it finds.
NOT_FINGERPRINTED = ("storage_path", "max_concurrent_trials", "driver_cpus", "driver_memory_mb")


def member_objective(tp: TuneParams, entry: MemberParams, member: WorkerConfig) -> Objective:
    """The objective over the heads the member is trained for (EANN weights: half on, METHOD.md §6)."""
    costs = head_costs(meta_model(member.model), member.input_shape)
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
    require_fits(base, train.scaling, "tune")
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


REPEATABLE_SCHEDULERS = ("halving", "fifo")  # the others decide as trials report: timing matters


def scheduler(tp: TuneParams, trials: int):
    """Early stopping in epochs (``time_attr="epoch"``: Train reports 0-based epochs, resumed runs too)."""
    s = tp.scheduler
    if s.name == "halving":
        return SynchronousHalving(
            trials=trials,
            max_t=tp.epochs,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
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


def trial_name(trial: Trial) -> str:
    """``trial-<n>``, the trial's number in the search: its folder, and its name in the outputs (Tune's
    trial ids start with a prefix drawn afresh on every run)."""
    return f"trial-{trial.trial_id.rsplit('_', 1)[-1]}"


class TrialProgress(tune.Callback):
    """The trials on the console: a bar of finished trials (on a terminal) or a line per finished trial, a
    line for a failed or retried trial, and where each trial trains (:class:`NodeLog`)."""

    def __init__(self, total: int) -> None:
        self.node_log = NodeLog("tune")
        self.total = total
        self.bar = None
        self.finished = 0
        self.best = math.inf

    def __getstate__(self) -> dict:  # Tune keeps its run config (with this) to restore the search
        return {**self.__dict__, "bar": None}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if self.bar is None:
            self.bar = console.bar(desc="tune", unit="trial", total=self.total)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.node_log.report(trial_name(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        self.finished += 1
        if "objective" in result:
            self.best = min(self.best, result["objective"])
            epochs = int(result["epoch"]) + 1
            console.say(
                f"tune: {trial_name(trial)} ({self.finished} of {self.total}) ended after "
                f"{epochs} epoch(s): {result['objective']:.4f}"
            )
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(best=f"{self.best:.4f}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        console.warn(f"tune: {trial_name(trial)} failed and is run again ({trial.error_file})")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        console.warn(f"tune: {trial_name(trial)} failed ({trial.error_file})")

    def on_experiment_end(self, trials, **info) -> None:
        if self.bar is not None:
            self.bar.close()


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
    trials = trial_count(tp.space, tp.search_alg, tp.num_samples)
    storage = storage_uri(tp.storage_path)
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), trial_driver(tp))
    path = f"{storage.rstrip('/')}/{experiment}"
    if tune.Tuner.can_restore(path):
        console.say(f"tune: resuming the search stored in {path}")
        if tp.scheduler.name == "halving":  # see pipelines/tuning/halving.py
            console.warn(
                "tune: the rest of a resumed search runs without early stopping (Tune keeps no scheduler "
                "state), so its result may differ from an uninterrupted run's"
            )
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
            scheduler=scheduler(tp, trials),
            num_samples=tp.num_samples,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=tp.trial_max_failures),
            callbacks=[TrialProgress(trials)],
            verbose=1,
        ),
    )


def trial_history(frame: pd.DataFrame) -> pd.DataFrame:
    """A trial's epochs (:data:`HISTORY_COLUMNS`), one row each: its reports, and the epochs before a restore
    that the first report after it carries (:data:`EARLIER`); a re-reported epoch keeps its latest report."""
    earlier = [
        row for text in frame.get(EARLIER, pd.Series(dtype=object)).dropna() for row in json.loads(text)
    ]
    steps = pd.DataFrame(
        [*earlier, *frame[list(HISTORY_COLUMNS)].to_dict("records")], columns=list(HISTORY_COLUMNS)
    )
    return steps.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def epoch_frames(results: tune.ResultGrid) -> dict[str, pd.DataFrame | None]:
    """Each trial's epochs, one row each (:func:`trial_history`); None for a trial that never reported."""
    frames: dict[str, pd.DataFrame | None] = {}
    for result in results:
        frame = result.metrics_dataframe
        reported = frame is not None and not frame.empty and "objective" in frame
        frames[Path(result.path).name] = trial_history(frame) if reported else None
    return frames


def halving_stops(
    frames: dict[str, pd.DataFrame | None], errored: set[str], tp: TuneParams
) -> dict[str, int]:
    """The epoch count at which synchronous halving stopped each trial it stopped, from the trials' whole
    histories: the same verdicts on every run, however far a loser trained before its rung was complete."""
    s = tp.scheduler
    if s.name != "halving":
        return {}
    milestones = rungs(s.grace_period, s.reduction_factor, tp.epochs)
    histories = {}
    for trial_id, frame in frames.items():
        by_done = (
            {}
            if frame is None
            else dict(zip(frame["epoch"].astype(int) + 1, frame["objective"], strict=True))
        )
        if scored := {m: float(by_done[m]) for m in milestones if m in by_done}:
            histories[trial_id] = scored
    unscored = len(errored - set(histories))
    return verdicts(histories, milestones, s.reduction_factor, expected=len(frames) - unscored)


def tables(results: tune.ResultGrid, plan: TrialPlan, tp: TuneParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial (its settings, how far it got, its last objective) and one per trial epoch."""
    frames = epoch_frames(results)
    errored = {Path(result.path).name for result in results if result.error}
    stops = halving_stops(frames, errored, tp)
    rows, history = [], []
    for result in results:
        trial_id = Path(result.path).name
        overrides = trial_overrides(plan.space, result.config)
        weighting = overrides["weighting"]
        family = plan.space.weighting[result.config["weighting"]["candidate"]].family
        frame = frames[trial_id]
        if frame is not None and trial_id in stops:
            frame = frame[frame["epoch"] < stops[trial_id]]
        done = int(frame["epoch"].max()) + 1 if frame is not None else 0
        status = "error" if result.error else ("completed" if done >= tp.epochs else "stopped")
        last = frame.iloc[-1] if frame is not None else {}
        rows.append(
            {
                "trial_id": trial_id,
                "family": family,
                "strategy": weighting["strategy"],
                **{f"weighting.{k}": v for k, v in weighting.items() if k != "strategy"},
                **{f"optimizer.{k}": v for k, v in overrides["optimizer"].items()},
                "status": status,
                "epochs": done,
                "objective": float(last["objective"]) if frame is not None else math.nan,
                "val_auc": float(last["val_auc"]) if frame is not None else math.nan,
                "val_top1_final": float(last["val_top1_final"]) if frame is not None else math.nan,
            }
        )
        for _, step in frame.iterrows() if frame is not None else ():
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
        raise RuntimeError("no trial reported a result: see the Ray logs")
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
    trials, history = tables(results, plan, tp)
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


def parse_args(argv: Sequence[str] = ()) -> argparse.Namespace:
    parser = cli.stage_parser("pipelines.tune", __doc__)
    parser.add_argument("--address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local one)")
    parser.add_argument(
        "--print-overrides",
        nargs="?",
        const=str(TUNE_BEST_PARAMS),
        metavar="FILE",
        help=f"print the best params as dvc exp run -S arguments (default FILE: {TUNE_BEST_PARAMS}) and exit",
    )
    console.add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    if args.print_overrides:
        print_overrides(Path(args.print_overrides))
        return
    params = load_params(args.params)
    with workspace_lock("tune"):
        tune_stage(params, args)


def tune_stage(params: Params, args: argparse.Namespace) -> None:
    plan, experiment = plan_search(params)
    verify_shards(plan.shards, plan.manifest, endpoint_url=plan.endpoint_url)
    # Ctrl-C must end the stage, not make Tune return early with partial results that DVC would record as
    # done; Tune keeps its experiment state on disk as it goes, so a re-run restores it.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    tp = params.tune
    console.say(
        f"tune: {tp.num_samples} {tp.search_alg} sample(s) of {tp.epochs} epoch(s), "
        f"scheduler {tp.scheduler.name}, seed {tp.seed}: search {experiment}"
    )
    if tp.scheduler.name not in REPEATABLE_SCHEDULERS:
        console.warn(
            f"tune: {tp.scheduler.name} stops trials by the order they report in, so the result may differ "
            f"between runs (halving and fifo do not)"
        )
    with console.stage_console("tune", verbose=args.verbose):
        with stage_session(
            "tune",
            args.address,
            [tp.scaling],
            shared_paths={"train.shards": plan.shards, "tune.storage_path": tp.storage_path},
            resume_hint="re-run the stage to resume the search",
            trial_driver=trial_driver(tp),
        ):
            results = make_tuner(params, plan, experiment).fit()
        try:
            summary, best_trial = write_outputs(results, plan, params, experiment)
        except RuntimeError as exc:  # every trial failed: nothing to write, the log says why
            console.warn(f"error: {exc}")
            sys.exit(1)
    console.say(
        f"tune: best of {summary['trials']} trials is {best_trial} ({summary['best_strategy']}, "
        f"{summary['objective']} = {summary['best_objective']:.4f}); settings in {TUNE_BEST_PARAMS}"
    )


if __name__ == "__main__":
    cli.run_command(main)
