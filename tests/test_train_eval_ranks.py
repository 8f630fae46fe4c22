"""Validation and test evaluation spread over the data-parallel ranks equal rank 0 evaluating alone."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from anytime.data.reader import cut_ranges
from anytime.models import create_model
from anytime.train import evaluate, evaluate_shared
from tests.test_train_loop import run_ranks

SAMPLES = 37  # uneven over 3 ranks


@pytest.fixture(scope="module")
def split() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(SAMPLES, 1, 8, 8, generator=generator), torch.arange(SAMPLES) % 10)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resann", num_classes=10, in_channels=1, n=1, c=4)


def replica(model: torch.nn.Module, rank: int) -> torch.nn.Module:
    """The same weights on every rank, BatchNorm statistics updated by the rank's own last batch."""
    copy = deepcopy(model)
    with torch.no_grad():
        copy.train()(torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(rank)))
    return copy


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_gets_rank_0s_evaluation_of_the_whole_split(split, model, world_size):
    alone_probs, alone_labels = evaluate(replica(model, 0), DataLoader(split, batch_size=5), device="cpu")

    def rank_main(rank: int):
        lo, hi = cut_ranges(SAMPLES, world_size)[rank]
        share = TensorDataset(*(t[lo:hi] for t in split.tensors))
        return evaluate_shared(replica(model, rank), DataLoader(share, batch_size=5), device="cpu")

    for probs, labels in run_ranks(world_size, rank_main):
        assert probs.shape == alone_probs.shape and probs.dtype == np.float32
        np.testing.assert_array_equal(labels, alone_labels)
        np.testing.assert_allclose(probs, alone_probs, rtol=1e-5, atol=1e-6)


def test_a_rank_with_an_empty_share_still_joins(split, model):
    """More ranks than a tiny split has samples for: the empty rank contributes nothing and gets it all."""
    tiny = TensorDataset(*(t[:2] for t in split.tensors))
    alone_probs, alone_labels = evaluate(replica(model, 0), DataLoader(tiny, batch_size=5), device="cpu")

    def rank_main(rank: int):
        share = TensorDataset(*(t[rank : rank + 1] for t in tiny.tensors))  # rank 2: empty
        return evaluate_shared(replica(model, rank), DataLoader(share, batch_size=5), device="cpu")

    for probs, labels in run_ranks(3, rank_main):
        np.testing.assert_array_equal(labels, alone_labels)
        np.testing.assert_allclose(probs, alone_probs, rtol=1e-5, atol=1e-6)


def test_without_ranks_it_is_plain_evaluation(split, model):
    model, loader = replica(model, 0), DataLoader(split, batch_size=8)
    shared, alone = evaluate_shared(model, loader, device="cpu"), evaluate(model, loader, device="cpu")
    np.testing.assert_array_equal(shared[0], alone[0])
    np.testing.assert_array_equal(shared[1], alone[1])
