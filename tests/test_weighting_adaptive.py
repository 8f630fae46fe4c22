"""Alternating weights (METHOD.md §3) and AdaLoss (§4): sampling, schedule, worked example, resumption."""

import io

import pytest
import torch

from anytime.weighting import SCHEMES, adaloss_weights, create_strategy, static_weights


def reload(state: dict) -> dict:
    """A state dict as a checkpoint gives it back: saved, then loaded with weights_only=True."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def selected_heads(strategy, steps: int, K: int) -> list[int]:
    """The head each step emphasises, read off the weights (the one above its base weight)."""
    base = torch.tensor(static_weights("sieve", K), dtype=torch.float32)
    heads = []
    for _ in range(steps):
        heads.append(int((strategy.weights() - base).argmax()))
        strategy.update(torch.rand(K))
    return heads


# --- alternating -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_alternating_adds_sum_over_rho_to_one_head_for_every_scheme(scheme):
    K, rho = 6, 4.0
    kwargs = {"j": 3} if scheme == "opt" else {}
    base = torch.tensor(static_weights(scheme, K, **kwargs))
    s = create_strategy("alternating", K, scheme=scheme, rho=rho, **kwargs)
    first = s.weights().double()
    assert torch.allclose(first - base, torch.eye(K)[K - 1].double() * base.sum() / rho)  # step 1: final head
    for _ in range(20):
        s.update(torch.rand(K))
        extra = s.weights().double() - base
        assert int((extra > 1e-6).sum()) == 1
        assert float(extra.sum()) == pytest.approx(float(base.sum()) / rho, rel=1e-6)
        assert float(base[int(extra.argmax())]) > 0  # heads with B_s = 0 are never drawn


def test_alternating_weights_are_rounded_to_float32_once():
    # SIEVE K = 5: B = [3, 1, 2, 1, 7] / 7 sums to 2; step 1 adds 2 / 3 to the final head: 5 / 3, rounded once
    weights = create_strategy("alternating", 5, rho=3.0).weights()
    assert weights.tolist() == torch.tensor([3 / 7, 1 / 7, 2 / 7, 1 / 7, 5 / 3], dtype=torch.float32).tolist()


def test_alternating_keeps_the_proportions_of_b_in_expectation():
    K = 8
    s = create_strategy("alternating", K, scheme="sieve", seed=3)
    heads = selected_heads(s, 4001, K)[1:]
    freq = torch.bincount(torch.tensor(heads), minlength=K).double() / len(heads)
    expected = torch.tensor([1, 2, 1, 3, 1, 2, 1, 11], dtype=torch.float64) / 22
    assert torch.allclose(freq, expected, atol=0.025)


def test_alternating_draws_only_in_update_and_is_reproducible_from_the_seed():
    K = 8
    s = create_strategy("alternating", K, scheme="sieve", seed=11)
    assert torch.equal(s.weights(), s.weights())  # asking twice draws nothing
    a = selected_heads(s, 50, K)
    b = selected_heads(create_strategy("alternating", K, scheme="sieve", seed=11), 50, K)
    c = selected_heads(create_strategy("alternating", K, scheme="sieve", seed=12), 50, K)
    assert a == b  # same seed, same calls: every data-parallel rank picks the same heads
    assert a != c


def test_alternating_resumes_the_same_sequence_from_a_checkpoint():
    K = 8
    ref = create_strategy("alternating", K, scheme="sieve", seed=5)
    selected_heads(ref, 17, K)
    state = reload(ref.state_dict())
    expected = selected_heads(ref, 30, K)
    resumed = create_strategy("alternating", K, scheme="sieve", seed=5)
    resumed.load_state_dict(state)
    assert selected_heads(resumed, 30, K) == expected


def test_alternating_eann_never_emphasises_the_zeroed_half():
    K = 8
    s = create_strategy("alternating", K, scheme="const", eann=True)
    for _ in range(200):
        s.update(torch.rand(K))
        assert torch.equal(s.weights()[: K // 2], torch.zeros(K // 2))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rho": 0}, "rho=0"),
        ({"rho": -1.0}, "rho=-1.0"),
        ({"scheme": "sieves"}, "'sieves' is unknown"),
        ({"seed": -1}, "seed=-1"),
        ({"seed": 1.5}, "seed=1.5"),
    ],
)
def test_alternating_bad_hyperparameters(kwargs, fragment):
    with pytest.raises(ValueError, match=r"invalid|unknown") as info:
        create_strategy("alternating", 4, **kwargs)
    assert fragment in str(info.value)


def test_alternating_defaults_to_sieve_like_the_papers_aann():
    K = 8
    default, sieve = (
        create_strategy("alternating", K),
        create_strategy("alternating", K, scheme="sieve", seed=0),
    )
    assert torch.equal(default.weights(), sieve.weights())
    assert default.weights().tolist() == pytest.approx([r / 11 for r in [1, 2, 1, 3, 1, 2, 1, 11 + 11]])
    assert selected_heads(default, 40, K) == selected_heads(sieve, 40, K)


def test_alternating_takes_one_head_and_any_positive_rho():
    s = create_strategy("alternating", 1, scheme="const", rho=0.5)  # extra = sum(B) / rho = 2
    assert s.weights().tolist() == [3.0]
    s.update(torch.ones(1))
    assert s.weights().tolist() == [3.0]


def test_alternating_seed_is_any_unsigned_64_bit_integer():
    K = 4
    top = create_strategy("alternating", K, seed=2**64 - 1)
    assert selected_heads(top, 30, K) != selected_heads(create_strategy("alternating", K, seed=0), 30, K)
    with pytest.raises(ValueError) as info:
        create_strategy("alternating", K, seed=2**64)
    assert str(info.value) == f"seed={2**64} is invalid: must be an integer in [0, {2**64 - 1}]"


@pytest.mark.parametrize("selected", [0, 3])
def test_alternating_loads_any_head_as_the_selected_one(selected):
    s = create_strategy("alternating", 4, scheme="const", rho=4.0)  # extra = 1
    s.load_state_dict(reload({**s.state_dict(), "selected": selected}))
    assert s.weights().tolist() == [2.0 if k == selected else 1.0 for k in range(4)]


@pytest.mark.parametrize("selected", [-1, 4, 1.0, None])
def test_alternating_refuses_a_selected_head_out_of_range(selected):
    s = create_strategy("alternating", 4)
    with pytest.raises(ValueError) as info:
        s.load_state_dict({**s.state_dict(), "selected": selected})
    assert str(info.value) == f"state_dict['selected']={selected!r} is invalid: must be an integer in [0, 3]"


def test_alternating_refuses_a_state_dict_of_another_strategy():
    s = create_strategy("alternating", 4)
    with pytest.raises(ValueError, match="generator"):
        s.load_state_dict({"epoch": 0, "selected": 1})


# --- AdaLoss -----------------------------------------------------------------------------------------

LBAR = torch.tensor([2.0, 1.5, 1.2, 1.0])


def test_adaloss_worked_example():
    # The rule to the last bit, 1e-8 term included: u = (1/lbar + 1e-8) / (1/min(lbar) + 1e-8).
    u = [(1 / x + 1e-8) / (1 + 1e-8) for x in LBAR.double().tolist()]
    assert adaloss_weights(LBAR, gamma=0.07, final_extra=0.0).tolist() == pytest.approx(
        [0.93 * x + 0.07 for x in u], abs=1e-15
    )
    # METHOD.md §4's rounded decimals.
    assert adaloss_weights(LBAR, gamma=0.07, final_extra=0.0).tolist() == pytest.approx(
        [0.535, 0.690, 0.845, 1.0], abs=1e-7
    )
    assert adaloss_weights(LBAR, gamma=0.07, final_extra=1.0).tolist() == pytest.approx(
        [0.3025, 0.380, 0.4575, 1.0], abs=1e-7
    )


def test_adaloss_adds_the_final_extra_after_scaling_the_largest_weight_to_one():
    # lbar = [4, 2]: u = [1/4, 1/2] -> [1/2, 1] -> [1/2, 3/2] (e = 1/2) -> [1/3, 1], up to the 1e-8 terms
    w = adaloss_weights(torch.tensor([4.0, 2.0]), gamma=0.07, final_extra=0.5)
    assert w.tolist() == pytest.approx([0.93 / 3 + 0.07, 1.0], abs=1e-7)


@pytest.mark.parametrize(
    ("final_extra", "expected"), [(0.0, [0.535, 0.690, 0.845, 1.0]), (1.0, [0.3025, 0.380, 0.4575, 1.0])]
)
def test_adaloss_strategy_reaches_the_worked_example_from_its_first_loss(final_extra, expected):
    # lbar = l at step 1, so with U = 1 the first update sees lbar = LBAR exactly.
    s = create_strategy("adaloss", 4, update_period=1, final_extra=final_extra)
    assert torch.equal(s.weights(), torch.ones(4))
    s.update(LBAR)
    w = s.weights()
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx(expected, abs=1e-6)


def test_adaloss_defaults_are_the_papers_run():
    # U = 1 and e = 0.5: CONST for step 1 only, then u = [1/3, 4/9, 5/9, 1] and w = 0.93 u + 0.07.
    s = create_strategy("adaloss", 4)
    assert (s.gamma, s.momentum, s.update_period, s.final_extra) == (0.07, 0.9, 1, 0.5)
    assert torch.equal(s.weights(), torch.ones(4))
    s.update(LBAR)
    assert s.weights().tolist() == pytest.approx([0.38, 0.48333333, 0.58666667, 1.0], abs=1e-6)


def test_adaloss_ema_and_update_schedule():
    s = create_strategy("adaloss", 2, update_period=3, final_extra=0.0)
    stream = [[2.0, 1.0], [1.0, 1.0], [1.0, 1.0], [5.0, 1.0], [5.0, 1.0], [1.0, 1.0]]
    seen = []
    for losses in stream:
        seen.append(s.weights().tolist())
        s.update(torch.tensor(losses))
    # CONST for the first U steps; EMA after step 3: 2 -> 0.9*2+0.1*1 = 1.9 -> 1.81.
    assert seen[:3] == [[1.0, 1.0]] * 3
    assert seen[3] == pytest.approx([0.93 / 1.81 + 0.07, 1.0], abs=1e-6)
    assert seen[4] == seen[3] == seen[5]  # held between updates although the EMA moves
    # Step 6: EMA = 0.9*(0.9*(0.9*1.81+0.5)+0.5)+0.1 = 2.27449 for head 0 (head 1 stays 1).
    assert s.weights().tolist() == pytest.approx([0.93 / 2.27449 + 0.07, 1.0], abs=1e-6)


def test_adaloss_handles_a_zero_average_loss():
    s = create_strategy("adaloss", 3, final_extra=0.0)
    s.update(torch.tensor([0.5, 0.0, 0.0]))
    w = s.weights()
    assert torch.isfinite(w).all()
    assert w.tolist() == pytest.approx([0.07, 1.0, 1.0], abs=1e-6)


def test_adaloss_resumes_from_a_checkpoint():
    torch.manual_seed(0)
    stream = torch.rand(40, 5) + 0.1
    ref = create_strategy("adaloss", 5, update_period=7)
    for losses in stream[:20]:
        ref.update(losses)
    resumed = create_strategy("adaloss", 5, update_period=7)
    resumed.load_state_dict(reload(ref.state_dict()))
    for losses in stream[20:]:
        ref.update(losses)
        resumed.update(losses)
        assert torch.equal(ref.weights(), resumed.weights())
    assert not torch.equal(ref.weights(), torch.ones(5))


def test_adaloss_resumes_from_a_checkpoint_taken_before_its_first_step():
    ref, resumed = create_strategy("adaloss", 4), create_strategy("adaloss", 4)
    resumed.load_state_dict(reload(ref.state_dict()))
    assert resumed.steps == 0 and torch.equal(resumed.weights(), torch.ones(4))
    for s in (ref, resumed):
        s.update(LBAR)
    assert torch.equal(resumed.weights(), ref.weights())


@pytest.mark.parametrize("steps", [-1, 2.0, None])
def test_adaloss_refuses_a_step_count_that_is_not_a_count(steps):
    s = create_strategy("adaloss", 4)
    with pytest.raises(ValueError) as info:
        s.load_state_dict({**s.state_dict(), "steps": steps})
    assert str(info.value) == f"state_dict['steps']={steps!r} is invalid: must be an integer in [0, inf]"


def test_adaloss_keeps_its_average_in_float64_and_takes_a_list():
    # float32 losses of exact binary fractions; 0.9 * 0.5 + 0.1 * 0.25 = 0.475 is not a float32
    s = create_strategy("adaloss", 2, final_extra=0.0)
    s.update(torch.tensor([0.5, 0.25], dtype=torch.float32))
    s.update(torch.tensor([0.25, 0.5], dtype=torch.float32))
    assert s.loss_ema.tolist() == pytest.approx([0.475, 0.275], abs=1e-15)
    listed = create_strategy("adaloss", 2, final_extra=0.0)
    listed.update([0.5, 0.25])  # any sequence of floats, as torch.as_tensor takes it
    listed.update([0.25, 0.5])
    assert listed.loss_ema.tolist() == pytest.approx([0.475, 0.275], abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"gamma": 0.0}, "gamma=0.0"),
        ({"gamma": 1.5}, "gamma=1.5"),
        ({"momentum": 1.0}, "momentum=1.0"),
        ({"update_period": 0}, "update_period=0"),
        ({"final_extra": -0.5}, "final_extra=-0.5"),
        ({"rho": 2.0}, "allowed are ['gamma', 'momentum', 'update_period', 'final_extra']"),
    ],
)
def test_adaloss_bad_hyperparameters(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        create_strategy("adaloss", 4, **kwargs)
    assert fragment in str(info.value)


def test_adaloss_refuses_negative_or_wrong_size_losses():
    s = create_strategy("adaloss", 3)
    with pytest.raises(ValueError, match=">= 0"):
        s.update(torch.tensor([1.0, -0.1, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        s.update(torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"state_dict\['loss_ema'\]"):
        s.load_state_dict({"epoch": 0, "steps": 1, "loss_ema": torch.ones(4), "weights": torch.ones(3)})
