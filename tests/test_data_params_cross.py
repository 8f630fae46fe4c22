"""Cross-field rules of params.yaml (schedule vs epochs, members, OPT, tune member, heads) fail at load,
before any Ray work, with one short line naming the key(s) and the allowed range."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.config import validate_params
from pipelines.config.train import OptBaselineParams, TrainParams
from pipelines.training.run_plan import plan_runs
from tests.fixtures.params import error_for, project_params


def explicit_members(raw: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    raw["train"].pop("eann")
    raw["train"]["members"] = members
    return raw


def changed(section: str, **values: Any) -> dict[str, Any]:
    raw = project_params()
    raw[section] = {**raw[section], **values}
    return raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            changed("train", schedule={"name": "step", "milestones": [10]}, epochs=2),
            "train.schedule.milestones = [10]: must be strictly increasing epochs in 1..2 (train.epochs)",
        ),
        (
            changed("train", schedule={"name": "step", "milestones": [3, 2]}),
            "train.schedule.milestones = [3, 2]: must be strictly increasing epochs in 1..8 (train.epochs)",
        ),
        (
            changed("train", schedule={"name": "step", "milestones": [6]}),
            "train.schedule.milestones = [6]: must be strictly increasing epochs in 1..4 (tune.epochs)",
        ),
        (
            explicit_members(
                changed("train", schedule={"name": "step", "milestones": [2]}),
                [{"name": "a", "n": 1, "epochs": 1}],
            ),
            "train.schedule.milestones = [2]: must be strictly increasing epochs in 1..1 "
            "(train.members.a.epochs)",
        ),
        (
            changed("train", schedule={"name": "cosine", "milestones": [1]}),
            "train.schedule.milestones apply to name: step only, not cosine",
        ),
        (
            explicit_members(project_params(), []),
            "train.members is empty: list at least one member, or use train.eann instead",
        ),
        (
            explicit_members(project_params(), [{"name": "a"}]),
            "train.members.a.n is missing: a resann member needs n >= 1",
        ),
        (
            changed("train", opt={"members": ["m7"]}),
            "train.opt.members: 'm7' not a member; allowed: last, m0, m1, m2",
        ),
        (
            changed("tune", member="m9"),
            "tune.member = 'm9' is not a train member: choose from ['m0', 'm1', 'm2']",
        ),
        (
            changed("train", model={"name": "resann", "period": 4}),
            "train.model.period = 4 for member m0: must be in 1..3 (its units)",
        ),
        (
            changed("train", eann={"members": 12}),
            "train: member m11 would have 6144 heads (n = 2048, period 1): at most 4096",
        ),
        (
            changed("train", eann={"members": 300}),
            "train.eann.members = 300: Input should be less than or equal to 64",
        ),
        (
            changed("train", model={"name": "resann", "period": 3}, weighting={"strategy": "rwm"}),
            "train.weighting rwm for member m0 (1 heads)",
        ),
    ],
)
def test_cross_field_rule_fails_at_load_in_one_short_line(raw: dict[str, Any], expected: str) -> None:
    message = error_for(raw)
    assert expected in message
    assert len(message) < 200  # the key and the range, never a whole section


def test_rules_accept_what_the_workers_accept() -> None:
    raw = changed("train", schedule={"name": "step", "milestones": [2, 4]})
    assert validate_params(raw).train.schedule.milestones == [2, 4]
    raw = explicit_members(project_params(), [{"name": "a", "n": 1}, {"name": "b", "n": 2, "epochs": 5}])
    raw["tune"]["member"] = "a"
    assert validate_params(raw).train.member_names() == ["a", "b"]


def test_opt_milestone_without_a_head_fails_at_plan_time_before_ray() -> None:
    train = TrainParams.model_validate({"eann": {"members": 1, "n0": 1}, "model": {"name": "resann", "c": 4}})
    manifest = {"image_shape": [8, 8, 1], "num_classes": 10}
    with pytest.raises(ValueError, match=r"train\.opt\.milestones \[0\.25\] select no head of member m0"):
        plan_runs(train, manifest, shards="/s", code="c")
    train = train.model_copy(update={"opt": OptBaselineParams(milestones=[0.5, 1])})
    assert [r.name for r in plan_runs(train, manifest, shards="/s", code="c")] == ["m0", "m0-opt0", "m0-opt2"]
