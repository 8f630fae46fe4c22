"""Real anytime inference: budgets and deadlines stop the computation; early exit shrinks the batch."""

import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from anytime.eann.early_exit import average_cost, calibrate_threshold, classify_with_exits, running_costs
from anytime.eann.predictor import AnytimePredictor
from anytime.flops import head_costs
from anytime.integrity import CorruptFileError
from anytime.models import create_model
from anytime.record import DatasetInfo, load_network, save_network
from tests.fixtures.records import make_record, write_run_record

SHAPE = (1, 8, 8)


def tiny(seed=0, n=2):
    torch.manual_seed(seed)
    return create_model("resann", num_classes=10, in_channels=1, n=n, c=4, period=1).eval()


def count_units(model):
    """Forward hooks counting how often each unit runs (and with how many samples)."""
    calls = [[] for _ in model.units]
    for i, unit in enumerate(model.units):
        unit.register_forward_hook(lambda _m, inputs, _o, i=i: calls[i].append(inputs[0].shape[0]))
    return calls


def slow_unit(model, index, seconds):
    model.units[index].register_forward_pre_hook(lambda *_: time.sleep(seconds))


def test_flops_budget_returns_the_last_head_that_fits_and_runs_nothing_past_it():
    model = tiny()
    predictor = AnytimePredictor(model, SHAPE)  # counts FLOPs with forward passes: hooks come after
    calls = count_units(model)
    x = torch.randn(5, *SHAPE)
    result = predictor.predict(x, flops_budget=predictor.spent[0][2] + 1)
    assert (result.head, result.stopped_by, result.heads_computed) == (2, "budget", 3)
    assert result.flops == predictor.spent[0][2]
    assert [len(c) for c in calls] == [1, 1, 1, 0, 0, 0]  # units after head 2 never ran
    torch.testing.assert_close(result.logits, model(x, until=2)[2])
    both = predictor.predict(x, flops_budget=predictor.spent[0][2] + 1, deadline_s=60.0)
    assert (both.head, both.stopped_by, both.flops) == (2, "budget", predictor.spent[0][2])  # budget binds
    full = predictor.predict(x)
    assert (full.head, full.stopped_by, full.flops) == (5, "complete", predictor.total_flops)
    nothing = predictor.predict(x, flops_budget=0)  # not even the first head fits
    assert (nothing.logits, nothing.member, nothing.head, nothing.flops) == (None, None, None, 0.0)
    assert (nothing.heads_computed, nothing.stopped_by) == (0, "budget") and nothing.elapsed_s >= 0


def test_soft_deadline_is_checked_between_heads():
    model = tiny()
    predictor = AnytimePredictor(model, SHAPE)
    calls = count_units(model)
    slow_unit(model, 3, 1.5)
    result = predictor.predict(torch.randn(2, *SHAPE), deadline_s=0.8)
    # head 3 was already being computed at the deadline: it completes late, then the run stops
    assert (result.head, result.stopped_by) == (3, "deadline") and result.elapsed_s >= 1.5
    assert [len(c) for c in calls] == [1, 1, 1, 1, 0, 0]


def test_a_zero_deadline_answers_at_once_with_nothing():
    model = tiny()
    predictor = AnytimePredictor(model, SHAPE)
    slow_unit(model, 0, 1.5)
    x = torch.randn(2, *SHAPE)
    result = predictor.predict(x, deadline_s=0)  # checked before the first head: nothing runs
    assert (result.logits, result.heads_computed, result.stopped_by, result.flops) == (
        None,
        0,
        "deadline",
        0.0,
    )
    assert result.elapsed_s < 1.0  # answered without running the 1.5 s first unit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flops_budget": -1.0}, "flops_budget=-1.0 is invalid: must be >= 0"),
        ({"deadline_s": -0.5}, "deadline_s=-0.5 is invalid: must be >= 0"),
    ],
)
def test_bad_budgets_are_one_clear_value_error(kwargs, message):
    with pytest.raises(ValueError) as info:
        AnytimePredictor(tiny(), SHAPE).predict(torch.randn(1, *SHAPE), **kwargs)
    assert str(info.value) == message


def test_eann_predictor_runs_members_in_turn_and_chooses_by_validation():
    members = [tiny(0, n=1), tiny(1, n=2)]
    x = torch.randn(3, *SHAPE)
    val_errors = [[0.5, 0.4, 0.3], [0.9, 0.35, 0.2, 0.2, 0.2, 0.1]]
    predictor = AnytimePredictor(members, SHAPE, val_errors=val_errors)
    calls = count_units(members[1])
    assert predictor.spent[1][0] > predictor.spent[0][2]  # member 1 starts after member 0's total
    early = predictor.predict(x, flops_budget=predictor.spent[1][0])
    assert (early.member, early.head) == (0, 2)  # member 1's first head is worse on validation
    torch.testing.assert_close(early.logits, members[0](x)[2])
    later = predictor.predict(x, flops_budget=predictor.spent[1][2])
    assert (later.member, later.head) == (1, 2)
    assert [len(c) for c in calls] == [2, 1, 1, 0, 0, 0]  # run 1 stopped after head 0, run 2 after head 2


def test_eann_compares_only_a_running_members_heads_and_answers_a_finished_members_final_head():
    members = [tiny(0, n=1), tiny(1, n=1)]
    x = torch.randn(3, *SHAPE)
    # member 1's heads are all worse on validation than member 0's final head (0.3)
    predictor = AnytimePredictor(members, SHAPE, val_errors=[[0.5, 0.4, 0.3], [0.9, 0.6, 0.35]])
    penultimate = predictor.predict(x, flops_budget=predictor.spent[1][1])
    assert (penultimate.member, penultimate.head, penultimate.heads_computed) == (0, 2, 5)
    torch.testing.assert_close(penultimate.logits, members[0](x)[2])
    finished = predictor.predict(x)  # member 1 has finished: its final head is the latest finished output
    assert (finished.member, finished.head) == (1, 2)
    torch.testing.assert_close(finished.logits, members[1](x)[2])
    # without validation errors the latest head answers, whichever member it belongs to
    plain = AnytimePredictor(members, SHAPE)
    latest = plain.predict(x, flops_budget=plain.spent[1][0])
    assert (latest.member, latest.head) == (1, 0)


DIGITS = DatasetInfo(
    name="digits", input_shape=SHAPE, mean=(0.3,), std=(0.4,), class_names=tuple(map(str, range(10)))
)


def save_member(directory, model, errors=None):
    """A run directory as the train stage leaves it: record.json and model.pt."""
    errors = errors or [0.5] * model.num_heads
    flops = head_costs(model, SHAPE)
    write_run_record(
        directory, make_record(directory.name, flops, errors, errors, model=model.config, dataset=DIGITS)
    )
    save_network(directory, model)


def test_eann_from_trained_outputs(tmp_path):
    members = [tiny(0, n=1), tiny(1, n=2)]
    for name, model in zip(("big", "small"), reversed(members), strict=True):  # listed out of depth order
        save_member(tmp_path / name, model, [0.5 - 0.01 * k for k in range(model.num_heads)])
    predictor = AnytimePredictor.from_outputs([tmp_path / "big", tmp_path / "small"], SHAPE)
    assert [m.num_heads for m in predictor.models] == [3, 6] and predictor.val_errors[0][-1] == 0.48
    x = torch.randn(4, *SHAPE)
    result = predictor.predict(x)
    torch.testing.assert_close(result.logits, members[1](x)[-1])  # the saved weights, really loaded


def test_spent_counts_every_earlier_member_in_full():
    members = [tiny(0, n=1), tiny(1, n=1), tiny(2, n=2)]
    own = [running_costs(m, SHAPE) for m in members]
    predictor = AnytimePredictor(members, SHAPE)
    assert predictor.spent[0] == own[0]  # the first member starts from nothing
    assert predictor.spent[1] == [own[0][-1] + f for f in own[1]]
    assert predictor.spent[2] == [own[0][-1] + own[1][-1] + f for f in own[2]]  # both earlier members
    assert predictor.total_flops == own[0][-1] + own[1][-1] + own[2][-1]


def test_bad_members_or_validation_errors_are_one_clear_value_error():
    with pytest.raises(ValueError) as empty:
        AnytimePredictor([], SHAPE)
    assert str(empty.value) == "models is empty: need at least one AnytimeNet"
    members = [tiny(0, n=1), tiny(1, n=1)]  # three heads each
    for val_errors in ([[0.5, 0.4, 0.3], [0.3, 0.2]], [[0.5, 0.4, 0.3]]):
        with pytest.raises(ValueError) as mismatch:
            AnytimePredictor(members, SHAPE, val_errors=val_errors)
        assert str(mismatch.value) == "val_errors must hold one error per head of every member"


def test_loading_a_member_refuses_anything_but_plain_weights(tmp_path):
    model = tiny()
    checkpoint = {"config": model.config, "state_dict": model.state_dict()}
    save_member(tmp_path, model)
    torch.save({**checkpoint, "note": Fraction(1, 2)}, tmp_path / "model.pt")  # unpickling runs its class
    with pytest.raises(CorruptFileError, match=r"model\.pt: holds objects beyond tensors and plain data"):
        load_network(tmp_path)


# torch.save tags each storage with its device; while this is set, storages are tagged as on the first GPU
# (as a member trained on a GPU is saved), so a CPU-only machine sees a real GPU checkpoint.
_TAG_AS_GPU = threading.Event()
torch.serialization.register_package(
    -1, lambda _s: "cuda:0" if _TAG_AS_GPU.is_set() else None, lambda *_: None
)


def test_a_member_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    model = tiny()
    _TAG_AS_GPU.set()
    try:
        save_member(tmp_path, model)
    finally:
        _TAG_AS_GPU.clear()
    loaded = load_network(tmp_path)
    for (name, saved), (_, restored) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert restored.device.type == "cpu" and torch.equal(restored, saved), name


@pytest.fixture(scope="module")
def digits_model():
    """A small ResANN trained briefly on sklearn's embedded digits (8x8, 10 classes), split train/val/test."""
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    splits = {
        "train": (x[:1100], y[:1100]),
        "val": (x[1100:1450], y[1100:1450]),
        "test": (x[1450:], y[1450:]),
    }
    torch.manual_seed(0)
    model = create_model("resann", num_classes=10, in_channels=1, n=2, c=8, period=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_x, train_y = splits["train"]
    for _ in range(12):
        model.train()
        for batch in torch.randperm(len(train_y)).split(64):
            loss = sum(torch.nn.functional.cross_entropy(o, train_y[batch]) for o in model(train_x[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), splits


def test_budgeted_batch_hits_the_target_cost_with_real_exits(digits_model):
    model, splits = digits_model
    costs = running_costs(model, SHAPE)
    with torch.no_grad():
        probs_val = torch.stack([o.softmax(1) for o in model(splits["val"][0])]).numpy()
        full_test = [o.argmax(1) for o in model(splits["test"][0])]
    target = (costs[0] + costs[-1]) / 2
    threshold = calibrate_threshold(probs_val, costs, target)
    assert average_cost(probs_val, costs, threshold) <= target
    calls = count_units(model)
    x_test, y_test = splits["test"]
    result = classify_with_exits(model, x_test, threshold, costs)
    assert result.average_flops == pytest.approx(target, rel=0.15)
    exits = result.exit_head
    assert [c[0] for c in calls] == [int((exits >= k).sum()) for k in range(len(costs))]  # unit k: undecided
    last = len(costs) - 1
    assert 0 < int((exits < last).sum()) < len(y_test)  # samples really left early, others stayed
    assert int(exits.min()) < int(exits.max())  # exits spread over heads, not one fixed depth
    expected = torch.stack(full_test)[exits, torch.arange(len(y_test))]
    assert torch.equal(result.predictions, expected)  # each prediction is its exit head's answer
    accuracy = float((result.predictions == y_test).float().mean())
    final_accuracy = float((full_test[-1] == y_test).float().mean())
    assert final_accuracy > 0.85 and accuracy > final_accuracy - 0.06


def test_no_exit_before_first_exit(digits_model):
    model, splits = digits_model
    costs = running_costs(model, SHAPE)
    with torch.no_grad():
        probs_val = torch.stack([o.softmax(1) for o in model(splits["val"][0])]).numpy()
    threshold = calibrate_threshold(probs_val, costs, costs[2], first_exit=2)
    assert average_cost(probs_val, costs, threshold, first_exit=2) == pytest.approx(costs[2])
    result = classify_with_exits(model, splits["test"][0], threshold, costs, first_exit=2)
    assert int(result.exit_head.min()) == 2 and result.average_flops >= costs[2]
    with pytest.raises(ValueError, match="head 2"):
        calibrate_threshold(probs_val, costs, costs[1], first_exit=2)


def test_calibration_limits(digits_model):
    costs = running_costs(digits_model[0], SHAPE)
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=(len(costs), 50)).astype(np.float32)
    assert calibrate_threshold(probs, costs, costs[-1]) == float("inf")
    cheapest = calibrate_threshold(probs, costs, costs[0])
    assert average_cost(probs, costs, cheapest) == pytest.approx(costs[0])
    with pytest.raises(ValueError, match="target_cost"):
        calibrate_threshold(probs, costs, costs[0] / 2)
