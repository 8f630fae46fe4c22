"""The serving engine's rule, without Ray: who leaves the batch when, what they are answered, what it costs.

Step times here are made by sleeping units (measured at calibration like any other cost), so the bounds below
hold on a loaded machine: they are the engine's stated guarantees, not speed targets.
"""

import threading
import time

import pytest
import torch

from anytime.eann.engine import AnytimeEngine, EngineFull, Status, Step, choice_table
from anytime.models import create_model

SHAPE = (1, 8, 8)
UNIT_S = 0.04  # each sleeping unit: one step of the 6-head model
SLACK_S = 0.25  # scheduling noise on a shared machine, on top of the one-step bound


def tiny(seed=0, n=2):
    torch.manual_seed(seed)
    return create_model("resann", num_classes=10, in_channels=1, n=n, c=4, period=1).eval()


def stem_samples(model):
    """Every batch size that entered the stem and each unit: what was computed, per sample."""
    calls = {"stem": [], "units": [[] for _ in model.units]}
    model.stem.register_forward_hook(lambda _m, i, _o: calls["stem"].append(i[0].shape[0]))
    for k, unit in enumerate(model.units):
        unit.register_forward_hook(lambda _m, i, _o, k=k: calls["units"][k].append(i[0].shape[0]))
    return calls


def sleepy(model, seconds=UNIT_S):
    for unit in model.units:
        unit.register_forward_pre_hook(lambda *_: time.sleep(seconds))
    return model


@pytest.fixture
def slow_engine():
    engine = AnytimeEngine(sleepy(tiny()), SHAPE, max_batch=4, calibration_repeats=1, max_wait_s=0.05)
    yield engine.start()
    engine.close()


def test_choice_table_follows_method_7():
    steps = [
        Step(0, 0, 1, 0.5),
        Step(0, 1, 2, 0.3),
        Step(1, 0, 3, 0.4),
        Step(1, 1, 4, 0.3),
        Step(1, 2, 6, 0.1),
    ]
    # member 1's head 0 is worse than member 0's final head; its head 1 ties it (deeper wins); final is final
    assert choice_table(steps) == [0, 1, 1, 3, 4]
    plain = [Step(0, 0, 1, None), Step(0, 1, 2, None), Step(1, 0, 3, None)]
    assert choice_table(plain) == [0, 1, 2]  # without validation errors, the latest head


def test_a_deadline_is_met_within_one_step_and_the_rest_is_not_computed(slow_engine):
    calls = stem_samples(slow_engine.models[0])
    per_step = slow_engine.step_time(1, 1)
    assert per_step >= UNIT_S  # calibrated on the real (sleeping) units
    deadline = 2.5 * per_step  # head 1 fits, head 2 does not
    sent = slow_engine.now()
    answer = slow_engine.submit(torch.randn(*SHAPE), deadline_s=deadline).result()
    ended = slow_engine.now()
    assert answer.status is Status.DEADLINE and answer.logits is not None
    assert answer.steps_computed == answer.head + 1 and answer.head >= 0
    assert ended - sent <= deadline + per_step + SLACK_S
    assert sum(len(c) for c in calls["units"]) == answer.steps_computed  # nothing after the answer ran
    assert answer.flops == slow_engine.steps[answer.head].flops


def test_an_unreachable_deadline_is_answered_at_once_without_compute(slow_engine):
    calls = stem_samples(slow_engine.models[0])
    answer = slow_engine.submit(torch.randn(*SHAPE), deadline_s=UNIT_S / 10).result(timeout=1)
    assert (answer.status, answer.logits, answer.steps_computed, answer.flops) == (
        Status.UNREACHABLE,
        None,
        0,
        0.0,
    )
    assert answer.deadline_met is False and calls["stem"] == []


def test_a_deadline_that_passes_in_the_queue_is_dropped_before_compute(slow_engine):
    calls = stem_samples(slow_engine.models[0])
    slow_engine.max_wait_s = 0.0  # busy's batch starts alone
    busy = slow_engine.submit(torch.randn(*SHAPE))  # occupies the worker for all six steps
    while not calls["stem"]:  # until busy's batch has started: the next request waits in the queue
        time.sleep(UNIT_S / 10)
    late = slow_engine.submit(torch.randn(*SHAPE), deadline_s=3 * slow_engine.step_time(0, 1))
    assert late.result().status is Status.EXPIRED and late.result().logits is None
    assert busy.result().status is Status.COMPLETE and busy.result().head == 5
    assert calls["stem"] == [1]  # only busy's sample was ever computed
    assert late.result().queued_s > 0


def test_the_batch_shrinks_as_budgets_run_out():
    engine = AnytimeEngine(tiny(), SHAPE, max_batch=4, calibration_repeats=1, max_wait_s=10.0).start()
    calls = stem_samples(engine.models[0])
    flops = [s.flops for s in engine.steps]
    budgets = [flops[0], flops[2], flops[3] + 1, None]
    x = torch.randn(4, *SHAPE)
    futures = [engine.submit(x[i], flops=b) for i, b in enumerate(budgets)]  # a full batch: no waiting
    answers = [f.result(timeout=30) for f in futures]
    engine.close()
    assert [a.head for a in answers] == [0, 2, 3, 5]
    assert [a.status for a in answers] == [Status.BUDGET] * 3 + [Status.COMPLETE]
    assert calls["units"] == [[4], [3], [3], [2], [1], [1]]  # departed requests cost nothing more
    full = engine.models[0](x)
    for i, a in enumerate(answers):
        torch.testing.assert_close(a.logits, full[a.head][i])


def test_a_budget_below_the_first_head_is_answered_without_compute():
    engine = AnytimeEngine(tiny(), SHAPE, calibration_repeats=1)
    calls = stem_samples(engine.models[0])
    (answer,) = engine.run(torch.randn(1, *SHAPE), flops=engine.steps[0].flops / 2)
    assert (answer.status, answer.logits, answer.flops, answer.deadline_met) == (
        Status.BUDGET,
        None,
        0.0,
        None,
    )
    assert calls["stem"] == []


def test_confidence_exit_and_eann_choice():
    members = [tiny(0, n=1), tiny(1, n=1)]
    engine = AnytimeEngine(
        members, SHAPE, val_errors=[[0.5, 0.4, 0.3], [0.9, 0.6, 0.35]], calibration_repeats=1
    )
    x = torch.randn(2, *SHAPE)
    budget = engine.steps[4].flops  # member 1's head 1: worse on validation than member 0's final head
    answers = engine.run(x, flops=budget)
    assert [(a.member, a.head, a.steps_computed) for a in answers] == [(0, 2, 5)] * 2
    torch.testing.assert_close(torch.stack([a.logits for a in answers]), members[0](x)[2])
    done = engine.run(x)
    assert [(a.member, a.head, a.status) for a in done] == [(1, 2, Status.COMPLETE)] * 2
    sure = engine.run(x, confidence=0.0)  # any softmax reaches 0: leave after the first step
    assert [(a.member, a.head, a.status) for a in sure] == [(0, 0, Status.CONFIDENT)] * 2


def test_measured_times_update_the_calibration_and_one_worker_serves_all():
    model = tiny()
    engine = AnytimeEngine(model, SHAPE, max_batch=2, calibration_repeats=1, ema=0.5).start()
    before = {n: engine.step_time(3, n) for n in (1, 2)}
    model.units[3].register_forward_pre_hook(lambda *_: time.sleep(0.2))
    futures = [engine.submit(torch.randn(*SHAPE)) for _ in range(6)]
    assert all(f.result(timeout=30).status is Status.COMPLETE for f in futures)
    after = {n: engine.step_time(3, n) for n in (1, 2)}
    assert any(after[n] > before[n] for n in after)  # slower steps raise the estimate, by at most
    assert all(after[n] <= before[n] * (1 + engine.ema) ** 6 * 1.0001 for n in after)  # 1 + ema per batch
    assert [t.name for t in threading.enumerate()].count("anytime-engine") == 1
    engine.close()


def test_a_full_queue_refuses_at_once(slow_engine):
    slow_engine.max_queue, slow_engine.max_wait_s = 1, 0.0
    busy = slow_engine.submit(torch.randn(*SHAPE))
    time.sleep(UNIT_S)
    waiting = slow_engine.submit(torch.randn(*SHAPE))
    with pytest.raises(EngineFull, match=r"the queue is full \(1 requests waiting\)"):
        slow_engine.submit(torch.randn(*SHAPE))
    assert busy.result().status is Status.COMPLETE and waiting.result().status is Status.COMPLETE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deadline_s": -1.0}, "deadline_s=-1.0 is invalid: must be a finite number >= 0"),
        ({"deadline_s": float("nan")}, "deadline_s=nan is invalid: must be a finite number >= 0"),
        ({"flops": float("inf")}, "flops=inf is invalid: must be a finite number >= 0"),
        ({"confidence": 1.5}, "confidence=1.5 is invalid: must be in [0, 1]"),
    ],
)
def test_bad_request_values_are_one_line(kwargs, message):
    engine = AnytimeEngine(tiny(), SHAPE, calibration_repeats=1)
    with pytest.raises(ValueError) as info:
        engine.run(torch.randn(1, *SHAPE), **kwargs)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"input shape \(1, 9, 8\) is invalid: must be \(1, 8, 8\)"):
        engine.run(torch.randn(1, 1, 9, 8))
