"""Anytime inference for real: run an ANN, or an EANN's members one after another, head by head, and stop.

The computation is driven by ``AnytimeNet.iter_heads``: a head's units run only when its output is asked
for, so stopping the loop means nothing past the last requested head is computed. Two ways to stop:

* a FLOPs budget (per sample): the next head is requested only if the compute it needs still fits;
* a wall-clock deadline: checked between heads (``hard=False``, the last head may overrun the deadline), or
  enforced (``hard=True``): the network runs in a worker thread and the caller gets, exactly at the deadline,
  the latest output completed by then; the worker stops after the head it is computing.

Which output is answered: for one ANN the latest head; for an EANN (several members, ``val_errors`` given) the
METHOD.md §7 rule, i.e. the lower validation error of the latest finished member's final head and the running
member's latest head.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from anytime.eann.curves import load_member
from anytime.eann.early_exit import running_costs
from anytime.models import AnytimeNet
from anytime.record import load_network


@dataclass
class Prediction:
    """What an anytime run answered and what it spent: ``flops`` per sample for every head computed."""

    logits: Tensor | None
    member: int | None
    head: int | None
    flops: float
    elapsed_s: float
    heads_computed: int
    stopped_by: str  # "complete", "budget" or "deadline"


class AnytimePredictor:
    """Run one ANN or an EANN (members in depth order) head by head under a budget.

    ``input_shape`` (one sample's ``(C, H, W)``) is needed to count FLOPs; ``val_errors[m][k]`` (validation
    top-1 error of member ``m``'s head ``k``) selects between candidates as in METHOD.md §7. Models are put in
    eval mode. After a hard deadline the worker thread may still finish the head it was computing (under
    ``no_grad``, so it only reads the weights); its result is discarded.
    """

    def __init__(
        self,
        models: AnytimeNet | Sequence[AnytimeNet],
        input_shape: Sequence[int],
        val_errors: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.models = [models] if isinstance(models, AnytimeNet) else list(models)
        if not self.models:
            raise ValueError("models is empty: need at least one AnytimeNet")
        if val_errors is not None and [len(v) for v in val_errors] != [m.num_heads for m in self.models]:
            raise ValueError("val_errors must hold one error per head of every member")
        self.val_errors = val_errors
        # spent[m][k]: per-sample FLOPs from the start until member m's head k, every head on the way included
        self.spent: list[list[float]] = []
        offset = 0.0
        for model in self.models:
            running = running_costs(model, input_shape)
            self.spent.append([offset + f for f in running])
            offset += running[-1]

    @classmethod
    def from_outputs(cls, directories: Sequence[str | Path], input_shape: Sequence[int]) -> AnytimePredictor:
        """An EANN from trained member directories (any order), run by depth, choosing on their val errors."""
        loaded = sorted(((load_member(d), load_network(d)) for d in directories), key=lambda p: p[0].cost)
        return cls([m for _, m in loaded], input_shape, val_errors=[c.val_error for c, _ in loaded])

    @property
    def total_flops(self) -> float:
        return self.spent[-1][-1]

    def _outputs(self, x: Tensor) -> Iterator[tuple[int, int, Tensor]]:
        for m, model in enumerate(self.models):
            model.eval()
            for k, logits in enumerate(model.iter_heads(x)):
                yield m, k, logits

    def _choose(self, new: tuple[int, int, Tensor], finals: dict[int, tuple]) -> tuple[int, int, Tensor]:
        """The answer once ``new`` is computed: METHOD.md §7's choice by validation error, else the latest."""
        m, k, _ = new
        if self.val_errors is None or k == self.models[m].num_heads - 1 or m - 1 not in finals:
            return new  # a member's final head is the latest finished output and no member runs yet
        errors = self.val_errors
        return min((new, finals[m - 1]), key=lambda c: (errors[c[0]][c[1]], -self.spent[c[0]][c[1]]))

    def _run(
        self, x: Tensor, flops_budget: float | None, deadline: float | None, stop: threading.Event, publish
    ):
        """Request heads one by one while the budget allows; ``publish`` each new answer."""
        finals: dict[int, tuple] = {}
        outputs = self._outputs(x)
        stopped_by = "complete"
        with torch.no_grad():  # no_grad is thread-local: set it where the work runs
            for m, model in enumerate(self.models):
                for k in range(model.num_heads):
                    if flops_budget is not None and self.spent[m][k] > flops_budget:
                        stopped_by = "budget"
                    elif stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                        stopped_by = "deadline"
                    if stopped_by != "complete":
                        break
                    new = next(outputs)
                    if k == model.num_heads - 1:
                        finals[m] = new
                    publish(self._choose(new, finals), (m, k))
                if stopped_by != "complete":
                    break
        outputs.close()  # ends the generator: no unit past the last requested head ever runs
        publish(None, None, stopped_by)

    def predict(
        self,
        x: Tensor,
        *,
        flops_budget: float | None = None,
        deadline_s: float | None = None,
        hard: bool = False,
    ) -> Prediction:
        """Answer for batch ``x`` within ``flops_budget`` (per sample) and/or ``deadline_s`` from now."""
        if flops_budget is not None and flops_budget < 0:
            raise ValueError(f"flops_budget={flops_budget!r} is invalid: must be >= 0")
        if deadline_s is not None and deadline_s < 0:
            raise ValueError(f"deadline_s={deadline_s!r} is invalid: must be >= 0")
        if hard and deadline_s is None:
            raise ValueError("hard=True needs deadline_s: the hard stop is a wall-clock deadline")
        start = time.monotonic()
        deadline = None if deadline_s is None else start + deadline_s
        lock, done, stop = threading.Lock(), threading.Event(), threading.Event()
        state: dict = {"answer": None, "last": None, "computed": 0, "stopped_by": "complete"}

        def publish(answer, last, stopped_by="complete"):
            with lock:
                if last is None:  # the run ended
                    state["stopped_by"] = stopped_by
                else:
                    state.update(answer=answer, last=last, computed=state["computed"] + 1)

        late = False
        if hard:
            worker = threading.Thread(
                target=lambda: (self._run(x, flops_budget, None, stop, publish), done.set()),
                name="anytime-predictor",
                daemon=True,
            )
            worker.start()
            late = not done.wait(timeout=max(0.0, deadline - time.monotonic()))
            stop.set()  # past the deadline the worker finishes its current head, then stops
        else:
            self._run(x, flops_budget, deadline, stop, publish)
        with lock:  # what is in at the deadline is the answer: heads published later come too late
            if late:
                state["stopped_by"] = "deadline"
            answer, last, computed, stopped_by = (
                state[k] for k in ("answer", "last", "computed", "stopped_by")
            )
        elapsed = time.monotonic() - start
        spent = 0.0 if last is None else self.spent[last[0]][last[1]]
        if answer is None:
            return Prediction(None, None, None, spent, elapsed, computed, stopped_by)
        return Prediction(answer[2], answer[0], answer[1], spent, elapsed, computed, stopped_by)
