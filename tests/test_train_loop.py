"""The training loop for real: a ResANN learns scikit-learn's digits on CPU; checkpoints resume exactly."""

import copy
import os
import pickle
import random
import threading
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

import anytime.train as train_module
from anytime.models import create_model
from anytime.train import (
    evaluate,
    load_checkpoint,
    make_grad_scaler,
    make_optimizer,
    make_scheduler,
    restore_checkpoint,
    save_checkpoint,
    seed_everything,
    train_one_epoch,
)
from anytime.weighting import create_strategy


@pytest.fixture(scope="module")
def digits() -> dict[str, TensorDataset]:
    """1x8x8 digits, standardised, split 75/25 stratified with a fixed seed."""
    # imported here: the spawned DDP ranks import this module and should not pay for scikit-learn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(data.target, dtype=torch.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return {"train": TensorDataset(x_train, y_train), "test": TensorDataset(x_test, y_test)}


def epoch_loader(dataset: TensorDataset, epoch: int, batch_size: int = 64) -> DataLoader:
    """Shuffled with a per-epoch seed, like ShardDataset.set_epoch, so a resumed run sees the same order."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(epoch)
    )


def make_run(seed: int = 3, config: dict | None = None):
    """Model, optimiser, step scheduler and a sampling strategy whose RNG is part of its state."""
    seed_everything(seed)
    config = config or {"name": "resann", "num_classes": 10, "in_channels": 1, "n": 1, "c": 8, "period": 1}
    model = create_model(**config)
    optimizer = make_optimizer(model, lr=0.05, weight_decay=1e-4, nesterov=True, decay_norm_and_bias=False)
    scheduler = make_scheduler(optimizer, name="step", epochs=3, milestones=[1, 2], gamma=0.5)
    strategy = create_strategy("alternating", num_heads=model.num_heads, scheme="sieve", seed=seed)
    return model, optimizer, scheduler, strategy


def run_epochs(run, dataset, epochs) -> list[dict]:
    model, optimizer, scheduler, strategy = run
    return [
        train_one_epoch(
            model,
            epoch_loader(dataset, epoch),
            optimizer,
            strategy,
            device="cpu",
            epoch=epoch,
            scheduler=scheduler,
            progress=False,
        )
        for epoch in epochs
    ]


def test_digits_every_head_learns(digits):
    seed_everything(0)
    epochs = 6
    model = create_model("resann", num_classes=10, in_channels=1, n=2, c=16, period=1)
    optimizer = make_optimizer(model, lr=0.1, nesterov=True, weight_decay=5e-4)
    scheduler = make_scheduler(optimizer, name="cosine", epochs=epochs)
    strategy = create_strategy("const", num_heads=model.num_heads)
    history = run_epochs((model, optimizer, scheduler, strategy), digits["train"], range(epochs))
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert history[0]["samples"] == len(digits["train"])
    assert all(len(h["head_losses"]) == model.num_heads for h in history)
    assert all(
        last < first
        for first, last in zip(history[0]["head_losses"], history[-1]["head_losses"], strict=True)
    )
    assert history[-1]["loss"] == pytest.approx(sum(history[-1]["head_losses"]), rel=1e-5)  # CONST: w = 1
    assert history[1]["lr"] < history[0]["lr"] == 0.1  # the scheduler was stepped once per epoch
    assert strategy.epoch == epochs - 1

    probs, labels = evaluate(model, DataLoader(digits["test"], batch_size=200), device="cpu")
    assert probs.shape == (model.num_heads, len(digits["test"]), 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    assert labels.dtype == np.int64 and np.array_equal(labels, digits["test"].tensors[1].numpy())
    errors = (probs.argmax(axis=2) != labels).mean(axis=1)
    # Margins with room (chance is 0.9): over thread counts 1, 2, 4 the final head lands at 0.016-0.022 and
    # heads 2.. at <= 0.04; heads 0 and 1 see only the stem and one or two units and land at 0.25-0.56.
    assert errors[-1] < 0.10, errors
    assert (errors[2:] < 0.15).all(), errors
    assert (errors < 0.75).all(), errors


def test_weights_decide_which_heads_train(digits):
    """OPT(0) weights are one-hot at head 0: no parameter past unit 0 may change (BN buffers may)."""
    seed_everything(1)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = make_optimizer(model, lr=0.05, weight_decay=0.0)
    strategy = create_strategy("opt", num_heads=3, j=0)
    subset = TensorDataset(*(t[:256] for t in digits["train"].tensors))
    train_one_epoch(
        model, epoch_loader(subset, 0), optimizer, strategy, device="cpu", epoch=0, progress=False
    )
    changed = {
        ".".join(name.split(".")[:2]).removesuffix(".weight")
        for name, value in model.named_parameters()
        if not torch.equal(value, before[name])
    }
    assert changed == {"stem", "units.0", "heads.0"}


def test_step_descends_the_weighted_sum_of_the_head_losses(digits):
    """One plain SGD step moves every parameter by -lr * grad of sum_k w_k * CE_k, computed here apart."""
    seed_everything(4)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    reference = copy.deepcopy(model)
    images, labels = (t[:64] for t in digits["train"].tensors)
    strategy = create_strategy("linear", num_heads=model.num_heads)  # weights 1/3, 2/3, 1: not all equal
    optimizer = make_optimizer(model, lr=0.5, momentum=0.0, weight_decay=0.0)
    train_one_epoch(model, [(images, labels)], optimizer, strategy, device="cpu", epoch=0, progress=False)
    weights = strategy.weights()
    assert len(set(weights.tolist())) == model.num_heads
    loss = sum(w * F.cross_entropy(out, labels) for w, out in zip(weights, reference(images), strict=True))
    loss.backward()
    for (name, trained), start in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(trained, start - 0.5 * start.grad, msg=name)


def test_strategy_learns_from_every_step(digits):
    """AdaLoss's loss EMA, rebuilt by hand from the losses of each step's forward pass."""
    seed_everything(5)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    outputs = []
    model.register_forward_hook(lambda _module, _inputs, out: outputs.append([o.detach() for o in out]))
    subset = TensorDataset(*(t[:192] for t in digits["train"].tensors))
    loader = DataLoader(subset, batch_size=64)
    strategy = create_strategy("adaloss", num_heads=model.num_heads, momentum=0.5, update_period=1)
    optimizer = make_optimizer(model, lr=0.05)
    result = train_one_epoch(model, loader, optimizer, strategy, device="cpu", epoch=0, progress=False)
    steps = [
        torch.stack([F.cross_entropy(o, labels) for o in out])
        for out, (_, labels) in zip(outputs, loader, strict=True)
    ]
    assert strategy.steps == len(steps) == 3
    ema = steps[0].double()
    for losses in steps[1:]:
        ema = 0.5 * ema + 0.5 * losses.double()
    torch.testing.assert_close(strategy.loss_ema, ema)
    assert not torch.equal(strategy.weights(), torch.ones(model.num_heads))  # re-weighted from the EMA
    assert result["head_losses"] == pytest.approx(torch.stack(steps).mean(0).tolist(), rel=1e-5)


def test_a_non_finite_loss_stops_the_epoch_naming_where(digits):
    """The second batch's images are NaN: one line with the epoch, the step and every head's loss."""
    seed_everything(7)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    images, labels = (t[:8] for t in digits["train"].tensors)
    batches = [(images, labels), (torch.full_like(images, float("nan")), labels)]
    strategy = create_strategy("const", num_heads=model.num_heads)
    with pytest.raises(FloatingPointError) as info:
        train_one_epoch(
            model, batches, make_optimizer(model), strategy, device="cpu", epoch=3, progress=False
        )
    assert str(info.value) == "non-finite loss at epoch 3, step 1: per-head losses [nan, nan, nan]"


def test_an_empty_loader_is_a_clear_value_error():
    model = create_model("resann", in_channels=1, n=1, c=2)
    strategy = create_strategy("const", num_heads=model.num_heads)
    with pytest.raises(ValueError, match=r"^loader yielded no batches: nothing to train on$"):
        train_one_epoch(model, [], make_optimizer(model), strategy, device="cpu", epoch=0, progress=False)


def test_progress_is_a_bar_per_epoch_by_default(digits, capsys):
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=2)
    strategy = create_strategy("const", num_heads=model.num_heads)
    batches = [tuple(t[:8] for t in digits["train"].tensors)]
    train_one_epoch(model, batches, make_optimizer(model), strategy, device="cpu", epoch=4)
    assert "epoch 4" in capsys.readouterr().err
    train_one_epoch(model, batches, make_optimizer(model), strategy, device="cpu", epoch=5, progress=False)
    assert capsys.readouterr().err == ""


class RecordingBar(tqdm):
    """tqdm that keeps every bar made and the postfixes set on it (the real bar still draws)."""

    made: ClassVar[list["RecordingBar"]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.postfixes: list[tuple[dict[str, str], bool]] = []
        RecordingBar.made.append(self)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        self.postfixes.append((kwargs, refresh))
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def test_progress_bar_is_transient_and_shows_the_losses_every_ten_steps(digits, monkeypatch):
    # One batch repeated at a negligible lr: every step sees the losses a copy of the model gives beforehand.
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=2)
    strategy = create_strategy("const", num_heads=model.num_heads)
    batch = tuple(t[:16] for t in digits["train"].tensors)
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        heads = torch.stack([F.cross_entropy(out, batch[1]) for out in reference(batch[0])])
    weighted = (strategy.weights() * heads).sum()
    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    RecordingBar.made.clear()
    train_one_epoch(model, [batch] * 11, make_optimizer(model, lr=1e-12), strategy, device="cpu", epoch=3)
    (bar,) = RecordingBar.made
    assert bar.desc.startswith("epoch 3") and bar.leave is False and bar.dynamic_ncols  # cleared, resizes
    expected = {"loss": f"{weighted.item():.3f}", "final": f"{heads[-1].item():.3f}"}
    assert bar.postfixes == [(expected, False), (expected, False)]  # steps 0 and 10; drawn at its own pace


def test_checkpoint_round_trip_resumes_identically(digits, tmp_path):
    subset = TensorDataset(*(t[:320] for t in digits["train"].tensors))
    straight = make_run()
    run_epochs(straight, subset, range(2))

    first = make_run()
    run_epochs(first, subset, range(1))
    model, optimizer, scheduler, strategy = first
    path = save_checkpoint(
        tmp_path / "ckpt" / "last.pt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        strategy=strategy,
        epoch=0,
        extra={"val_top1": [0.5, 0.25, 0.125]},
    )
    assert sorted(os.listdir(path.parent)) == ["last.pt"]  # no temp file left behind

    checkpoint = load_checkpoint(path)  # weights_only=True inside
    assert checkpoint["epoch"] == 0 and checkpoint["extra"] == {"val_top1": [0.5, 0.25, 0.125]}
    # different init and strategy seed: everything must come from the file
    resumed = make_run(seed=99, config=checkpoint["config"])
    start = restore_checkpoint(
        checkpoint, model=resumed[0], optimizer=resumed[1], scheduler=resumed[2], strategy=resumed[3]
    )
    assert start == 1
    run_epochs(resumed, subset, range(start, 2))

    for key, value in straight[0].state_dict().items():
        assert torch.equal(value, resumed[0].state_dict()[key]), key
    assert straight[2].state_dict() == resumed[2].state_dict()
    assert torch.equal(straight[3].weights(), resumed[3].weights())
    moments = [s["momentum_buffer"] for s in straight[1].state_dict()["state"].values()]
    resumed_moments = [s["momentum_buffer"] for s in resumed[1].state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(moments, resumed_moments, strict=True))


@pytest.mark.heavy
def test_compiled_model_trains_like_eager_and_checkpoints_its_bare_keys(digits, tmp_path):
    """``model.compile()`` is how bench/RESULTS.md removes the heads' overhead: same training, same files."""
    subset = TensorDataset(*(t[:320] for t in digits["train"].tensors))
    eager, compiled = make_run(), make_run()
    compiled[0].compile()
    eager_history = run_epochs(eager, subset, range(1))
    compiled_history = run_epochs(compiled, subset, range(1))
    assert compiled_history[0]["head_losses"] == pytest.approx(eager_history[0]["head_losses"], rel=1e-4)
    for key, value in eager[0].state_dict().items():
        torch.testing.assert_close(compiled[0].state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)
    test = DataLoader(digits["test"], batch_size=200)
    np.testing.assert_allclose(
        evaluate(compiled[0], test, device="cpu")[0], evaluate(eager[0], test, device="cpu")[0], atol=1e-4
    )

    # torch.compile's wrapper prefixes its state_dict keys; checkpoints store the bare network's
    path = save_checkpoint(tmp_path / "last.pt", model=torch.compile(compiled[0]), epoch=0)
    assert load_checkpoint(path)["model"].keys() == eager[0].state_dict().keys()


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    model = create_model("resann", in_channels=1, n=1, c=2)
    path = save_checkpoint(tmp_path / "last.pt", model=model, epoch=4)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, model=model, epoch=5, extra={"bad": lambda: None})
    assert load_checkpoint(path)["epoch"] == 4
    assert os.listdir(tmp_path) == ["last.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_load_refuses_arbitrary_pickles(tmp_path):
    torch.save({"model": {}, "epoch": 0, "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_of_a_plain_module_holds_only_what_was_given(tmp_path):
    """A network without ``config`` (any nn.Module) saves an empty one; parts not given are ``None``, a
    missing ``extra`` is ``{}``; folders are made as needed."""
    path = save_checkpoint(tmp_path / "runs" / "a" / "last.pt", model=torch.nn.Linear(2, 1), epoch=7)
    assert path == tmp_path / "runs" / "a" / "last.pt"
    checkpoint = load_checkpoint(path)
    assert checkpoint["config"] == {} and checkpoint["extra"] == {} and checkpoint["epoch"] == 7
    assert [checkpoint[k] for k in ("optimizer", "scheduler", "strategy", "scaler")] == [None] * 4
    assert checkpoint["model"].keys() == {"weight", "bias"}

    model = create_model("resann", in_channels=1, n=1, c=2)
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "net.pt", model=model, epoch=0))
    assert checkpoint["config"] == model.config and checkpoint["config"]["c"] == 2


def test_checkpoint_is_written_to_a_hidden_temp_beside_it(tmp_path, monkeypatch):
    """The temp file lives in the target's folder (``os.replace`` is atomic only within one file system) under
    a hidden name; afterwards only the checkpoint is left."""
    seen = []
    real_save = torch.save

    def save_and_look(obj, f):
        seen.extend(os.listdir(tmp_path))
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_and_look)
    save_checkpoint(tmp_path / "last.pt", model=torch.nn.Linear(2, 1), epoch=0)
    assert len(seen) == 1 and seen[0].startswith(".last.pt.") and seen[0].endswith(".tmp"), seen
    assert os.listdir(tmp_path) == ["last.pt"]


def test_load_refuses_pickles_even_when_the_environment_asks_torch_for_them(tmp_path, monkeypatch):
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns full unpickling on for every ``torch.load`` that does not
    pass ``weights_only`` itself: the checkpoint loader must pass it."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.save({"model": {}, "epoch": 0, "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_minimal_checkpoint_needs_only_model_and_epoch(tmp_path):
    torch.save({"model": {}, "epoch": 3}, tmp_path / "min.pt")
    assert load_checkpoint(tmp_path / "min.pt") == {"model": {}, "epoch": 3}


def test_restore_loads_only_the_parts_given_and_refuses_absent_ones(tmp_path):
    """Restoring the strategy alone works without an optimiser or scheduler; asking for a part the checkpoint
    lacks is a clear error, not a silent fresh start (the resumed run would differ from the straight one)."""
    model = create_model("resann", in_channels=1, n=1, c=2)
    strategy = create_strategy("adaloss", num_heads=3)
    strategy.update(torch.tensor([1.0, 2.0, 4.0]))  # the first update sets the EMA to the losses themselves
    path = save_checkpoint(tmp_path / "last.pt", model=model, strategy=strategy, epoch=2)

    fresh = create_strategy("adaloss", num_heads=3)
    assert restore_checkpoint(load_checkpoint(path), model=model, strategy=fresh) == 3
    assert fresh.loss_ema.tolist() == [1.0, 2.0, 4.0] and fresh.steps == 1
    for part in ("optimizer", "scheduler"):
        optimizer = make_optimizer(model)
        given = {"optimizer": optimizer, "scheduler": make_scheduler(optimizer, epochs=4)}
        with pytest.raises(ValueError, match=f"^checkpoint has no {part} state to restore$"):
            restore_checkpoint(load_checkpoint(path), model=model, **{part: given[part]})


def test_grad_scaler_state_round_trips_when_saved_and_is_left_alone_when_not(tmp_path):
    """A CPU GradScaler, enabled, stands for a CUDA run's: its calibrated scale must survive a resume."""
    model = torch.nn.Linear(2, 1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with_scaler = load_checkpoint(save_checkpoint(tmp_path / "a.pt", model=model, scaler=scaler, epoch=0))
    assert with_scaler["scaler"]["scale"] == 1024.0
    fresh = torch.amp.GradScaler("cpu")  # init_scale 2**16
    restore_checkpoint(with_scaler, model=model, scaler=fresh)
    assert fresh.get_scale() == 1024.0
    assert restore_checkpoint(with_scaler, model=model) == 1  # a saved scaler need not be restored

    without = load_checkpoint(save_checkpoint(tmp_path / "b.pt", model=model, epoch=0))
    untouched = torch.amp.GradScaler("cpu")
    restore_checkpoint(without, model=model, scaler=untouched)
    assert untouched.get_scale() == 2.0**16


def test_checkpoint_of_a_wrapped_model_has_its_bare_keys(tmp_path, monkeypatch):
    """``torch.compile``'s wrapper (never called, so nothing compiles) around DDP (one gloo rank on loopback)
    is unwrapped on save and restore: the file has the bare network's keys."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 1))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1, store=torch.distributed.HashStore())
    try:
        wrapped = torch.compile(torch.nn.parallel.DistributedDataParallel(model))
        checkpoint = load_checkpoint(save_checkpoint(tmp_path / "last.pt", model=wrapped, epoch=0))
    finally:
        torch.distributed.destroy_process_group()
    assert checkpoint["model"].keys() == {"0.weight", "0.bias"}
    other = torch.nn.Sequential(torch.nn.Linear(2, 1))
    restore_checkpoint(checkpoint, model=torch.compile(other))
    assert torch.equal(other[0].weight, model[0].weight)


def lrs(scheduler, optimizer, epochs: int) -> list[float]:
    """The learning rate of each of ``epochs`` epochs, the scheduler stepped once per epoch."""
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_optimizer_groups_and_scheduler_shapes():
    model = create_model("resann", in_channels=1, n=1, c=4)
    plain = make_optimizer(model, lr=0.2, weight_decay=1e-3)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 1e-3
    split = make_optimizer(model, lr=0.2, weight_decay=1e-3, nesterov=True, decay_norm_and_bias=False)
    decayed, exempt = split.param_groups
    assert decayed["weight_decay"] == 1e-3 and exempt["weight_decay"] == 0.0 and decayed["nesterov"]
    norm_and_bias = {id(p) for m in model.modules() for p in m.parameters(recurse=False) if p.ndim == 1}
    assert {id(p) for p in exempt["params"]} == norm_and_bias
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))

    opt = make_optimizer(model, lr=1.0)
    assert lrs(make_scheduler(opt, name="step", epochs=8), opt, 8) == pytest.approx(
        [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]  # default milestones: 50% and 75% of training
    )
    opt = make_optimizer(model, lr=1.0)
    cosine = lrs(make_scheduler(opt, name="cosine", epochs=4), opt, 5)
    assert cosine == pytest.approx([1, 0.8535534, 0.5, 0.1464466, 0.0])


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda m: make_optimizer(m, lr=0), r"lr=0 .*\(0.0, inf\)"),
        (lambda m: make_optimizer(m, momentum=1.0), r"momentum=1.0 .*\[0.0, 1.0\)"),
        (lambda m: make_optimizer(m, weight_decay=-1), r"weight_decay=-1 "),
        (
            lambda m: make_optimizer(m, momentum=0, nesterov=True),
            r"^nesterov=True is invalid with momentum=0: Nesterov needs momentum > 0$",
        ),
        (lambda m: make_scheduler(make_optimizer(m), name="poly", epochs=3), r"name='poly' .*step, cosine"),
        (lambda m: make_scheduler(make_optimizer(m), epochs=0), r"epochs=0 "),
        (lambda m: make_scheduler(make_optimizer(m), epochs=5, milestones=[3, 2]), r"milestones=\[3, 2\]"),
        (lambda m: make_scheduler(make_optimizer(m), epochs=5, milestones=[9]), r"\[1, 5\]"),
        (lambda m: make_scheduler(make_optimizer(m), epochs=5, gamma=2.0), r"gamma=2.0 .*\(0.0, 1.0\]"),
        (lambda m: seed_everything(-1), r"seed=-1 "),
        (lambda m: seed_everything(2**32), r"seed=4294967296 .*\[0, 4294967295\]"),
        (lambda m: make_optimizer(m, momentum=-0.1), r"momentum=-0.1 .*\[0.0, 1.0\)"),
        (lambda m: make_scheduler(make_optimizer(m), epochs=5, gamma=0.0), r"gamma=0.0 .*\(0.0, 1.0\]"),
        (lambda m: make_scheduler(make_optimizer(m), epochs=5, milestones=[1.5]), r"milestones=\[1.5\]"),
        (lambda m: make_scheduler(make_optimizer(m), epochs=5, milestones=[0, 2]), r"\[1, 5\]"),
    ],
)
def test_bad_settings_raise_clear_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build(create_model("resann", in_channels=1, n=1, c=2))


def test_optimizer_defaults_are_the_resnet_recipe_and_frozen_parameters_stay_out():
    """SGD, lr 0.1, momentum 0.9, weight decay 5e-4 on everything, no Nesterov: the train stage's recipe."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    model[1].weight.requires_grad_(False)
    (group,) = make_optimizer(model).param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 5e-4)
    assert group["nesterov"] is False and group["dampening"] == 0
    assert [id(p) for p in group["params"]] == [id(model[0].weight), id(model[0].bias), id(model[1].bias)]

    split = make_optimizer(model, lr=0.5, momentum=0.0, weight_decay=0.25, decay_norm_and_bias=False)
    settings = [(g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) for g in split.param_groups]
    assert settings == [(0.5, 0.0, 0.25, False), (0.5, 0.0, 0.0, False)]  # momentum 0 without Nesterov: valid
    assert [[id(p) for p in g["params"]] for g in split.param_groups] == [
        [id(model[0].weight)],
        [id(model[0].bias), id(model[1].bias)],
    ]


def test_step_schedule_milestones_and_gamma_by_hand():
    """Default milestones at epochs // 2 and 3 * epochs // 4, at least 1, merged when equal; a milestone may
    be the last epoch; ``gamma`` multiplies the rate at each milestone."""
    model = torch.nn.Linear(2, 1)

    def milestones(epochs: int, **kwargs) -> list[int]:
        scheduler = make_scheduler(make_optimizer(model), name="step", epochs=epochs, **kwargs)
        assert isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR)
        return sorted(scheduler.milestones.elements())

    assert [milestones(e) for e in (1, 2, 3, 5, 8)] == [[1], [1], [1, 2], [2, 3], [4, 6]]
    assert milestones(5, milestones=(2, 5)) == [2, 5]

    opt = make_optimizer(model, lr=1.0)
    step = make_scheduler(opt, name="step", epochs=4, milestones=[1, 3], gamma=0.5)
    assert lrs(step, opt, 4) == [1.0, 0.5, 0.5, 0.25]
    opt = make_optimizer(model, lr=1.0)
    assert lrs(make_scheduler(opt, name="step", epochs=2, milestones=[1], gamma=1.0), opt, 2) == [1.0, 1.0]
    opt = make_optimizer(model, lr=1.0)
    assert lrs(make_scheduler(opt, epochs=1), opt, 2) == [1.0, 0.0]  # cosine, the default
    with pytest.raises(ValueError, match="'step' takes them"):
        make_scheduler(opt, epochs=4, milestones=[2])


@pytest.fixture
def torch_determinism():
    """Puts back torch's process-wide determinism settings, which ``seed_everything`` changes."""
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    cudnn.deterministic, cudnn.benchmark = saved[2:]


def test_seed_everything_asks_for_deterministic_kernels(torch_determinism, monkeypatch):
    """By default: deterministic algorithms (warning where there are none), deterministic cuDNN without
    benchmarking, and the cuBLAS workspace deterministic cuBLAS needs, unless the user set one."""
    cudnn = torch.backends.cudnn
    torch.use_deterministic_algorithms(False)
    cudnn.deterministic, cudnn.benchmark = False, True
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not cudnn.deterministic and cudnn.benchmark
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ

    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert cudnn.deterministic and not cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_mixed_precision_is_off_on_cpu(digits):
    """Autocast and the grad scaler are CUDA-only: on the CPU ``amp=True`` computes exactly what ``amp=False``
    does (CPU autocast would run in bfloat16)."""
    assert not make_grad_scaler("cpu").is_enabled() and not make_grad_scaler(torch.device("cpu")).is_enabled()
    seed_everything(0)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    test = DataLoader(digits["test"], batch_size=200)
    amp_on, amp_off = evaluate(model, test, device="cpu"), evaluate(model, test, device="cpu", amp=False)
    assert np.array_equal(amp_on[0], amp_off[0]) and np.array_equal(amp_on[1], amp_off[1])


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])  # both ends of the valid range
def test_seed_everything_reproduces_init_and_draws(seed):
    seed_everything(seed)
    a = create_model("resann", in_channels=1, n=1, c=4).state_dict()
    draws_a = (torch.rand(3), np.random.rand(3), random.random())
    seed_everything(seed)
    b = create_model("resann", in_channels=1, n=1, c=4).state_dict()
    draws_b = (torch.rand(3), np.random.rand(3), random.random())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(draws_a[0], draws_b[0]) and np.array_equal(draws_a[1], draws_b[1])
    assert draws_a[2] == draws_b[2]


def test_seed_everything_picks_reproducible_or_autotuned_gpu_kernels():
    try:
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert not torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        seed_everything(0)  # the library default, as the other tests expect


def run_ranks(world_size: int, rank_main) -> list:
    """``rank_main(rank)`` on ``world_size`` threads joined in one torch.distributed group, with torch's
    in-process threaded backend (its collectives really sum over the threads): a data-parallel run in a
    second, without spawning processes. Returns each rank's result."""
    from torch.testing._internal.distributed import multi_threaded_pg

    store, results, errors = torch.distributed.HashStore(), {}, []

    def thread_main(rank: int) -> None:
        torch.distributed.init_process_group("threaded", rank=rank, world_size=world_size, store=store)
        try:
            results[rank] = rank_main(rank)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)
            multi_threaded_pg.ProcessLocalGroup.exception_handle(exc)  # wake the ranks waiting on it
        finally:
            torch.distributed.destroy_process_group()

    multi_threaded_pg._install_threaded_pg()
    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    try:
        threads = [threading.Thread(target=thread_main, args=(r,), daemon=True) for r in range(world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a rank hung in a collective"
    finally:
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
        multi_threaded_pg._uninstall_threaded_pg()
        multi_threaded_pg.ProcessLocalGroup.reset()
    if errors:
        raise errors[0]
    return [results[rank] for rank in range(world_size)]


def test_ranks_average_their_head_losses_and_stop_at_the_shortest_rank(digits):
    """Two ranks (threads) on different, uneven data: both stop after the shorter rank's 2 batches, and each
    strategy sees the mean of the two ranks' own step losses (AdaLoss's EMA rebuilt from them here)."""
    seed_everything(6)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    images, labels = digits["train"].tensors
    data = [(images[:64], labels[:64]), (images[64:160], labels[64:160])]  # 2 and 3 batches of 32

    def rank_main(rank: int):
        replica = copy.deepcopy(model)
        outputs = []
        replica.register_forward_hook(lambda _m, _i, out: outputs.append([o.detach() for o in out]))
        strategy = create_strategy("adaloss", num_heads=3, momentum=0.5, update_period=1)
        loader = DataLoader(TensorDataset(*data[rank]), batch_size=32)
        optimizer = make_optimizer(replica, lr=0.05)
        result = train_one_epoch(replica, loader, optimizer, strategy, device="cpu", epoch=0, progress=False)
        batches = [
            (x[32 * i : 32 * (i + 1)], y[32 * i : 32 * (i + 1)]) for x, y in [data[rank]] for i in range(3)
        ]
        local = [
            torch.stack([F.cross_entropy(o, y) for o in out])
            for out, (_, y) in zip(outputs, batches, strict=False)
        ]
        return result, strategy, torch.stack(local).double()

    (result0, strategy0, local0), (result1, strategy1, local1) = run_ranks(2, rank_main)
    assert local0.shape == local1.shape == (2, 3) and not torch.allclose(local0, local1)
    assert result0["samples"] == result1["samples"] == 64 and strategy0.steps == strategy1.steps == 2
    mean = (local0 + local1) / 2
    ema = 0.5 * mean[0] + 0.5 * mean[1]
    torch.testing.assert_close(strategy0.loss_ema, ema)
    torch.testing.assert_close(strategy1.loss_ema, ema)
    assert result0["head_losses"] == result1["head_losses"] == pytest.approx(mean.mean(0).tolist(), rel=1e-5)


SHARD_ROWS = 37  # odd: the two ranks' ranges differ by one sample


def write_labelled_shards(root) -> None:
    """A test split whose label is each sample's row index, in 3 shards of row groups of 4."""
    # imported here: the spawned DDP ranks import this module and only read shards
    from anytime.data import RawDataset, Split, write_shards

    images = np.random.default_rng(0).integers(0, 256, (SHARD_ROWS, 2, 2, 1), dtype=np.uint8)
    split = Split(labels=np.arange(SHARD_ROWS), images=images)
    names = [str(i) for i in range(SHARD_ROWS)]
    raw = RawDataset("indexed", names, (1, 2, 2), "raw", {"train": split, "test": split})
    write_shards(raw, root, val_fraction=0.0, seed=0, rows_per_shard=13, row_group_rows=4)


def _ddp_worker(rank: int, world_size: int, store: str, out_dir: str, shards: str) -> None:
    """One data-parallel rank: its own half of the data, DDP gradients, strategy fed all-reduced losses;
    it also reads the shards with no rank given (ShardDataset must take it from torch.distributed)."""
    from anytime.data import ShardDataset

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        generator = torch.Generator().manual_seed(rank)  # ranks see different data, hence different losses
        size = 96 + 32 * rank  # uneven: rank 1 holds two batches more, which must not hang DDP
        images, labels = torch.randn(size, 1, 8, 8, generator=generator), torch.arange(size) % 10
        seed_everything(0)  # same init on every rank (DDP also broadcasts it)
        model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4)
        outputs = []  # this rank's own logits at every step, to rebuild its local losses
        model.register_forward_hook(lambda _module, _inputs, out: outputs.append([o.detach() for o in out]))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        strategy = create_strategy("adaloss", num_heads=model.num_heads, update_period=2)
        loader = DataLoader(TensorDataset(images, labels), batch_size=16)
        result = train_one_epoch(
            ddp, loader, make_optimizer(ddp), strategy, device="cpu", epoch=0, progress=False
        )
        local_losses = torch.stack(
            [
                torch.stack([F.cross_entropy(o, labels[16 * step : 16 * (step + 1)]) for o in out])
                for step, out in enumerate(outputs)
            ]
        )
        partition = [
            label for _, labels in ShardDataset(shards, "test", batch_size=8) for label in labels.tolist()
        ]
        extra = {"result": result, "local_losses": local_losses, "partition": partition}
        save_checkpoint(f"{out_dir}/rank{rank}.pt", model=ddp, strategy=strategy, epoch=0, extra=extra)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.heavy  # two spawned processes each import torch: ~15 s CPU, longer on a loaded box
def test_data_parallel_ranks_share_global_losses(tmp_path):
    """Two gloo ranks on different, uneven data: both stop at the shorter rank's end (no DDP hang), the
    strategies see the MEAN of the ranks' losses (so EMA/weights agree), and the reader splits by rank."""
    write_labelled_shards(tmp_path / "shards")
    args = (2, str(tmp_path / "store"), str(tmp_path), str(tmp_path / "shards"))
    torch.multiprocessing.spawn(_ddp_worker, args=args, nprocs=2)
    ranks = [load_checkpoint(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [rank["extra"]["result"]["samples"] for rank in ranks] == [96, 96]
    assert ranks[0]["extra"]["result"]["head_losses"] == ranks[1]["extra"]["result"]["head_losses"]
    for key, value in ranks[0]["strategy"].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(ranks[1]["strategy"][key])), key
    assert not torch.equal(ranks[0]["strategy"]["weights"], torch.ones(3))  # AdaLoss did re-weight

    # AdaLoss's EMA (momentum 0.9), rebuilt from the mean over ranks of each rank's own step losses
    local = [rank["extra"]["local_losses"].double() for rank in ranks]
    assert local[0].shape == (6, 3) and not torch.allclose(local[0], local[1])
    steps = (local[0] + local[1]) / 2
    ema = steps[0]
    for losses in steps[1:]:
        ema = 0.9 * ema + 0.1 * losses
    torch.testing.assert_close(ranks[0]["strategy"]["loss_ema"], ema, rtol=1e-6, atol=1e-7)
    assert ranks[0]["extra"]["result"]["head_losses"] == pytest.approx(steps.mean(0).tolist(), rel=1e-5)

    first, second = (rank["extra"]["partition"] for rank in ranks)
    assert len(first) + len(second) == SHARD_ROWS and abs(len(first) - len(second)) <= 1
    assert sorted(first + second) == list(range(SHARD_ROWS))  # disjoint, and together every sample

    for key, value in ranks[0]["model"].items():  # save_checkpoint unwrapped DDP: plain keys
        assert not key.startswith("module.")
        if "running" not in key:  # BN statistics stay per rank, as in plain DDP
            assert torch.equal(value, ranks[1]["model"][key]), key
