"""Per-head FLOPs (METHOD.md §6) measured with torch's FLOP counter, checked by hand counts and for real."""

import itertools

import pytest
import torch

from anytime.flops import forward_flops, head_costs
from anytime.models import create_model


def conv_flops(k: int, c_in: int, c_out: int, h_out: int, w_out: int) -> int:
    return 2 * k * k * c_in * c_out * h_out * w_out


def test_head_costs_match_hand_count():
    """ResANN n=1, c=4 on 1x8x8: stem 8x8, unit 0 at 8x8, unit 1 to 4x4 (8 ch), unit 2 to 2x2 (16 ch)."""
    model = create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1)
    stem = conv_flops(3, 1, 4, 8, 8)
    units = [
        conv_flops(3, 4, 4, 8, 8) * 2,
        conv_flops(3, 4, 8, 4, 4) + conv_flops(3, 8, 8, 4, 4),
        conv_flops(3, 8, 16, 2, 2) + conv_flops(3, 16, 16, 2, 2),
    ]
    heads = [2 * 4 * 10, 2 * 8 * 10, 2 * 16 * 10]  # linear layers; BN/ReLU/pool count zero
    expected = [stem + sum(units[: k + 1]) + heads[k] for k in range(3)]
    assert head_costs(model, (1, 8, 8)) == expected
    assert forward_flops(model, (1, 8, 8)) == stem + sum(units) + sum(heads)
    assert forward_flops(model, (1, 8, 8), until=1) == stem + sum(units[:2]) + sum(heads[:2])


def test_projection_shortcut_is_counted():
    pad = create_model("resann", in_channels=1, n=1, c=4)
    proj = create_model("resann", in_channels=1, n=1, c=4, shortcut="projection")
    extra = 2 * 4 * 8 * 4 * 4 + 2 * 8 * 16 * 2 * 2  # two strided 1x1 convs
    assert head_costs(proj, (1, 8, 8))[-1] - head_costs(pad, (1, 8, 8))[-1] == extra


def test_heads_cost_under_two_percent_of_single_head_backbone():
    """METHOD.md §1's cheap heads: all 27 heads of ResANN n=9, c=16 on 3x32x32 vs the same net, one head."""
    anytime_net = create_model("resann", n=9, c=16, period=1)
    single_head = create_model("resann", n=9, c=16, period=27)
    assert anytime_net.num_heads == 27 and single_head.num_heads == 1
    with_heads = forward_flops(anytime_net, (3, 32, 32))
    final_only = forward_flops(single_head, (3, 32, 32))
    assert final_only > 0.2e9  # a real ~0.25 GFLOP backbone was counted
    assert head_costs(anytime_net, (3, 32, 32))[-1] == final_only  # final head's path = plain network
    assert 0 < with_heads - final_only < 0.02 * final_only


def test_costs_monotone_and_truncation_consistent():
    model = create_model("resann26", num_classes=10, width=4, period=1)
    costs = head_costs(model, (3, 64, 64))
    assert len(costs) == model.num_heads == 8
    assert all(a < b for a, b in itertools.pairwise(costs))
    opt = create_model("resann26", num_classes=10, width=4, period=1, truncate_at=3)
    assert head_costs(opt, (3, 64, 64)) == costs[:4]


def test_measurement_restores_mode_and_device_and_leaves_bn_untouched():
    model = create_model("resann", in_channels=1, n=1, c=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_costs(model, (1, 8, 8))
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("shape", [(8, 8), (1, 1, 8, 8), (1, 0, 8), (1, 8.0, 8)])
def test_bad_input_shape(shape):
    model = create_model("resann", in_channels=1, n=1, c=4)
    with pytest.raises(ValueError, match=r"input_shape=.*\(channels, height, width\)"):
        head_costs(model, shape)
