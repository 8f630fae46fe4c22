"""The tune section: schema, conditional search space, best params handed to DVC, picking the best trial."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc.utils.hydra import apply_overrides
from ray.tune.search.variant_generator import generate_variants

from anytime.metrics import anytime_auc, milestone_heads
from anytime.weighting import create_strategy, eann_first_head, strategy_hparams
from pipelines.cli import UserError
from pipelines.config import load_params, validate_params
from pipelines.config.train import MemberParams, TrainParams
from pipelines.paths import TUNE_BEST_PARAMS
from pipelines.training.run_plan import run_config
from pipelines.training.worker_config import WorkerConfig
from pipelines.tune import member_objective, pick_best, plan_search, plot_trials, tuned_train
from pipelines.tuning.search_space import flat_overrides, param_space, trial_overrides
from pipelines.tuning.trial import Objective, TrialPlan
from tests.fixtures.params import ROOT, error_for, project_params, with_section

STATIC = {"const", "linear", "half_end", "sieve", "exp_lin"}


def with_tune(**tune) -> dict:
    return with_section("tune", **tune)


def samples(space, search_alg: str, n: int) -> list[dict]:
    """``n`` draws as Ray's variant generator makes them (a grid yields each combination per draw)."""
    rng = np.random.default_rng(0)
    spec = param_space(space, search_alg)
    return [config for _ in range(n) for _, config in generate_variants(spec, random_state=rng)]


def test_project_tune_section_covers_every_strategy_family():
    tune = load_params(ROOT / "params.yaml").tune
    assert [c.family for c in tune.space.weighting] == ["static", "alternating", "adaloss", "noregret"]
    assert tune.objective == "val_auc" and tune.scheduler.name == "halving" and tune.search_alg == "random"
    assert set(tune.space.optimizer) == {"lr", "weight_decay"}


def test_random_samples_are_conditional_and_build_with_the_library():
    space = load_params(ROOT / "params.yaml").tune.space
    seen = set()
    for config in samples(space, "random", 300):
        weighting = trial_overrides(space, config)["weighting"]
        name, hparams = weighting["strategy"], {k: v for k, v in weighting.items() if k != "strategy"}
        seen.add(name)
        create_strategy(name, num_heads=6, **hparams)  # raises on any illegal sample
        if name in STATIC:
            assert set(hparams) <= {"normalisation"}
        elif name == "alternating":
            assert set(hparams) == {"scheme", "rho"} and 1.5 <= hparams["rho"] <= 4.0
        elif name == "adaloss":
            assert set(hparams) == {"gamma", "momentum", "update_period", "final_extra"}
        else:  # no-regret: AVG-L alone takes a momentum
            expected = {"gamma", "rho_last", "momentum"} if name == "avgl" else {"gamma", "rho_last"}
            assert set(hparams) == expected
        lr = config["optimizer"]["lr"]
        assert 0.01 <= lr <= 0.5
    assert seen == STATIC | {"alternating", "adaloss", "rwm", "exp3", "avgl"}


def test_grid_runs_every_candidate_for_every_optimizer_grid_value():
    raw = project_params()["tune"]["space"]
    raw["optimizer"] = {"lr": {"grid": [0.01, 0.1]}, "weight_decay": 0.0}
    space = validate_params(with_tune(space=raw)).tune.space
    configs = samples(space, "grid", 1)
    assert len(configs) == 4 * 2
    pairs = {(c["weighting"]["candidate"], c["optimizer"]["lr"]) for c in configs}
    assert pairs == {(i, lr) for i in range(4) for lr in (0.01, 0.1)}


@pytest.mark.parametrize(
    ("candidate", "needle"),
    [
        ({"family": "adaloss", "gamma": {"uniform": [0.0, 0.2]}}, "gamma"),  # gamma must be > 0
        ({"family": "adaloss", "rho": 2.0}, "rho"),  # not an AdaLoss hyperparameter
        ({"family": "noregret", "learner": {"choice": ["rwm", "hedge"]}}, "hedge"),
        ({"family": "noregret", "learner": "avgl", "momentum": {"uniform": [0.5, 1.0]}}, "momentum"),
        ({"family": "static", "scheme": {"choice": ["sieve", "cubic"]}}, "cubic"),
        ({"family": "alternating", "rho": {"uniform": [3.0, 2.0]}}, "[3.0, 2.0]"),
        ({"family": "alternating", "rho": {"normal": [2.0, 1.0]}}, "search dimension"),
        ({"family": "adaloss", "update_period": {"grid": [10, 100]}}, "grid"),
        ({"family": "hyperband"}, "hyperband"),
    ],
)
def test_bad_weighting_candidates_fail_at_the_door_naming_the_problem(candidate, needle):
    raw = project_params()["tune"]["space"]
    raw["weighting"] = [candidate]
    message = error_for(with_tune(space=raw))
    assert message.startswith("params.yaml: ") and "tune.space.weighting.0" in message
    assert needle in message


@pytest.mark.parametrize(
    ("tune", "needle"),
    [
        ({"space": {"optimizer": {"lr": {"loguniform": [0.0, 0.1]}}}}, "low > 0"),
        ({"space": {"optimizer": {"momentum": {"uniform": [0.5, 1.5]}}}}, "optimizer.momentum = 1.5"),
        ({"space": {"optimizer": {"learning_rate": 0.1}}}, "learning_rate"),
        ({"objective": "test_auc"}, "tune.objective"),
        ({"scheduler": {"name": "pbt"}}, "tune.scheduler.name"),
        ({"search_alg": "optuna"}, "tune.search_alg"),
        ({"driver_cpus": 0, "driver_memory_mb": 0}, "non-empty"),
        ({"milestone": 0.3}, "tune.milestone"),
        ({"num_samples": 0}, "tune.num_samples"),
        ({"sample": 3}, "unknown key 'tune.sample'"),
    ],
)
def test_bad_tune_settings_fail_with_one_line(tune, needle):
    assert needle in error_for(with_tune(**tune))


def test_best_params_apply_through_dvc_overrides(tmp_path, monkeypatch):
    """The printed ``-S`` arguments, applied by DVC's own override code, give exactly the trial's train
    settings, and clear a previous strategy's leftover hyperparameter."""
    space = load_params(ROOT / "params.yaml").tune.space
    config = next(c for c in samples(space, "random", 300) if c["weighting"]["candidate"] == 2)  # adaloss
    overrides = trial_overrides(space, config)
    out = tmp_path / TUNE_BEST_PARAMS
    out.parent.mkdir(parents=True)
    out.write_text(yaml.safe_dump(flat_overrides(overrides, load_params(ROOT / "params.yaml").train)))
    printed = subprocess.run(
        [sys.executable, "-m", "pipelines.tune", "--print-overrides", str(out)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    assert printed[0::2] == ["-S"] * (len(printed) // 2)
    params = tmp_path / "params.yaml"
    raw = project_params()
    raw["train"]["weighting"] = {"strategy": "alternating", "scheme": "sieve", "rho": 3.0}
    params.write_text(yaml.safe_dump(raw))
    apply_overrides(params, printed[1::2])
    train = load_params(params).train
    assert train.weighting.strategy == "adaloss" and train.weighting.rho is None
    assert train.eann is not None and train.eann.eann_weights is False  # AdaLoss takes no EANN weights
    assert train.weighting.hparams() == {k: v for k, v in overrides["weighting"].items() if k != "strategy"}
    assert train.optimizer.lr == overrides["optimizer"]["lr"]
    assert train.optimizer.weight_decay == overrides["optimizer"]["weight_decay"]
    assert train.optimizer.momentum == raw["train"]["optimizer"]["momentum"]  # untouched
    assert train.eann.eann_weights is False  # AdaLoss takes none: the applied params validate


def test_print_overrides_without_results_is_one_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.tune", "--print-overrides", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "missing.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


COSTS = (1, 2, 3, 4, 5, 6)  # six heads at equal steps: AUC pieces of 1/6


def test_objective_reads_validation_metrics_only():
    metrics = {"val_top1": [0.5, 0.4, 0.3, 0.3, 0.2, 0.1], "test_top1": [0.0] * 6, "test_auc": 0.0}
    # A standalone member: the whole-curve AUC, (0.5 + 0.5 + 0.4 + 0.3 + 0.3 + 0.2) / 6.
    assert Objective("val_auc", COSTS, 0, -1).value(metrics) == pytest.approx(2.2 / 6)
    assert Objective("val_auc", COSTS, 0, -1).value(metrics) == anytime_auc(COSTS, metrics["val_top1"])
    assert Objective("val_top1", COSTS, 0, 4).value(metrics) == 0.2


def test_objective_of_an_eann_member_ignores_the_heads_its_weights_leave_untrained():
    # Heads 0..2 are at chance (EANN weights zero them); the trained half reaches 20%, 15%, 10%.
    untrained, trained = [0.9, 0.9, 0.9], [0.2, 0.15, 0.1]
    objective = Objective("val_auc", COSTS, eann_first_head(6), -1)
    value = objective.value({"val_top1": untrained + trained})
    # Budget before head 3 is charged head 3's error: (4 * 0.2 + 0.2 + 0.15) / 6.
    assert value == pytest.approx(1.15 / 6)
    assert Objective("val_auc", COSTS, 0, -1).value({"val_top1": untrained + trained}) == pytest.approx(
        3.95 / 6
    )
    # Whatever the untrained heads do, trials are ranked by the trained ones alone.
    assert objective.value({"val_top1": [0.1, 0.5, 1.0, *trained]}) == value
    assert objective.value({"val_top1": [*untrained, 0.2, 0.1, 0.1]}) < value


def member_config(n: int) -> WorkerConfig:
    train = TrainParams.model_validate({"model": {"name": "resann", "c": 4, "period": 1}})
    manifest = {"image_shape": [8, 8, 1], "num_classes": 10}
    return run_config(train, MemberParams(name="m2", n=n), manifest, shards="/s", endpoint_url=None)


@pytest.mark.parametrize(("eann_weights", "first_head"), [(False, 0), (True, 6)])
def test_member_objective_starts_at_the_first_trained_head(eann_weights, first_head):
    tune = validate_params(with_tune(objective="val_auc")).tune
    entry = MemberParams(name="m2", n=4, eann_weights=eann_weights)
    objective = member_objective(tune, entry, member_config(4))
    assert (len(objective.costs), objective.first_head) == (12, first_head)


def test_val_top1_at_an_untrained_head_is_one_clear_error():
    tune = validate_params(with_tune(objective="val_top1", milestone=0.25)).tune
    entry = MemberParams(name="m2", n=4, eann_weights=True)
    with pytest.raises(UserError, match=r"head \d of member m2 is left untrained .* \(heads 0\.\.5\)"):
        member_objective(tune, entry, member_config(4))
    later = validate_params(with_tune(objective="val_top1", milestone=0.75)).tune
    objective = member_objective(later, entry, member_config(4))
    assert objective.head == milestone_heads(objective.costs)["0.75"] >= objective.first_head


def trials_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "strategy": ["sieve", "adaloss", "sieve", "exp3"],
            "status": ["completed", "stopped", "completed", "error"],
            "epochs": [4, 1, 4, 0],
            "objective": [0.30, 0.10, 0.25, float("nan")],
        }
    )


def test_best_is_the_lowest_completed_trial_not_an_early_stopped_one():
    trials = trials_frame()
    assert pick_best(trials)["trial_id"] == "c"
    only_stopped = trials[trials["status"] != "completed"]
    assert pick_best(only_stopped)["trial_id"] == "b"
    with pytest.raises(RuntimeError, match="no trial"):
        pick_best(trials[trials["status"] == "error"])


def test_plot_writes_a_png(tmp_path):
    history = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "c", "c"],
            "strategy": ["sieve", "sieve", "adaloss", "sieve", "sieve"],
            "epoch": [0, 1, 0, 0, 1],
            "objective": [0.5, 0.3, 0.1, 0.6, 0.25],
        }
    )
    path = tmp_path / "trials.png"
    plot_trials(trials_frame(), history, "val_auc", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["trials.png"]  # no temp file left behind


def test_candidates_are_copied_not_shared():
    """Resolving a sample must not mutate the trial's config (Tune stores and re-reads it on restore)."""
    space = load_params(ROOT / "params.yaml").tune.space
    config = samples(space, "random", 1)[0]
    before = copy.deepcopy(config)
    trial_overrides(space, config)
    assert config == before


def test_unknown_member_fails_before_any_work(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(with_tune(member="m9")))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.tune", "--params", str(params)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {params}: tune.member = 'm9' is not a train member: choose from ['m0', 'm1', 'm2']"
    ]
    assert list(tmp_path.iterdir()) == [params]  # no Ray storage, no outputs


def test_a_trial_keeps_the_members_eann_weights_where_its_strategy_takes_them():
    """The tuned member with the trial's weighting: AdaLoss (no ``eann``) trains it without EANN weights."""
    params = load_params(ROOT / "params.yaml")
    train = tuned_train(params)
    assert [m.name for m in train.members] == ["m2"] and train.members[0].eann_weights and train.eann is None
    manifest = {"image_shape": [8, 8, 1], "num_classes": 10}
    objective = Objective("val_auc", costs=(1, 2), first_head=0, head=-1)
    plan = TrialPlan(train, manifest, "/s", None, params.tune.space, objective, "/storage", 0)
    optimizer = {"lr": 0.1, "weight_decay": 1e-4}
    samples = {
        0: {"scheme": "exp_lin"},
        2: {"gamma": 0.1, "momentum": 0.9, "update_period": 5, "final_extra": 0.5},
        3: {"learner": "exp3", "gamma": 0.2, "rho_last": 0.7, "momentum": 0.9},
    }
    for candidate, sample in samples.items():
        config = plan.member_config(
            {"weighting": {"candidate": candidate, "weighting": sample}, "optimizer": optimizer}
        )
        weighting = config.weighting
        assert config.name == "m2" and config.epochs == params.tune.epochs
        assert weighting.get("eann", False) == ("eann" in strategy_hparams(weighting["strategy"]))
    assert weighting["strategy"] == "exp3" and "momentum" not in weighting  # AVG-L's only


def test_applying_the_winner_keeps_the_search_name_so_a_rerun_restores_it(tmp_path, digits_shards):
    """The tune stage takes params.yaml's train section whole, so applying the winner re-runs it; the
    search's name leaves out what the trials replace, and the stage restores the finished search."""
    raw = project_params()
    raw["train"]["shards"] = str(digits_shards)
    name = plan_search(validate_params(raw))[1]
    space = validate_params(raw).tune.space
    # A winner that uses EANN weights (one that cannot turns them off: that moves the objective's first head,
    # a new search, as it was when the stage took train.eann key by key).
    config = next(c for c in samples(space, "random", 300) if c["weighting"]["candidate"] == 1)  # alternating
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    flat = flat_overrides(trial_overrides(space, config), validate_params(raw).train)
    apply_overrides(params, [f"++{key}={json.dumps(value)}" for key, value in flat.items()])
    applied = load_params(params)
    assert applied.train.weighting.strategy == "alternating" and applied.train.eann.eann_weights
    assert applied.train.optimizer.lr == config["optimizer"]["lr"] != raw["train"]["optimizer"]["lr"]
    assert plan_search(applied)[1] == name
    kept = copy.deepcopy(raw)  # a setting the trials keep: a new search
    kept["train"]["optimizer"]["momentum"] = 0.5
    assert plan_search(validate_params(kept))[1] != name
