"""Deadline-aware anytime serving: a batch of requests, each with its own deadline and/or FLOPs budget, run
head by head, each request leaving the batch with its best answer as soon as going on cannot help it.

The rule (docs/METHOD.md §7, "Serving"): the outputs of an ANN, or of an EANN's members in depth order, form
one chain of *steps* (member m, head k). Before step s runs, a request leaves the batch when

* its per-sample FLOPs budget is below the FLOPs spent once step s is done (``Status.BUDGET``), or
* step s, at the batch's current size, is predicted to end after its deadline (``Status.DEADLINE``), or
* (optional) the previous step's softmax reached its confidence threshold (``Status.CONFIDENT``);

and after the last step every request left is ``Status.COMPLETE``. It is answered at once (not when the batch
ends) with the METHOD.md §7 choice for the latest finished step: the lower validation error of the running
member's latest head and the previous member's final head (ties to the deeper output; without validation
errors the latest head). Nothing more is computed for it: the batch shrinks. A request whose deadline cannot
fit the first step is answered with no compute: ``UNREACHABLE`` when it arrives, ``EXPIRED`` when its
deadline ran out while it waited in the queue.

Step times come from a calibration at load (per batch size, powers of two up to ``max_batch``) and are kept
up to date with an exponential moving average of the measured times. On CUDA the device is synchronised
before the clock is read, so a step's time is its real compute time. A request whose predicted step time was
too low ends past its deadline by at most that misprediction of one step.

One long-lived worker thread (:meth:`AnytimeEngine.start`) forms batches from a capped queue: a batch waits
for more requests at most ``max_wait_s`` after its oldest one arrived, and never past the moment a waiting
request could no longer run every step by its deadline (waiting never costs a request a head).
:meth:`AnytimeEngine.run` serves one batch in the caller's thread (notebooks,
:class:`anytime.eann.AnytimePredictor`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import Tensor

from anytime.eann.early_exit import running_costs
from anytime.models import AnytimeNet


class Status(StrEnum):
    """Why a request left the batch (or never joined one)."""

    COMPLETE = "complete"  # every step ran
    DEADLINE = "deadline"  # its next step could not end by its deadline
    BUDGET = "budget"  # its next step costs more FLOPs than its budget (before the first: no answer)
    CONFIDENT = "confident"  # a step reached its confidence threshold
    UNREACHABLE = "unreachable"  # on arrival its deadline could not fit the first step: no compute
    EXPIRED = "expired"  # its deadline stopped fitting the first step while it was queued: no compute


class EngineFull(RuntimeError):
    """The queue holds ``max_queue`` requests: refuse now rather than queue without limit."""


@dataclass(frozen=True)
class Step:
    """Member ``member``'s head ``head``; ``flops`` per sample once it is done, earlier steps included."""

    member: int
    head: int
    flops: float
    val_error: float | None


@dataclass
class Answer:
    """What a request was answered: the chosen output's logits (``None`` when nothing ran) and its cost."""

    logits: Tensor | None
    member: int | None
    head: int | None
    flops: float
    steps_computed: int
    status: Status
    queued_s: float
    compute_s: float
    deadline_met: bool | None  # answered (with logits) by its deadline; None without a deadline


@dataclass
class _Request:
    x: Tensor
    received: float
    deadline: float | None
    flops: float | None
    confidence: float | None
    future: Future = field(default_factory=Future)


def choice_table(steps: Sequence[Step]) -> list[int]:
    """``table[s]``: the step whose output answers once step ``s`` is the latest done (METHOD.md §7)."""
    table, previous_final = [], None
    for s, step in enumerate(steps):
        final = s + 1 == len(steps) or steps[s + 1].member != step.member
        if final or previous_final is None or step.val_error is None:
            table.append(s)
        else:
            rival = steps[previous_final]
            better = (step.val_error, -step.flops) <= (rival.val_error, -rival.flops)
            table.append(s if better else previous_final)
        if final:
            previous_final = s
    return table


def _positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    ok = value is None or (
        value == value and value != float("inf") and (value > 0 or (allow_zero and value == 0))
    )
    if not ok:
        raise ValueError(
            f"{name}={value!r} is invalid: must be a finite number {'>=' if allow_zero else '>'} 0"
        )


class AnytimeEngine:
    """Serve one ANN or an EANN (members in depth order) under per-request deadlines and budgets.

    ``val_errors[m][k]`` (validation top-1 error of member ``m``'s head ``k``) selects answers as in METHOD.md
    §7. Inputs are one normalised sample each, ``input_shape`` = ``(C, H, W)``.
    """

    def __init__(
        self,
        models: AnytimeNet | Sequence[AnytimeNet],
        input_shape: Sequence[int],
        *,
        val_errors: Sequence[Sequence[float]] | None = None,
        device: str | torch.device | None = None,
        max_batch: int = 32,
        max_queue: int = 256,
        max_wait_s: float = 0.002,
        ema: float = 0.2,
        calibration_repeats: int = 3,
    ) -> None:
        self.models = [models] if isinstance(models, AnytimeNet) else list(models)
        if not self.models:
            raise ValueError("models is empty: need at least one AnytimeNet")
        if val_errors is not None and [len(v) for v in val_errors] != [m.num_heads for m in self.models]:
            raise ValueError("val_errors must hold one error per head of every member")
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: must be an integer >= 1")
        if not 0 < ema <= 1:
            raise ValueError(f"ema={ema!r} is invalid: must be in (0, 1]")
        self.input_shape = tuple(input_shape)
        self.device = torch.device(device) if device is not None else next(self.models[0].parameters()).device
        self.models = [m.to(self.device).eval() for m in self.models]
        self.max_batch, self.max_queue, self.max_wait_s, self.ema = max_batch, max_queue, max_wait_s, ema
        self.steps: list[Step] = []
        offset = 0.0
        for m, model in enumerate(self.models):
            running = running_costs(model, self.input_shape)
            for k, f in enumerate(running):
                error = None if val_errors is None else float(val_errors[m][k])
                self.steps.append(Step(m, k, offset + f, error))
            offset += running[-1]
        self.answer_of = choice_table(self.steps)
        self.batch_sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch] + [max_batch]
        self.step_times: dict[int, list[float]] = {}
        self.calibrate(calibration_repeats)
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # --- time -----------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The engine's clock (``time.perf_counter``); deadlines are on it."""
        return time.perf_counter()

    def _synced_now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _bucket(self, n: int) -> int:
        return next((b for b in self.batch_sizes if b >= n), self.batch_sizes[-1])

    def step_time(self, s: int, n: int) -> float:
        """Predicted seconds of step ``s`` for a batch of ``n`` (the calibrated size at or above ``n``)."""
        bucket = self._bucket(n)
        return self.step_times[bucket][s] * max(1.0, n / bucket)

    def latency(self, s: int, n: int = 1) -> float:
        """Predicted seconds from a batch's start until step ``s`` is done, at batch size ``n``."""
        return sum(self.step_time(i, n) for i in range(s + 1))

    @torch.inference_mode()
    def calibrate(self, repeats: int = 3) -> None:
        """Measure every step's time at each batch size (median of ``repeats`` after one warm-up run)."""
        for n in self.batch_sizes:
            x = torch.zeros(n, *self.input_shape, device=self.device)
            runs = []
            for _ in range(repeats + 1):
                times, features = [], None
                for s in range(len(self.steps)):
                    start = self._synced_now()
                    features, _ = self._compute(s, x, features)
                    times.append(self._synced_now() - start)
                runs.append(times)
            self.step_times[n] = [sorted(column)[len(column) // 2] for column in zip(*runs[1:], strict=True)]

    def _observe(self, s: int, n: int, seconds: float) -> None:
        """Move the estimate for ``n``'s batch size towards a measured step time (EMA). A measurement is
        clipped to [1/2, 2] x the estimate first: one step preempted on a busy machine moves the estimate by
        at most ``ema``, while a real change is followed within a few batches."""
        bucket = self._bucket(n)
        times = self.step_times[bucket]
        measured = min(max(seconds * min(1.0, bucket / n), times[s] / 2), times[s] * 2)
        times[s] += self.ema * (measured - times[s])

    # --- compute --------------------------------------------------------------------------------------------

    def _compute(self, s: int, x: Tensor, features: Tensor | None) -> tuple[Tensor, Tensor]:
        """Step ``s``: from the features at the member's previous head (the stem at head 0) to the logits."""
        step = self.steps[s]
        model = self.models[step.member]
        if step.head == 0:
            features, first = model.stem(x), 0
        else:
            first = model.head_units[step.head - 1] + 1
        for unit in model.units[first : model.head_units[step.head] + 1]:
            features = unit(features)
        return features, model.heads[step.head](features)

    def _leaves(self, r: _Request, s: int, n: int, now: float) -> Status | None:
        if r.flops is not None and self.steps[s].flops > r.flops:
            return Status.BUDGET
        if r.deadline is not None and now + self.step_time(s, n) > r.deadline:
            return Status.EXPIRED if s == 0 else Status.DEADLINE
        return None

    @torch.inference_mode()
    def _run_batch(self, batch: list[_Request]) -> None:
        """Serve ``batch``, resolving each request's future the moment it leaves."""
        start = self._synced_now()
        x = torch.stack([r.x for r in batch]).to(self.device)
        active = list(range(len(batch)))  # batch indices still running, in the order of the tensors below
        features = latest = final = None  # their features, latest logits, previous member's final logits

        def leave(positions: list[int], status: Status, done: int, now: float) -> None:
            """Answer the active requests at ``positions``; ``done``: the last step they ran (-1: none)."""
            chosen = self.answer_of[done] if done >= 0 else None
            step = None if chosen is None else self.steps[chosen]
            source = latest if chosen == done else final
            for p in positions:
                r = batch[active[p]]
                r.future.set_result(
                    Answer(
                        logits=None if step is None else source[p].cpu(),
                        member=None if step is None else step.member,
                        head=None if step is None else step.head,
                        flops=0.0 if step is None else self.steps[done].flops,
                        steps_computed=done + 1,
                        status=status,
                        queued_s=start - r.received,
                        compute_s=now - start,
                        deadline_met=None if r.deadline is None else step is not None and now <= r.deadline,
                    )
                )

        def keep_only(keep: list[int]) -> None:
            nonlocal active, features, latest, final
            index = torch.tensor(keep, device=self.device)
            features, latest, final = (None if t is None else t[index] for t in (features, latest, final))
            active = [active[p] for p in keep]

        now = start
        for s, step in enumerate(self.steps):
            leaving: dict[Status, list[int]] = {}
            for p, i in enumerate(active):
                if (status := self._leaves(batch[i], s, len(active), now)) is not None:
                    leaving.setdefault(status, []).append(p)
            if leaving:
                for status, positions in leaving.items():
                    leave(positions, status, s - 1, now)
                gone = {p for positions in leaving.values() for p in positions}
                if len(gone) == len(active):
                    return
                keep_only([p for p in range(len(active)) if p not in gone])
            if step.head == 0:  # a member starts from the inputs
                inputs = x if len(active) == len(batch) else x[torch.tensor(active, device=self.device)]
                features = None
            before = now
            features, latest = self._compute(s, inputs, features)
            if s + 1 == len(self.steps) or self.steps[s + 1].member != step.member:
                final = latest
            confident = self._confident(batch, active, latest)
            now = self._synced_now()
            self._observe(s, len(active), now - before)
            if confident:
                leave(confident, Status.CONFIDENT, s, now)
                if len(confident) == len(active):
                    return
                keep_only([p for p in range(len(active)) if p not in set(confident)])
        leave(list(range(len(active))), Status.COMPLETE, len(self.steps) - 1, now)

    @staticmethod
    def _confident(batch: list[_Request], active: list[int], logits: Tensor) -> list[int]:
        """Positions in ``active`` whose confidence threshold the latest step's softmax reached."""
        thresholds = [batch[i].confidence for i in active]
        if all(t is None for t in thresholds):
            return []
        top = logits.float().softmax(dim=1).max(dim=1).values.tolist()
        return [p for p, (t, c) in enumerate(zip(thresholds, top, strict=True)) if t is not None and c >= t]

    # --- requests -------------------------------------------------------------------------------------------

    def _request(
        self,
        x: Tensor,
        received: float | None,
        deadline_s: float | None,
        flops: float | None,
        confidence: float | None,
    ) -> _Request:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"input shape {tuple(x.shape)} is invalid: must be {self.input_shape}")
        _positive("deadline_s", deadline_s, allow_zero=True)
        _positive("flops", flops, allow_zero=True)
        if confidence is not None and not 0 <= confidence <= 1:
            raise ValueError(f"confidence={confidence!r} is invalid: must be in [0, 1]")
        received = self.now() if received is None else received
        deadline = None if deadline_s is None else received + deadline_s
        return _Request(x, received, deadline, flops, confidence)

    def _unfit(self, r: _Request, n: int, status: Status) -> bool:
        """Answer now, with ``status`` and no compute, if ``r``'s deadline cannot fit the first step at size
        ``n``: ``UNREACHABLE`` on arrival, ``EXPIRED`` when taken from the queue."""
        now = self.now()
        if r.deadline is None or now + self.step_time(0, n) <= r.deadline:
            return False
        r.future.set_result(Answer(None, None, None, 0.0, 0, status, now - r.received, 0.0, False))
        return True

    def run(
        self,
        x: Tensor,
        *,
        deadline_s: float | None = None,
        flops: float | None = None,
        confidence: float | None = None,
    ) -> list[Answer]:
        """Serve the samples of batch ``x`` now, in this thread, under one deadline (from now) and budget."""
        received = self.now()
        requests = [self._request(sample, received, deadline_s, flops, confidence) for sample in x]
        waiting = [r for r in requests if not self._unfit(r, len(requests), Status.UNREACHABLE)]
        if waiting:
            self._run_batch(waiting)
        return [r.future.result() for r in requests]

    def submit(
        self,
        x: Tensor,
        *,
        received: float | None = None,
        deadline_s: float | None = None,
        flops: float | None = None,
        confidence: float | None = None,
    ) -> Future[Answer]:
        """Queue one sample for the worker; its deadline counts from ``received`` (engine clock, default now).

        Raises :class:`EngineFull` at once when ``max_queue`` requests are waiting.
        """
        r = self._request(x, received, deadline_s, flops, confidence)
        if self._unfit(r, 1, Status.UNREACHABLE):
            return r.future
        with self._cond:
            if self._worker is None or self._closed:
                raise RuntimeError("the engine is not running: call start() first")
            if len(self._queue) >= self.max_queue:
                raise EngineFull(f"the queue is full ({self.max_queue} requests waiting)")
            self._queue.append(r)
            self._cond.notify()
        return r.future

    def start(self) -> AnytimeEngine:
        """Start the one worker thread that serves queued requests (for the engine's lifetime)."""
        with self._cond:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve_queue, name="anytime-engine", daemon=True)
                self._worker.start()
        return self

    def close(self) -> None:
        """Serve what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._worker is not None:
            self._worker.join()

    def queued(self) -> int:
        return len(self._queue)

    def _wait_limit(self) -> float:
        """When batching must stop waiting: ``max_wait_s`` after the oldest arrival, or earlier where a queued
        request's deadline would stop fitting every step (waiting never costs a request a head)."""
        n = min(len(self._queue) + 1, self.max_batch)
        full = self.latency(len(self.steps) - 1, n)
        limits = [r.deadline - full for r in self._queue if r.deadline is not None]
        return min([self._queue[0].received + self.max_wait_s, *limits])

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            while len(self._queue) < self.max_batch and not self._closed:
                remaining = self._wait_limit() - self.now()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Request] = []
            while self._queue and len(batch) < self.max_batch:
                r = self._queue.popleft()  # an expired request is answered here and takes no place
                if not self._unfit(r, len(batch) + 1, Status.EXPIRED):
                    batch.append(r)
            return batch

    def _serve_queue(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except Exception as exc:  # a failed batch fails its own requests, never the worker
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)

    def describe(self) -> list[dict]:
        """Per step: member, head, FLOPs, validation error and calibrated seconds per batch size."""
        return [
            {
                "member": step.member,
                "head": step.head,
                "flops": step.flops,
                "val_error": step.val_error,
                "latency_s": {n: self.latency(s, n) for n in self.batch_sizes},
            }
            for s, step in enumerate(self.steps)
        ]
