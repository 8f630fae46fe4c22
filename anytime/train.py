"""Training and evaluation of one anytime network, in the style of the torchvision reference scripts.

Usable from a notebook with any DataLoader yielding ``(images, labels)``; the Ray/DVC pipelines call the same
functions. Each step the loss is ``(strategy.weights() * per_head_losses).sum()`` and, after the optimiser
step, the strategy sees the (globally averaged, under torch.distributed) per-head losses.

Compiling pays off for anytime networks: ``model.compile()`` (in place, so state_dict keys and ``iter_heads``
stay those of the eager network) lets the compiler fuse every head's BN-ReLU-pool into the backbone's own
passes over the same feature maps, which eager mode runs separately (bench/RESULTS.md).
"""

import itertools
import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR
from tqdm.auto import tqdm

from anytime.weighting import WeightingStrategy
from anytime.weighting.base import check_float, check_int

SCHEDULERS = ("step", "cosine")
CHECK_EVERY = 50  # steps between reads of the deferred finite-loss check (a multiple of the bar's 10)
Batches = Iterable[tuple[Tensor, Tensor]]
# Fewest samples BatchNorm may take its training statistics from: below 16 per GPU, BN's error climbs
# (ResNet-50 on ImageNet: 23.6% at 32, 23.7% at 16, 24.8% at 8, 27.3% at 4; Wu & He, Group Normalization).
MIN_BN_BATCH = 16


def scaled_lr(lr: float, batch: int, reference_batch: int) -> float:
    """Linear scaling rule (Goyal et al., 2017): ``lr`` is stated for a global batch of ``reference_batch``;
    a global batch k times as large takes k times the rate, so each sample moves the weights as much."""
    check_float("lr", lr, low=0.0, low_open=True)
    check_int("batch", batch, low=1)
    check_int("reference_batch", reference_batch, low=1)
    return lr * batch / reference_batch


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices) and choose the GPU kernels: ``deterministic`` asks
    cuDNN/torch for reproducible ones (``warn_only``: ops without a deterministic version warn instead of
    failing); otherwise cuDNN benchmarks its convolution algorithms and keeps the fastest (``benchmark``),
    as bench/ measures. CPU kernels are the same either way."""
    check_int("seed", seed, low=0, high=2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def make_optimizer(
    model: nn.Module,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
    decay_norm_and_bias: bool = True,
    fused: bool | None = None,
) -> torch.optim.SGD:
    """SGD with momentum. ``decay_norm_and_bias=False`` exempts 1-d parameters (BN affine, biases) from weight
    decay, as many modern recipes do; the default decays everything like the original ResNet recipe. These
    defaults are the train stage's (``pipelines.config.train.OptimizerParams`` reads them).

    ``fused`` (default: where the parameters are on CUDA, so move the model first) steps in one kernel that
    also takes the GradScaler's inf check: with AMP, a step then never waits for the GPU (an unfused
    optimiser makes the scaler read ``found_inf`` on the host every step)."""
    check_float("lr", lr, low=0.0, low_open=True)
    check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
    check_float("weight_decay", weight_decay, low=0.0)
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True is invalid with momentum=0: Nesterov needs momentum > 0")
    params = [p for p in model.parameters() if p.requires_grad]
    if fused is None:
        fused = bool(params) and params[0].device.type == "cuda"
    if decay_norm_and_bias:
        groups: list[dict[str, Any]] = [{"params": params}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    return torch.optim.SGD(
        groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=fused or None
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    name: str = "cosine",
    epochs: int,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
) -> LRScheduler:
    """Per-epoch learning-rate schedule: ``cosine`` (to zero over ``epochs``, the default) or ``step``
    (x``gamma`` at each milestone epoch; by default at 50% and 75% of training as in the ANN papers' CIFAR
    recipe). These defaults are the train stage's (``pipelines.config.train.ScheduleParams`` reads them)."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler name={name!r} is invalid: must be one of {', '.join(SCHEDULERS)}")
    check_int("epochs", epochs, low=1)
    check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
    if milestones is not None:
        milestones = list(milestones)
        valid = all(isinstance(m, int) and 1 <= m <= epochs for m in milestones)
        if not valid or milestones != sorted(set(milestones)):
            raise ValueError(
                f"milestones={milestones!r} are invalid: must be strictly increasing epochs in [1, {epochs}]"
            )
    if name == "cosine":
        if milestones is not None:
            raise ValueError(f"milestones={milestones!r} are invalid with name='cosine': 'step' takes them")
        return CosineAnnealingLR(optimizer, T_max=epochs)
    if milestones is None:
        milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
    return MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def make_grad_scaler(device: torch.device | str, *, amp: bool = True) -> torch.amp.GradScaler:
    """Loss scaler for mixed precision; enabled on CUDA only (elsewhere it is a no-op pass-through)."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, enabled=amp and device.type == "cuda")


def per_head_losses(logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    """Cross-entropy of each head, shape (K,), in float32 whatever the autocast dtype."""
    return torch.stack([F.cross_entropy(out.float(), labels) for out in logits])


def _global_mean(values: Tensor) -> Tensor:
    """Mean over data-parallel ranks when torch.distributed runs, so every rank's strategy sees the same."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def _in_lockstep(batches: Iterable[Any], device: torch.device, length: int | None) -> Iterator[Any]:
    """Yield batches while every data-parallel rank still has one.

    Ranks can hold different numbers of batches (uneven shards, DataLoader workers); DDP's gradient
    all-reduce would then wait forever on the rank that ran out. Where the loader states its ``length`` (a
    ``len()``; each rank must yield at least that many batches, as a DataLoader does), one all-reduce per
    epoch fixes every rank's number of steps at the shortest rank's. Otherwise one scalar all-reduce per
    step, read on the host, makes every rank stop at the shortest rank's end.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield from batches
        return
    if length is not None:
        steps = torch.tensor(length, device=device)
        dist.all_reduce(steps, op=dist.ReduceOp.MIN)
        yield from itertools.islice(batches, int(steps))
        return
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        has_batch = torch.tensor(int(batch is not None), device=device)
        dist.all_reduce(has_batch, op=dist.ReduceOp.MIN)
        if not has_batch.item():
            return
        yield batch


def _length(loader: Batches) -> int | None:
    """``len(loader)`` where it has one (a DataLoader over an iterable dataset without ``__len__``: none)."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


class FiniteWatch:
    """Non-finite losses, noted on the device every step and read on the host only every ``every`` steps.

    As strict as a check before each backward pass: the first non-finite step is kept with its losses and
    the epoch ends in the same error, only up to ``every`` steps later (before anything is checkpointed).
    It watches the losses averaged over ranks, so every rank sees the same and all raise together.
    """

    def __init__(self, epoch: int, device: torch.device, every: int) -> None:
        self.epoch, self.every = epoch, check_int("check_every", every, low=1)
        self.first = torch.full((), -1, dtype=torch.int64, device=device)  # first non-finite step, or -1
        self.losses: Tensor | None = None  # the losses of that step

    def see(self, step: int, losses: Tensor) -> None:
        first = ~torch.isfinite(losses).all() & (self.first < 0)
        self.first = torch.where(first, step, self.first)
        self.losses = torch.where(first, losses, losses if self.losses is None else self.losses)
        if (step + 1) % self.every == 0:
            self.raise_if(int(self.first))

    def raise_if(self, first: int) -> None:
        """Raise if ``first`` (``self.first`` as read on the host) names a step."""
        if first >= 0:
            assert self.losses is not None
            raise FloatingPointError(
                f"non-finite loss at epoch {self.epoch}, step {first}: per-head losses {self.losses.tolist()}"
            )


def train_one_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    strategy: WeightingStrategy,
    *,
    device: torch.device | str,
    epoch: int,
    scheduler: LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = True,
    progress: bool = True,
    check_every: int = CHECK_EVERY,
) -> dict[str, Any]:
    """One pass over ``loader``. Calls ``strategy.start_epoch(epoch)`` first and steps ``scheduler`` (a
    per-epoch schedule) once at the end. Pass one ``scaler`` across epochs to keep its calibration.

    A step waits for the device at most once (docs/cluster.md): weights, losses and the strategy stay on
    it, non-finite losses are looked for every ``check_every`` steps (:class:`FiniteWatch`), the progress
    bar reads the losses every 10 steps. With AMP, give a fused optimiser (``make_optimizer``'s default
    on CUDA), or the GradScaler reads its inf check on the host every step.

    Under torch.distributed every rank stops when the first rank runs out of batches (DDP needs lockstep).
    Returns ``{"epoch", "lr", "samples", "loss", "head_losses"}``: the weighted loss and each head's loss
    averaged over the epoch's samples (globally averaged under torch.distributed).
    """
    device = torch.device(device)
    scaler = scaler if scaler is not None else make_grad_scaler(device, amp=amp)
    strategy.to(device).start_epoch(epoch)
    model.train()
    lr = optimizer.param_groups[0]["lr"]
    loss_sum = torch.zeros((), device=device)
    head_loss_sum = torch.zeros((), device=device)
    watch = FiniteWatch(epoch, device, check_every)
    samples = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    for step, (images, labels) in enumerate(_in_lockstep(bar, device, _length(loader))):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        weights = strategy.weights().to(device)
        with _autocast(device, amp):
            losses = per_head_losses(model(images), labels)
        loss = (weights * losses).sum()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step_losses = _global_mean(losses.detach())
        strategy.update(step_losses, validate=False)  # the watch checks them
        batch = labels.shape[0]
        samples += batch
        loss_sum += (weights * step_losses).sum() * batch
        head_loss_sum = head_loss_sum + step_losses * batch
        if progress and step % 10 == 0:  # never a step the watch reads on: CHECK_EVERY is a multiple of 10
            shown, final = torch.stack([loss.detach(), losses[-1].detach()]).tolist()
            bar.set_postfix(loss=f"{shown:.3f}", final=f"{final:.3f}", refresh=False)
        watch.see(step, step_losses)
    if samples == 0:
        raise ValueError("loader yielded no batches: nothing to train on")
    # one read for the watch and the epoch's means
    first, total, *heads = torch.cat(
        [watch.first.double().view(1), loss_sum.double().view(1), (head_loss_sum / samples).double()]
    ).tolist()
    watch.raise_if(int(first))
    if scheduler is not None:
        scheduler.step()
    return {"epoch": epoch, "lr": lr, "samples": samples, "loss": total / samples, "head_losses": heads}


@torch.inference_mode()
def _predict(
    model: nn.Module, loader: Batches, device: torch.device, amp: bool, progress: bool
) -> tuple[list[Tensor], list[Tensor]]:
    """Each batch's softmax outputs of every head [K, B, C] and labels [B], on the CPU, in loader order."""
    model.eval()
    probs: list[Tensor] = []
    labels: list[Tensor] = []
    for images, batch_labels in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        with _autocast(device, amp):
            outputs = model(images.to(device, non_blocking=True))
        probs.append(torch.stack([out.float().softmax(dim=1) for out in outputs]).cpu())
        labels.append(batch_labels.cpu().to(torch.int64))
    return probs, labels


def evaluate(
    model: nn.Module, loader: Batches, *, device: torch.device | str, amp: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of every head: ``probs`` float32 [K, N, C], ``labels`` int64 [N], in loader order."""
    probs, labels = _predict(model, loader, torch.device(device), amp, progress)
    if not probs:
        raise ValueError("loader yielded no batches: nothing to evaluate")
    return torch.cat(probs, dim=1).numpy(), torch.cat(labels).numpy()


def evaluate_shared(
    model: nn.Module, loader: Batches, *, device: torch.device | str, amp: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate` with the work spread over the data-parallel ranks: each rank's ``loader`` holds its
    share of the split (contiguous, in rank order), and every rank returns all shares joined in rank order.

    Every rank evaluates rank 0's network: its buffers (BatchNorm statistics, which each rank updated
    from its own last batch) are broadcast first, so the result is what rank 0 alone would compute over the
    whole split. Without torch.distributed this is :func:`evaluate`. A rank's share may be empty.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return evaluate(model, loader, device=device, amp=amp)
    device = torch.device(device)
    for buffer in unwrap_model(model).buffers():
        dist.broadcast(buffer, src=0)
    probs, labels = _predict(model, loader, device, amp, progress=False)
    mine = torch.cat(probs, dim=1).to(device) if probs else None
    mine_labels = torch.cat(labels).to(device) if labels else torch.zeros(0, dtype=torch.int64, device=device)
    world = dist.get_world_size()
    shape = torch.tensor(mine.shape if mine is not None else (0, 0, 0), device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    heads, most, classes = (int(v) for v in torch.stack(shapes).max(dim=0).values)
    if most == 0:
        raise ValueError("loader yielded no batches on any rank: nothing to evaluate")
    padded = torch.zeros(heads, most, classes, device=device)
    padded_labels = torch.zeros(most, dtype=torch.int64, device=device)
    if mine is not None:
        padded[:, : mine.shape[1]] = mine
        padded_labels[: mine.shape[1]] = mine_labels
    gathered = [torch.empty_like(padded) for _ in range(world)]
    gathered_labels = [torch.empty_like(padded_labels) for _ in range(world)]
    dist.all_gather(gathered, padded)
    dist.all_gather(gathered_labels, padded_labels)
    sizes = [int(s[1]) for s in shapes]
    joined = torch.cat([g[:, :n] for g, n in zip(gathered, sizes, strict=True)], dim=1)
    joined_labels = torch.cat([g[:n] for g, n in zip(gathered_labels, sizes, strict=True)])
    return joined.cpu().numpy(), joined_labels.cpu().numpy()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network under DDP and/or a ``torch.compile`` wrapper, so checkpoints keep its own keys."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile(model)'s wrapper
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    strategy: WeightingStrategy | None = None,
    epoch: int,
    extra: dict[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write everything needed to resume after ``epoch`` (the last finished epoch) atomically: a crash
    mid-write leaves the previous checkpoint intact. Everything is plain tensors/numbers/lists/dicts, so it
    loads with ``weights_only=True``."""
    path = Path(path)
    net = unwrap_model(model)
    state = {
        "config": dict(getattr(net, "config", {})),
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "strategy": strategy.state_dict() if strategy is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no arbitrary code)."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or not {"model", "epoch"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a checkpoint written by anytime.train.save_checkpoint")
    return checkpoint


def restore_checkpoint(
    checkpoint: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    strategy: WeightingStrategy | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Load the given components' states from ``checkpoint``; returns the epoch to resume at (saved + 1)."""
    unwrap_model(model).load_state_dict(checkpoint["model"])
    for name, part in (("optimizer", optimizer), ("scheduler", scheduler), ("strategy", strategy)):
        if part is None:
            continue
        if checkpoint.get(name) is None:
            raise ValueError(f"checkpoint has no {name} state to restore")
        part.load_state_dict(checkpoint[name])
    if scaler is not None and checkpoint.get("scaler") is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    return int(checkpoint["epoch"]) + 1
