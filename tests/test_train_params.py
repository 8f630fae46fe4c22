"""The train section's schema and the run plan: members, OPT baselines, fingerprints, the fault hook."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from anytime.flops import head_costs
from anytime.metrics import milestone_heads
from anytime.models import create_model
from anytime.weighting import create_strategy, list_strategies, strategy_hparams
from pipelines.config import ParamsError, load_params, validate_params
from pipelines.config.train import TrainParams
from pipelines.paths import OPT_DIR
from pipelines.training.run_plan import code_digest, fingerprint, plan_runs
from pipelines.training.train_worker import InjectedFault, maybe_inject_fault

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = {"image_shape": [8, 8, 1], "num_classes": 10, "splits": {"train": {"shards": [{"sha256": "ab"}]}}}


def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_train(**train) -> dict:
    raw = project_params()
    raw["train"] = {**raw["train"], **train}
    return raw


def error_for(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        validate_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_project_params_validate_with_generated_members():
    params = load_params(ROOT / "params.yaml").train
    assert params.eann is not None and params.members is None
    assert params.epochs >= 1 and params.scaling.cpus_per_worker == 0.25  # members must fit side by side
    assert params.scaling.loader_workers == 0


@pytest.mark.parametrize(
    ("scaling", "loaders", "cpus"),
    [
        ({}, 0, 0.25),  # CPU: a quarter core per member, no loader processes beside the training one
        ({"use_gpu": True}, 2, 3.0),  # GPU: a core to launch kernels, two loader processes reading ahead
        ({"loader_workers": 3}, 3, 3.25),  # each loader process is a whole CPU
        ({"use_gpu": True, "loader_workers": 0}, 0, 1.0),
        ({"use_gpu": True, "cpus_per_worker": 8}, 2, 8.0),  # an explicit value wins
    ],
)
def test_cpus_per_worker_follow_the_loader_workers(scaling, loaders, cpus):
    params = TrainParams(scaling=scaling).scaling
    assert (params.loader_workers, params.cpus_per_worker) == (loaders, cpus)


@pytest.mark.parametrize(
    ("train", "named"),
    [
        ({"epoch": 3}, "train.epoch"),
        ({"epochs": 0}, "train.epochs"),
        ({"weighting": {"strategy": "sieve", "gamma": 0.1}}, "gamma"),
        ({"weighting": {"strategy": "adaloss", "gamma": 2.0}}, "gamma=2.0"),
        ({"weighting": {"strategy": "nope"}}, "train.weighting.strategy"),
        ({"model": {"name": "resann", "depth": 50}}, "depth"),
        ({"scaling": {"cpus_per_worker": 0}}, "train.scaling.cpus_per_worker"),
        ({"members": [{"name": "a", "n": 1}, {"name": "a", "n": 2}]}, "a repeated"),
        ({"members": [{"name": "../x", "n": 1}]}, "train.members.0.name"),
        ({"opt": {"milestones": [0.3]}}, "train.opt.milestones.0"),
        ({"compile": "maybe"}, "train.compile"),
    ],
)
def test_bad_train_value_is_one_line_naming_it(train, named):
    raw = project_params()
    raw["train"] = {
        **{k: v for k, v in raw["train"].items() if k != "eann" or "members" not in train},
        **train,
    }
    assert named in error_for(raw)


def test_eann_and_explicit_members_exclude_each_other():
    raw = with_train(members=[{"name": "a", "n": 1}])
    assert "either eann" in error_for(raw)


def test_generated_members_grow_by_base_and_later_ones_zero_their_first_half():
    params = TrainParams.model_validate({"eann": {"base": 3, "members": 3, "n0": 2}, "opt": {"members": []}})
    runs = plan_runs(params, MANIFEST, shards="/s", code="c")
    assert [r.name for r in runs] == ["m0", "m1", "m2"]
    assert [r.config.model["n"] for r in runs] == [2, 6, 18]
    assert [r.config.weighting.get("eann", False) for r in runs] == [False, True, True]
    model = {"name": "resann", "c": 16, "period": 1, "shortcut": "pad", "n": 2}
    assert runs[0].config.model == {**model, "num_classes": 10, "in_channels": 1}


def test_opt_baselines_sit_at_the_measured_milestone_heads():
    params = TrainParams.model_validate({"eann": {"members": 2}, "model": {"name": "resann", "c": 4}})
    runs = plan_runs(params, MANIFEST, shards="/s", code="c")
    last = next(r for r in runs if r.name == "m1").config
    expected = sorted(set(milestone_heads(head_costs(create_model(**last.model), (1, 8, 8))).values()))
    opts = [r for r in runs if r.kind == "opt"]
    assert [r.config.model["truncate_at"] for r in opts] == expected
    assert [r.name for r in opts] == [f"m1-opt{j}" for j in expected]
    for run in opts:
        j = run.config.model["truncate_at"]
        assert run.config.weighting == {"strategy": "opt", "j": j} and run.config.name == run.name
        assert run.out_dir == OPT_DIR / run.name
        assert create_model(**run.config.model).num_heads == j + 1


def test_editing_one_listed_member_changes_only_its_fingerprint():
    members = [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 4}]
    base = TrainParams.model_validate({"members": members, "opt": {"members": []}})
    edited_members = copy.deepcopy(members)
    edited_members[1]["weighting"] = {"strategy": "adaloss", "gamma": 0.1}
    edited = TrainParams.model_validate({"members": edited_members, "opt": {"members": []}})
    before = {r.name: r.fingerprint for r in plan_runs(base, MANIFEST, shards="/s", code="c")}
    after = {r.name: r.fingerprint for r in plan_runs(edited, MANIFEST, shards="/elsewhere", code="c")}
    assert [name for name in before if before[name] != after[name]] == ["b"]


def test_fingerprint_covers_data_and_code_not_locations():
    config = {"model": {"n": 1}, "shards": "/a", "loader_workers": 0}
    reference = fingerprint(config, MANIFEST, "code")
    assert fingerprint({**config, "shards": "s3://b/x", "loader_workers": 4}, MANIFEST, "code") == reference
    assert fingerprint(config, {**MANIFEST, "num_classes": 9}, "code") != reference
    assert fingerprint(config, MANIFEST, "other code") != reference
    assert fingerprint({**config, "compile": True}, MANIFEST, "code") != reference  # compiled numerics differ
    assert len(code_digest(ROOT)) == 64 and code_digest() == code_digest(ROOT)  # the default root is ours


@pytest.mark.parametrize("change", [{"scaling": {"use_gpu": True}}, {"amp": False}])
def test_a_device_or_precision_change_retrains_instead_of_resuming(change):
    """A CPU run re-run on GPUs (or with AMP switched) trains other numerics: a new fingerprint, hence a new
    Ray run name, so the old run's checkpoints are never resumed and its outputs are not current."""
    base = TrainParams.model_validate({"opt": {"members": []}})
    changed = TrainParams.model_validate({"opt": {"members": []}, **change})
    before = plan_runs(base, MANIFEST, shards="/s", code="c")
    after = plan_runs(changed, MANIFEST, shards="/s", code="c")
    assert [run.name for run in before] == [run.name for run in after]
    for old, new in zip(before, after, strict=True):
        assert old.fingerprint != new.fingerprint and old.ray_name != new.ray_name


def test_batch_is_per_device_and_the_rate_scales_linearly_with_the_global_batch():
    """lr is stated at reference_batch (64); 4 workers x 64 per device = 256, 4 times the rate."""
    one = plan_runs(TrainParams.model_validate({"opt": {"members": []}}), MANIFEST, shards="/s", code="c")
    assert one[0].config.batch_size == 64 and one[0].config.optimizer["lr"] == 0.1
    assert "reference_batch" not in one[0].config.optimizer  # make_optimizer's kwargs only
    four = TrainParams.model_validate(
        {
            "opt": {"members": []},
            "scaling": {"num_workers": 4},
            "optimizer": {"lr": 0.05, "reference_batch": 128},
        }
    )
    run = plan_runs(four, MANIFEST, shards="/s", code="c")[0]
    assert run.config.batch_size == 64 and run.config.optimizer["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("train", "named"),
    [
        ({"batch_size": 8}, "train.batch_size = 8: BatchNorm would see 8 samples per device"),
        (
            {"batch_size": 4, "sync_batchnorm": True, "scaling": {"num_workers": 2, "use_gpu": True}},
            "train.batch_size = 4: BatchNorm would see 8 samples per device",
        ),
        (
            {"sync_batchnorm": True, "scaling": {"num_workers": 2}},
            "train.sync_batchnorm = true with train.scaling.num_workers > 1 needs train.scaling.use_gpu",
        ),
    ],
)
def test_batchnorm_batch_below_the_minimum_is_one_line_naming_it(train, named):
    message = error_for(with_train(**train))
    assert message.startswith(f"params.yaml: {named}"), message
    assert "allowed" in message


def test_sync_batchnorm_counts_every_workers_batch():
    gpus = {"num_workers": 4, "use_gpu": True}
    params = TrainParams.model_validate({"batch_size": 4, "sync_batchnorm": True, "scaling": gpus})
    assert params.batch_size == 4  # 16 samples per BatchNorm statistic


def test_fractional_gpus_with_several_workers_is_one_line_naming_it():
    message = error_for(with_train(scaling={"use_gpu": True, "num_workers": 2, "gpus_per_worker": 0.5}))
    assert message.startswith(
        "params.yaml: train.scaling: scaling.gpus_per_worker = 0.5 with num_workers = 2"
    )
    assert "allowed: gpus_per_worker >= 1, or num_workers: 1" in message
    shared = TrainParams.model_validate({"scaling": {"use_gpu": True, "gpus_per_worker": 0.25}})
    assert shared.scaling.gpus_per_worker == 0.25  # one worker per run: runs share a GPU
    tune = copy.deepcopy(project_params())
    tune["tune"]["scaling"] = {"use_gpu": True, "num_workers": 4, "gpus_per_worker": 0.5}
    assert "tune.scaling: scaling.gpus_per_worker = 0.5 with num_workers = 4" in error_for(tune)


def test_each_run_trains_on_its_own_workers_with_the_rate_for_their_global_batch():
    """A member's own scaling; the OPT baselines on opt.scaling, else their member's."""
    gpus = {"use_gpu": True, "num_workers": 4, "cpus_per_worker": 4.0}
    members = [{"name": "small", "n": 1}, {"name": "big", "n": 2, "scaling": gpus}]
    params = TrainParams.model_validate({"members": members, "opt": {"milestones": [1]}})
    runs = {run.name: run for run in plan_runs(params, MANIFEST, shards="/s", code="c")}
    assert runs["small"].scaling == params.scaling and runs["small"].config.num_workers == 1
    assert runs["big"].scaling.num_workers == 4 and runs["big"].config.use_gpu
    assert runs["big"].config.optimizer["lr"] == pytest.approx(4 * runs["small"].config.optimizer["lr"])
    (opt,) = [run for run in runs.values() if run.kind == "opt"]
    assert opt.scaling == runs["big"].scaling and opt.config.num_workers == 4  # the member's
    one_gpu = {"use_gpu": True, "gpus_per_worker": 0.5}
    params = TrainParams.model_validate({"members": members, "opt": {"milestones": [1], "scaling": one_gpu}})
    (opt,) = [run for run in plan_runs(params, MANIFEST, shards="/s", code="c") if run.kind == "opt"]
    assert opt.scaling.gpus_per_worker == 0.5 and opt.config.num_workers == 1
    assert opt.config.optimizer["lr"] == pytest.approx(runs["small"].config.optimizer["lr"])


def test_deterministic_kernels_are_off_by_default_and_fingerprinted():
    default = plan_runs(TrainParams.model_validate({"opt": {"members": []}}), MANIFEST, shards="/s", code="c")
    exact = TrainParams.model_validate({"opt": {"members": []}, "deterministic": True})
    assert default[0].config.deterministic is False
    assert plan_runs(exact, MANIFEST, shards="/s", code="c")[0].fingerprint != default[0].fingerprint


def test_planner_passes_seed_and_eann_exactly_where_the_library_takes_them():
    """No table of its own: a strategy gets ``seed`` iff the library's factory takes it."""
    for name in list_strategies():
        if name == "opt":
            continue  # OPT(j) needs the head j: the planner's own baseline weighting, not a params choice
        takes_eann = "eann" in strategy_hparams(name)
        members = [{"name": "a", "n": 1}, {"name": "b", "n": 2, "eann_weights": takes_eann}]
        params = TrainParams.model_validate(
            {"members": members, "weighting": {"strategy": name}, "opt": {"members": []}, "seed": 7}
        )
        configs = {r.name: r.config.weighting for r in plan_runs(params, MANIFEST, shards="/s", code="c")}
        assert ("seed" in configs["a"]) == ("seed" in strategy_hparams(name)), name
        assert "eann" not in configs["a"] and configs["b"].get("eann", False) == takes_eann, name
        for config in configs.values():
            create_strategy(
                config["strategy"], num_heads=4, **{k: v for k, v in config.items() if k != "strategy"}
            )


@pytest.mark.parametrize(
    ("train", "named"),
    [
        ({"weighting": {"strategy": "adaloss"}}, "eann.eann_weights is true but strategy 'adaloss'"),
        (
            {"eann": None, "members": [{"name": "a", "n": 1, "eann_weights": True}]},
            "members.a.eann_weights is true but strategy 'sieve'",
        ),
    ],
)
def test_eann_weights_with_a_strategy_that_cannot_zero_heads_is_one_clear_error(train, named):
    if "members" in train:
        train["members"][0]["weighting"] = {"strategy": "adaloss"}
        named = named.replace("'sieve'", "'adaloss'")
    message = error_for(with_train(**train))
    assert named in message and message.startswith("params.yaml: train.weighting: ")


def test_adaloss_members_validate_without_eann_weights():
    raw = with_train(
        weighting={"strategy": "adaloss"}, eann={**project_params()["train"]["eann"], "eann_weights": False}
    )
    assert validate_params(raw).train.weighting.strategy == "adaloss"


def test_fault_hook_fires_once_for_the_selected_run_and_epoch(tmp_path, monkeypatch):
    marker = tmp_path / "fired"
    monkeypatch.setenv("ANYTIME_FAULT_EPOCH", "2")
    monkeypatch.setenv("ANYTIME_FAULT_MARKER", str(marker))
    monkeypatch.setenv("ANYTIME_FAULT_RUN", "m1")
    maybe_inject_fault("m1", 1)
    maybe_inject_fault("m0", 2)
    assert not marker.exists()
    with pytest.raises(InjectedFault, match="epoch 2"):
        maybe_inject_fault("m1", 2)
    assert marker.exists()
    maybe_inject_fault("m1", 2)  # fired once: the retried worker goes on
