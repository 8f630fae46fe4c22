"""The GPU paths of training, proven on CPU: where state lands on resume (here the ``meta`` device stands for
CUDA: a tensor left on the CPU beside it is as visible as one left beside a GPU)."""

from __future__ import annotations

import pytest
import torch

from anytime.train import load_checkpoint
from pipelines.config.train import MemberParams, TrainParams
from pipelines.training.run_plan import run_config
from pipelines.training.train_worker import WorkerState, batchnorm_across_ranks
from pipelines.training.worker_config import WorkerConfig

MANIFEST = {"num_classes": 10, "image_shape": [8, 8, 1]}


def worker_config(**train) -> WorkerConfig:
    params = TrainParams.model_validate({"model": {"name": "resann", "c": 4}, **train})
    return run_config(params, MemberParams(name="m0", n=1), MANIFEST, shards="unused", endpoint_url=None)


def trained_checkpoint(config: WorkerConfig, path) -> dict:
    """A CPU worker's checkpoint after one step, so the optimiser holds momentum buffers."""
    state = WorkerState.build(config, torch.device("cpu"))
    images, labels = torch.randn(4, 1, 8, 8), torch.arange(4)
    loss = sum(torch.nn.functional.cross_entropy(out, labels) for out in state.model(images))
    loss.backward()
    state.optimizer.step()
    state.save(path, epoch=0)
    return load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta")  # meta weights load as no-ops
def test_resume_puts_every_optimizer_state_tensor_on_its_parameters_device(tmp_path):
    config = worker_config()
    checkpoint = trained_checkpoint(config, tmp_path / "checkpoint.pt")
    assert all(s["momentum_buffer"].device.type == "cpu" for s in checkpoint["optimizer"]["state"].values())

    state = WorkerState.build(config, torch.device("meta"))
    assert state.restore(checkpoint) == 1
    params = [p for group in state.optimizer.param_groups for p in group["params"]]
    assert {p.device.type for p in params} == {"meta"} == {p.device.type for p in state.model.buffers()}
    restored = state.optimizer.state
    assert len(restored) == len(params)
    for param in params:
        tensors = [v for v in restored[param].values() if isinstance(v, torch.Tensor)]
        assert tensors and all(t.device == param.device for t in tensors)


def test_sync_batchnorm_converts_only_across_ranks_and_keeps_what_the_optimizer_holds():
    config = worker_config(sync_batchnorm=True, scaling={"num_workers": 2, "use_gpu": True})
    state = WorkerState.build(config, torch.device("cpu"))
    keys, params = state.model.state_dict().keys(), list(state.model.parameters())
    assert batchnorm_across_ranks(state.model, config, world_size=1) is state.model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in state.model.modules())
    synced = batchnorm_across_ranks(state.model, config, world_size=2)
    norms = [m for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    assert synced.state_dict().keys() == keys
    assert all(a is b for a, b in zip(synced.parameters(), params, strict=True))
    assert {id(p) for g in state.optimizer.param_groups for p in g["params"]} == {id(p) for p in params}
    plain = worker_config()
    assert batchnorm_across_ranks(state.model, plain, world_size=2) is state.model
