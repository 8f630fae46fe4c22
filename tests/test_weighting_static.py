"""Static schemes (METHOD.md §2): worked vectors exactly, normalisations, EANN zeroing, names, bad input."""

import io

import pytest
import torch

from anytime.weighting import (
    SCHEMES,
    StaticStrategy,
    WeightingStrategy,
    create_strategy,
    eann_first_head,
    list_strategies,
    register_strategy,
    static_weights,
    strategy_hparams,
)
from anytime.weighting.base import _REGISTRY, check_float, check_int, check_state_tensor

SIEVE_8 = [1, 2, 1, 3, 1, 2, 1, 11]
SIEVE_12 = [1, 2, 1, 4, 1, 2, 1, 3, 1, 2, 1, 19]


@pytest.mark.parametrize("raw", [SIEVE_8, SIEVE_12], ids=["K8", "K12"])
def test_sieve_matches_spec_raw_and_normalised(raw):
    K = len(raw)
    assert static_weights("sieve", K, "none") == raw
    assert static_weights("sieve", K) == [r / raw[-1] for r in raw]
    assert static_weights("sieve", K, "sum") == [r / (2 * raw[-1]) for r in raw]


def test_half_end_k8_is_one_seventh_then_one():
    assert static_weights("half_end", 8) == [1 / 7] * 7 + [1.0]


def test_linear_k8_matches_spec_to_four_decimals():
    spec = [0.25, 0.3571, 0.4643, 0.5714, 0.6786, 0.7857, 0.8929, 1.0]
    assert [round(w, 4) for w in static_weights("linear", 8)] == spec


def test_exp_lin_k8_raw_is_the_documented_reconstruction():
    assert static_weights("exp_lin", 8, "none") == [1, 1, 1, 3, 1, 2, 1, 10]


def test_const_and_opt():
    assert static_weights("const", 5) == static_weights("const", 5, "none") == [1.0] * 5
    assert static_weights("opt", 3, j=0) == [1.0, 0.0, 0.0]
    assert static_weights("opt", 5, j=2) == [0.0, 0.0, 1.0, 0.0, 0.0]
    # A one-hot is already normalised, including when its head is not the final one.
    assert static_weights("opt", 5, "sum", j=1) == static_weights("opt", 5, "last", j=1)


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "opt"])
@pytest.mark.parametrize("K", [2, 3, 7, 16])
def test_normalisations_are_rescalings_of_raw(scheme, K):
    raw = static_weights(scheme, K, "none")
    last = static_weights(scheme, K, "last")
    total = static_weights(scheme, K, "sum")
    assert last[-1] == 1.0
    assert sum(total) == pytest.approx(1.0, abs=1e-12)
    assert last == pytest.approx([w / raw[-1] for w in raw], rel=1e-12)
    assert all(w > 0 for w in raw)


@pytest.mark.parametrize("scheme", ["sieve", "exp_lin", "half_end"])
def test_final_head_is_half_of_the_total(scheme):
    w = static_weights(scheme, 12, "sum")
    assert w[-1] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("K", [7, 8])
def test_eann_zeroes_first_half(K):
    w = static_weights("sieve", K, eann=True)
    assert w[: K // 2] == [0.0] * (K // 2)
    assert w[K // 2 :] == static_weights("sieve", K)[K // 2 :]
    assert sum(static_weights("const", K, "sum", eann=True)) == pytest.approx(1.0)


@pytest.mark.parametrize(("K", "first"), [(1, 0), (2, 1), (7, 3), (8, 4)])
def test_eann_first_head_is_half_the_heads_rounded_down(K, first):
    assert eann_first_head(K) == first


def test_static_strategy_built_by_name_zeroes_the_first_half_for_eann():
    weights = create_strategy("sieve", 8, eann=True).weights().tolist()
    assert weights == pytest.approx([0, 0, 0, 0, 1 / 11, 2 / 11, 1 / 11, 1])


def test_static_strategy_defaults_to_last_normalisation_without_eann():
    assert StaticStrategy(8, scheme="sieve").weights().tolist() == pytest.approx([r / 11 for r in SIEVE_8])


def test_registry_lists_static_names_and_builds_them():
    assert set(SCHEMES) <= set(list_strategies())
    s = create_strategy("sieve", num_heads=8)
    assert isinstance(s, WeightingStrategy)
    w = s.weights()
    assert w.dtype == torch.float32 and w.shape == (8,)
    assert w.tolist() == pytest.approx([r / 11 for r in SIEVE_8])
    s.update(torch.rand(8))
    assert torch.equal(s.weights(), w)
    w[0] = 99.0  # the caller's copy, not the strategy's state
    assert s.weights()[0] != 99.0


def test_a_registered_factory_is_built_by_name_and_a_taken_name_is_refused():
    def make(num_heads, *, scale=1.0):
        return StaticStrategy(num_heads, scheme="const")

    register_strategy("test-only-const")(make)
    try:
        assert isinstance(create_strategy("test-only-const", 3), StaticStrategy)
        assert strategy_hparams("test-only-const") == ("scale",)
    finally:
        del _REGISTRY["test-only-const"]  # the registry is global: leave it as the other tests expect
    with pytest.raises(ValueError) as info:
        register_strategy("const")(make)
    assert str(info.value) == "weighting strategy 'const' is already registered"
    assert create_strategy("const", 2).weights().tolist() == [1.0, 1.0]  # the built-in entry is untouched


@pytest.mark.parametrize(("name", "kwargs"), [("const", {}), ("opt", {"j": 0}), ("adaloss", {})])
def test_one_head_is_a_valid_network_for_static_and_adaptive_weights(name, kwargs):
    s = create_strategy(name, 1, **kwargs)  # a plain network: its only head is the final one
    s.update(torch.tensor([0.5]))
    assert s.weights().tolist() == [1.0]


def test_static_state_dict_round_trips_through_weights_only_load():
    s = create_strategy("opt", 4, j=3)
    s.start_epoch(5)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    t = create_strategy("opt", 4, j=3)
    t.load_state_dict(torch.load(buf, weights_only=True))
    assert t.epoch == 5


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: static_weights("sieve2", 8), "'sieve2' is unknown"),
        (lambda: static_weights("sieve", 1), "K (number of heads) for scheme 'sieve'=1"),
        (lambda: static_weights("linear", 8, "max"), "normalisation='max'"),
        (lambda: static_weights("opt", 8), "needs the head index j"),
        (lambda: static_weights("opt", 8, j=8), "j=8 is invalid"),
        (lambda: static_weights("opt", 8, j=-1), "j=-1 is invalid"),
        (lambda: static_weights("const", 8, j=2), "only 'opt' takes"),
        (lambda: static_weights("opt", 8, eann=True, j=1), "eann=True"),
        (lambda: static_weights("const", 8, eann="yes"), "eann='yes'"),
        (lambda: create_strategy("nope", 8), "'nope' is unknown"),
        (lambda: create_strategy("const", 8, gamma=0.1), "allowed are ['normalisation', 'eann']"),
        (lambda: create_strategy("const", 0), "num_heads=0"),
        (lambda: create_strategy("const", 8.0), "num_heads=8.0"),
        (lambda: create_strategy("const", 3).update(torch.ones(4)), "shape (3,)"),
        (lambda: create_strategy("const", 2).update(torch.tensor([1.0, float("nan")])), "finite"),
        (lambda: create_strategy("const", 2).start_epoch(-1), "epoch=-1"),
    ],
)
def test_bad_input_is_one_clear_value_error(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: static_weights("opt", 8), "scheme 'opt' needs the head index j, an integer in [0, 7]"),
        (
            lambda: static_weights("opt", 8, eann=True, j=1),
            "j=1 is invalid with eann=True: heads 0..3 are zeroed for K=8",
        ),
        (lambda: eann_first_head(0), "num_heads=0 is invalid: must be an integer in [1, inf]"),
        (lambda: create_strategy("const", 0), "num_heads=0 is invalid: must be an integer in [1, inf]"),
        (lambda: static_weights("opt", 8, j=8), "j=8 is invalid: must be an integer in [0, 7]"),
        (lambda: check_int("count", 1.5), "count=1.5 is invalid: must be an integer in [-inf, inf]"),
        (lambda: check_int("flag", True, low=0), "flag=True is invalid: must be an integer in [0, inf]"),
        (
            lambda: create_strategy("adaloss", 2, gamma=1.5),
            "gamma=1.5 is invalid: must be a number in (0.0, 1.0]",
        ),
        (
            lambda: create_strategy("adaloss", 2, gamma=True),
            "gamma=True is invalid: must be a number in (0.0, 1.0]",
        ),
        (
            lambda: create_strategy("adaloss", 2, momentum=1.0),
            "momentum=1.0 is invalid: must be a number in [0.0, 1.0)",
        ),
        (
            lambda: create_strategy("adaloss", 2, final_extra=-0.5),
            "final_extra=-0.5 is invalid: must be a number in [0.0, inf)",
        ),
        (lambda: check_float("x", float("nan"), low=0.0), "x=nan is invalid: must be a number in [0.0, inf)"),
        (
            lambda: check_state_tensor({"ema": [1.0]}, "ema", (1,)),
            "state_dict['ema'] is list: expected a tensor of shape (1,)",
        ),
        (
            lambda: check_state_tensor({"ema": torch.ones(2)}, "ema", (1,)),
            "state_dict['ema'] is (2,): expected a tensor of shape (1,)",
        ),
        (
            lambda: strategy_hparams("nope"),
            f"weighting strategy 'nope' is unknown: choose one of {list_strategies()}",
        ),
    ],
)
def test_bad_input_messages_name_the_value_and_the_valid_range(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_interval_ends_are_valid_where_the_interval_is_closed():
    assert check_float("gamma", 1.0, low=0.0, high=1.0, low_open=True) == 1.0
    assert check_float("final_extra", 0, low=0.0) == 0.0
    assert check_int("j", 7, low=0, high=7) == 7
    assert create_strategy("adaloss", 2, gamma=1.0).gamma == 1.0


def test_hyperparameters_of_a_strategy_include_what_its_base_takes():
    assert strategy_hparams("avgl") == (
        "momentum",
        "gamma",
        "rho_last",
        "rho",
        "scheme",
        "seed",
        "normalisation",
        "eann",
    )
    assert strategy_hparams("opt") == ("j", "normalisation", "eann")
