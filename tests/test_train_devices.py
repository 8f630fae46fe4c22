"""The GPU paths of training, proven on CPU: where state lands on resume (here the ``meta`` device stands for
CUDA: a tensor left on the CPU beside it is as visible as one left beside a GPU)."""

from __future__ import annotations

import pytest
import torch

from anytime.train import load_checkpoint
from pipelines.config.train import MemberParams, TrainParams
from pipelines.training.run_plan import run_config
from pipelines.training.train_worker import WorkerState

MANIFEST = {"num_classes": 10, "image_shape": [8, 8, 1]}


def worker_config(**train) -> dict:
    params = TrainParams.model_validate({"model": {"name": "resann", "c": 4}, **train})
    return run_config(params, MemberParams(name="m0", n=1), MANIFEST, shards="unused", endpoint_url=None)


def trained_checkpoint(config: dict, path) -> dict:
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
