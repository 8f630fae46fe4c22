"""Anytime models: METHOD.md §1 architecture, head placement, lazy/early-stopping forward, OPT(j), names."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from anytime.models import (
    LAYOUTS,
    AnytimeNet,
    BottleneckResANN,
    ResANN,
    create_model,
    head_positions,
    list_models,
    register_model,
)
from anytime.models.resann import BasicUnit


def small(**kwargs) -> AnytimeNet:
    defaults = {"num_classes": 10, "in_channels": 1, "n": 2, "c": 4, "period": 1}
    return create_model("resann", **{**defaults, **kwargs}).eval()


class RunLog:
    """Forward hooks on every stem/unit/head module: records which ones actually ran, in order."""

    def __init__(self, model: AnytimeNet) -> None:
        self.ran: list[str] = []
        for name, module in model.named_modules():
            if name == "stem" or (name.count(".") == 1 and name.split(".")[0] in ("units", "heads")):
                module.register_forward_hook(lambda *_, name=name: self.ran.append(name))


@pytest.mark.parametrize(
    ("num_units", "period", "expected"),
    [
        (9, 1, list(range(9))),
        (9, 2, [0, 2, 4, 6, 8]),
        (9, 4, [0, 4, 8]),
        (8, 3, [1, 4, 7]),
        (16, 2, [1, 3, 5, 7, 9, 11, 13, 15]),
        (5, 5, [4]),
    ],
)
def test_head_positions_worked_values(num_units, period, expected):
    assert head_positions(num_units, period) == expected


@given(st.integers(1, 200), st.integers(1, 200))
def test_head_positions_end_at_last_unit_every_period(num_units, period):
    if period > num_units:
        with pytest.raises(ValueError, match=f"period={period}"):
            head_positions(num_units, period)
        return
    heads = head_positions(num_units, period)
    assert heads[-1] == num_units - 1
    assert heads[0] < period
    assert all(b - a == period for a, b in itertools.pairwise(heads))
    assert len(heads) == math.ceil(num_units / period)


def test_resann_depth_channels_and_strides():
    n, c = 3, 16
    model = create_model("resann", n=n, c=c, in_channels=3).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) + 1 == 6 * n + 2  # 3x3 convs + final linear
    assert not any(m.kernel_size == (1, 1) for m in convs)  # default shortcut has no parameters
    shapes = []
    for unit in model.units:
        unit.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    model(torch.randn(2, 3, 32, 32))
    assert shapes == [(c, 32, 32)] * n + [(2 * c, 16, 16)] * n + [(4 * c, 8, 8)] * n
    strided = [i for i, u in enumerate(model.units) if u.conv1.stride == (2, 2)]
    assert strided == [n, 2 * n]
    assert model.num_heads == 3 * n and model.head_units == list(range(3 * n))


def test_pool_pad_shortcut_is_avgpool_then_zero_channels():
    unit = BasicUnit(4, 8, stride=2, shortcut="pad").eval()
    x = torch.randn(3, 4, 6, 6)
    shortcut = unit.pool_pad(x)
    assert shortcut.shape == (3, 8, 3, 3)
    torch.testing.assert_close(shortcut[:, :4], nn.functional.avg_pool2d(x, 2))
    assert torch.count_nonzero(shortcut[:, 4:]) == 0
    # the unit adds the residual branch to exactly that shortcut
    pre = torch.relu(unit.bn1(x))
    branch = unit.conv2(torch.relu(unit.bn2(unit.conv1(pre))))
    torch.testing.assert_close(unit(x), branch + shortcut)


def test_projection_shortcut_option():
    model = small(shortcut="projection")
    projections = [u.projection for u in model.units if u.projection is not None]
    assert [(p.kernel_size, p.stride) for p in projections] == [((1, 1), (2, 2))] * 2
    assert all(u.pool_pad is None for u in model.units)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 7, 7), (2, 9, 13)])
@pytest.mark.parametrize("shortcut", ["pad", "projection"])
def test_any_input_channels_and_size(shape, shortcut):
    model = small(in_channels=shape[0], shortcut=shortcut, num_classes=7)
    outputs = model(torch.randn(2, *shape))
    assert len(outputs) == model.num_heads == 6
    assert all(o.shape == (2, 7) for o in outputs)


def test_one_forward_returns_every_head_and_all_heads_train():
    model = small(period=2).train()
    outputs = model(torch.randn(4, 1, 8, 8))
    assert model.head_units == [1, 3, 5] and len(outputs) == 3
    sum(o.square().mean() for o in outputs).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("until", [0, 2, 5])
def test_forward_until_runs_nothing_past_head(until):
    model = small()
    x = torch.randn(3, 1, 8, 8)
    full = model(x)
    log = RunLog(model)
    partial = model(x, until=until)
    assert len(partial) == until + 1
    for a, b in zip(partial, full, strict=False):
        torch.testing.assert_close(a, b)
    last_unit = model.head_units[until]
    expected = ["stem"]
    for u in range(last_unit + 1):
        expected.append(f"units.{u}")
        if u in model.head_units:
            expected.append(f"heads.{model.head_units.index(u)}")
    assert log.ran == expected


def test_iter_heads_is_lazy():
    model = small(period=2)
    log = RunLog(model)
    heads = model.iter_heads(torch.randn(2, 1, 8, 8))
    assert log.ran == []  # a generator: nothing runs before the first request
    first = next(heads)
    assert first.shape == (2, 10)
    assert log.ran == ["stem", "units.0", "units.1", "heads.0"]
    next(heads)
    assert log.ran[4:] == ["units.2", "units.3", "heads.1"]


@pytest.mark.parametrize("j", [0, 2, 5])
def test_truncate_at_builds_opt_backbone(j):
    full = small(period=1, n=2)
    opt = small(period=1, n=2, truncate_at=j)
    assert opt.num_heads == j + 1
    assert opt.head_units == full.head_units[: j + 1]
    assert len(opt.units) == full.head_units[j] + 1
    # OPT(j) is literally a prefix of the full network: its weights load into it and give the same logits
    assert not full.load_state_dict(opt.state_dict(), strict=False).unexpected_keys
    x = torch.randn(2, 1, 8, 8)
    for a, b in zip(opt(x), full(x, until=j), strict=True):
        torch.testing.assert_close(a, b)


def test_truncate_with_period():
    model = small(n=3, period=4, truncate_at=1)  # N = 9: heads at 0, 4, 8
    assert model.head_units == [0, 4] and len(model.units) == 5


def test_config_rebuilds_model():
    model = create_model("resann", num_classes=5, in_channels=3, n=1, c=8, period=3, truncate_at=0)
    assert model.config == {
        "name": "resann",
        "num_classes": 5,
        "in_channels": 3,
        "n": 1,
        "c": 8,
        "period": 3,
        "shortcut": "pad",
        "truncate_at": 0,
    }
    twin = create_model(**model.config)
    twin.load_state_dict(model.state_dict())  # strict: identical structure
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    twin.eval()
    torch.testing.assert_close(model(x), twin(x))


@pytest.mark.parametrize("depth", sorted(LAYOUTS))
def test_bottleneck_layouts(depth):
    model = create_model(f"resann{depth}", num_classes=10, width=4)
    assert isinstance(model, BottleneckResANN)
    num_units = sum(LAYOUTS[depth])
    assert {26: 8, 50: 16, 101: 33}[depth] == num_units
    assert model.head_units == head_positions(num_units, 2)  # default period 2
    assert model.head_units[-1] == num_units - 1
    group_starts = [sum(LAYOUTS[depth][:g]) for g in range(4)]
    for i, unit in enumerate(model.units):
        assert unit.conv2.stride == ((2, 2) if i in group_starts[1:] else (1, 1))
        assert (unit.projection is not None) == (i in group_starts)  # projection shortcuts on shape change
    assert model.config["name"] == f"resann{depth}" and "depth" not in model.config


def test_bottleneck_forward_shapes_and_expansion():
    model = create_model("resann26", num_classes=10, width=4, period=1).eval()
    shapes = []
    for unit in model.units:
        unit.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    outputs = model(torch.randn(2, 3, 64, 64))
    assert len(outputs) == 8 and all(o.shape == (2, 10) for o in outputs)
    # stem /4, then /2 per later group; channels 4 * width * 2^g
    assert shapes == [(16, 16, 16)] * 2 + [(32, 8, 8)] * 2 + [(64, 4, 4)] * 2 + [(128, 2, 2)] * 2
    assert len(model(torch.randn(1, 3, 64, 64), until=3)) == 4


def test_kaiming_init_like_torchvision():
    model = create_model("resann", n=2, c=32, in_channels=3)
    conv = model.units[3].conv2  # 64 -> 64, 3x3
    expected_std = math.sqrt(2.0 / (64 * 9))  # fan_out mode
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_registry_lists_and_registers():
    assert {"resann", "resann26", "resann50", "resann101"} <= set(list_models())
    assert list_models("resann1*") == ["resann101"]

    def tiny_test_resann(num_classes: int = 3) -> ResANN:
        return ResANN(num_classes=num_classes, in_channels=1, n=1, c=2)

    register_model(tiny_test_resann)
    model = create_model("tiny_test_resann")
    assert model.config == {"name": "tiny_test_resann", "num_classes": 3} and model.num_heads == 3
    with pytest.raises(ValueError, match="already registered"):
        register_model(tiny_test_resann)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: create_model("resnet9000"), r"name='resnet9000'.*resann"),
        (lambda: create_model("resann", n=0), r"n=0 .*integer >= 1"),
        (lambda: create_model("resann", c=2.5), r"c=2.5 .*integer >= 1"),
        (lambda: create_model("resann", in_channels=0), r"in_channels=0 "),
        (lambda: create_model("resann", num_classes=0), r"num_classes=0 "),
        (lambda: create_model("resann", n=2, period=7), r"period=7 .*\[1, 6\]"),
        (lambda: create_model("resann", period=0), r"period=0 .*\[1, 9\]"),
        (lambda: create_model("resann", n=2, truncate_at=6), r"truncate_at=6 .*\[0, 5\]"),
        (lambda: create_model("resann", n=2, period=2, truncate_at=-1), r"truncate_at=-1 .*\[0, 2\]"),
        (lambda: create_model("resann", shortcut="conv"), r"shortcut='conv' .*pad, projection"),
        (lambda: create_model("resann", depth=3), r"unknown argument\(s\) depth.*allowed are num_classes"),
        (lambda: create_model("resann50", period=17), r"period=17 .*\[1, 16\]"),
        (lambda: BottleneckResANN(depth=34), r"depth=34 .*26, 50, 101"),
    ],
)
def test_bad_config_raises_clear_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("until", [6, -1, 2.0, True])
def test_bad_until_raises(until):
    with pytest.raises(ValueError, match=r"until=.*\[0, 5\]"):
        small()(torch.randn(1, 1, 8, 8), until=until)
