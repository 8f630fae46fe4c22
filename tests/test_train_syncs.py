"""Host syncs per training step, counted on CPU: every way a tensor's value reaches Python (``item``,
``tolist``, ``numpy``, ``bool``/``int``/``float``, ``.cpu()``, ``.to("cpu")``) is patched to count.

On a GPU each of these waits for every kernel queued so far; the loop must make at most one per step, for
every weighting strategy. The loop trains on device ``cpu:0`` here, so its own moves to its device are told
apart from moves to the host (``"cpu"``); a ``.to("cpu")`` counts where ``anytime`` makes it (torch's
GradScaler moves its flags to the gradients' device, which here reads as the host).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

import anytime
from anytime.models import create_model
from anytime.train import make_optimizer, train_one_epoch
from anytime.weighting import create_strategy, list_strategies
from tests.test_train_loop import run_ranks

DEVICE = torch.device("cpu:0")
LIBRARY = str(Path(anytime.__file__).parent)
READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")
STEPS, CHECK_EVERY = 10, 4


class SyncCounter:
    """Counts host reads of tensor values, per thread (threaded ranks share the patched methods)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[int] = Counter()
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(getattr(torch.Tensor, name)))
        real_to = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            target = torch._C._nn._parse_to(*args, **{k: v for k, v in kwargs.items() if k != "copy"})[0]
            caller = sys._getframe(1).f_code.co_filename
            if target == torch.device("cpu") and caller.startswith(LIBRARY):  # "cpu:0": the training device
                self.counts[threading.get_ident()] += 1
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)

    def _counting(self, method):
        def counted(tensor, *args, **kwargs):
            self.counts[threading.get_ident()] += 1
            return method(tensor, *args, **kwargs)

        return counted

    def now(self) -> int:
        return self.counts[threading.get_ident()]


def strategy_for(name: str, num_heads: int):
    return create_strategy(name, num_heads=num_heads, **({"j": num_heads - 1} if name == "opt" else {}))


def syncs_per_step(counter: SyncCounter, strategy: str, scaler=None, fused: bool | None = None, seed=0):
    """Train one epoch of STEPS batches; the reads between consecutive forward passes (the last step's
    running to the epoch's end) and the epoch's result."""
    torch.manual_seed(seed)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4).to(DEVICE)
    marks: list[int] = []
    model.register_forward_pre_hook(lambda _module, _inputs: marks.append(counter.now()))
    batches = [(torch.randn(8, 1, 8, 8), torch.arange(8) % 10) for _ in range(STEPS)]
    optimizer = make_optimizer(model, fused=fused)
    result = train_one_epoch(
        model,
        batches,
        optimizer,
        strategy_for(strategy, model.num_heads),
        device=DEVICE,
        epoch=1,  # the no-regret learners learn from epoch 1 on
        scaler=scaler,
        progress=False,
        check_every=CHECK_EVERY,
    )
    ends = [*marks[1:], counter.now()]
    return [end - start for start, end in zip(marks, ends, strict=True)], result


@pytest.mark.parametrize("strategy", list_strategies())
def test_a_step_waits_for_the_device_at_most_once_for_every_strategy(strategy, monkeypatch):
    counter = SyncCounter(monkeypatch)
    per_step, result = syncs_per_step(counter, strategy)
    assert result["samples"] == 8 * STEPS
    # the finite check's read every CHECK_EVERY steps, nothing else; the last step also holds the epoch's
    # one closing read (the watch and the means together)
    reads = [int((step + 1) % CHECK_EVERY == 0) for step in range(STEPS)]
    reads[-1] += 1
    assert per_step == reads


def test_with_amp_a_fused_optimizer_keeps_the_scaler_off_the_host(monkeypatch):
    """An enabled GradScaler (CPU stands in for CUDA): a fused SGD takes its inf check in the kernel; an
    unfused one makes the scaler read it every step, which the counter sees."""
    counter = SyncCounter(monkeypatch)
    fused, _ = syncs_per_step(counter, "adaloss", torch.amp.GradScaler("cpu", init_scale=1024.0), fused=True)
    assert max(fused[:-1]) == 1 and sum(fused) == STEPS // CHECK_EVERY + 1
    unfused, _ = syncs_per_step(
        counter, "adaloss", torch.amp.GradScaler("cpu", init_scale=1024.0), fused=False
    )
    assert unfused[0] == 1 and unfused[CHECK_EVERY - 1] == 2  # the scaler's read, plus the watch's


def test_data_parallel_ranks_agree_on_their_steps_once_per_epoch(monkeypatch):
    """Two threaded ranks with 10 and 12 batches: one read fixes both at 10 steps; no step reads more than
    the single-rank loop does."""
    counter = SyncCounter(monkeypatch)
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4)

    def rank_main(rank: int):
        replica = create_model("resann", num_classes=10, in_channels=1, n=1, c=4)
        replica.load_state_dict(model.state_dict())
        marks: list[int] = []
        replica.register_forward_pre_hook(lambda _module, _inputs: marks.append(counter.now()))
        batches = [(torch.randn(8, 1, 8, 8), torch.arange(8) % 10) for _ in range(STEPS + 2 * rank)]
        optimizer, strategy = make_optimizer(replica), strategy_for("exp3", replica.num_heads)
        start = counter.now()
        result = train_one_epoch(
            replica,
            batches,
            optimizer,
            strategy,
            device=DEVICE,
            epoch=1,
            progress=False,
            check_every=CHECK_EVERY,
        )
        ends = [*marks[1:], counter.now()]
        return marks[0] - start, [b - a for a, b in zip(marks, ends, strict=True)], result

    for before, per_step, result in run_ranks(2, rank_main):
        assert result["samples"] == 8 * STEPS and before == 1  # the agreed number of steps
        assert per_step == [int((step + 1) % CHECK_EVERY == 0) for step in range(STEPS - 1)] + [1]
