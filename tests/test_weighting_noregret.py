"""No-regret layer selection (METHOD.md §5): rewards, one step by hand, invariants, learning, resumption."""

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anytime.weighting import create_strategy, relative_rewards

LEARNERS = ["rwm", "exp3", "avgl"]


def reload(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_relative_rewards_by_hand():
    r = relative_rewards(torch.tensor([4.0, 2.0, 1.5, 1.5]), rho_last=0.85)
    assert r.tolist() == pytest.approx([0.5, 0.25, 0.0, 0.85 * 0.5])
    # The final reward is never negative, and 0/0 counts as "no reduction".
    r = relative_rewards(torch.tensor([1.0, 2.0, 0.0, 0.0]), 0.85)
    assert r.tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.85], abs=1e-11)
    # computed in float64 whatever the losses' dtype: 1 - 1/3 is not rounded to float32
    r = relative_rewards(torch.tensor([3.0, 1.0], dtype=torch.float32), 1.0)
    assert r.dtype == torch.float64 and r.tolist() == pytest.approx([2 / 3, 2 / 3], abs=1e-15)


def test_rwm_one_step_by_hand():
    s = create_strategy("rwm", 2)
    s.start_epoch(1)
    s.update(torch.tensor([2.0, 1.0]))  # r = [0.5, 0.85 * 0.5]
    w = [math.exp(0.15 * 0.5), math.exp(0.15 * 0.425)]
    expected = [0.7 * x / sum(w) + 0.15 for x in w]
    assert s.probabilities().tolist() == pytest.approx(expected, abs=1e-12)


def test_exp3_one_step_by_hand_updates_only_the_emphasised_head():
    s = create_strategy("exp3", 2)
    s.start_epoch(1)
    assert s.selected == 1  # step 1 emphasises the final head, drawn with p = 1/K
    s.update(torch.tensor([2.0, 1.0]))  # r_1 = 0.425, importance weight 1 / (p_1 K) = 1
    w = [1.0, math.exp(0.3 * 0.425)]
    w = [(1 - 0.0003) * x / sum(w) + 0.0003 / 2 for x in w]
    assert s.probabilities().tolist() == pytest.approx([0.7 * x + 0.15 for x in w], abs=1e-12)


def test_exp3_two_steps_by_hand_weight_the_reward_by_its_inverse_probability():
    s = create_strategy("exp3", 2)
    s.start_epoch(1)
    s.update(torch.tensor([2.0, 1.0]))  # step 1 as above: head 1 gains 0.3 * 0.425
    w = [1.0, math.exp(0.3 * 0.425)]
    q = [(1 - 0.0003) * x / sum(w) + 0.0003 / 2 for x in w]
    chosen = s.selected  # drawn from p = 0.7 q + 0.15 by the seeded generator
    p_s = 0.7 * q[chosen] + 0.15
    s.update(torch.tensor([2.0, 1.0]))  # r = [0.5, 0.425] again, now with p_s * K != 1
    gain = [0.0, 0.0]
    gain[chosen] = 0.3 * [0.5, 0.425][chosen] / (p_s * 2)
    w = [x * math.exp(g) for x, g in zip(q, gain, strict=True)]
    q = [(1 - 0.0003) * x / sum(w) + 0.0003 / 2 for x in w]
    assert s.probabilities().tolist() == pytest.approx([0.7 * x + 0.15 for x in q], abs=1e-12)


def test_avgl_is_proportional_to_clipped_average_reward():
    s = create_strategy("avgl", 4)
    s.start_epoch(1)
    for _ in range(5):
        s.update(torch.tensor([4.0, 2.0, 3.0, 3.0]))  # r = [0.5, -0.5, 0, 0.425], a constant stream
    clipped = [0.5, 0.0, 0.0, 0.425]
    expected = [0.7 * r / sum(clipped) + 0.3 / 4 for r in clipped]
    assert s.probabilities().tolist() == pytest.approx(expected, abs=1e-12)


def test_avgl_is_uniform_while_no_head_has_reduced_the_loss():
    s = create_strategy("avgl", 3)
    s.start_epoch(1)
    s.update(torch.tensor([1.0, 2.0, 4.0]))  # r = [-1, -1, 0]: every clipped average is 0
    assert s.probabilities().tolist() == pytest.approx([1 / 3] * 3, abs=1e-15)


@pytest.mark.parametrize("name", LEARNERS)
def test_a_fresh_learner_is_uniform_in_float64_and_learns_only_once_told_the_epoch(name):
    s = create_strategy(name, 3)
    p = s.probabilities()
    assert p.dtype == torch.float64 and p.tolist() == pytest.approx([1 / 3] * 3, abs=1e-15)
    s.update(torch.tensor([4.0, 1.0, 1.0]))  # no start_epoch yet: still epoch 0
    assert s.probabilities().tolist() == pytest.approx([1 / 3] * 3, abs=1e-15)


@pytest.mark.parametrize("name", LEARNERS)
def test_learner_defaults_emphasise_by_half_the_const_total_and_draw_from_seed_zero(name):
    K = 4
    s, seeded = create_strategy(name, K), create_strategy(name, K, seed=0)
    assert s.weights().tolist() == [1.0, 1.0, 1.0, 3.0]  # CONST base, extra = K / rho = 2 on the final head
    heads = []
    for learner in (s, seeded):
        heads.append([])
        for _ in range(30):
            learner.update(torch.tensor([4.0, 2.0, 1.0, 1.0]))
            heads[-1].append(learner.selected)
    assert heads[0] == heads[1]


@pytest.mark.parametrize("name", LEARNERS)
def test_nothing_is_learned_during_the_first_epoch(name):
    K = 4
    s = create_strategy(name, K)
    s.start_epoch(0)
    for _ in range(50):
        s.update(torch.tensor([4.0, 1.0, 1.0, 1.0]))
    assert s.probabilities().tolist() == pytest.approx([0.25] * K, abs=1e-12)
    s.start_epoch(1)
    s.update(torch.tensor([4.0, 1.0, 1.0, 1.0]))
    assert s.probabilities().tolist() != pytest.approx([0.25] * K, abs=1e-3)


@pytest.mark.parametrize("name", ["rwm", "exp3"])
def test_learner_concentrates_on_the_head_with_the_highest_reward(name):
    # Head 0 halves the loss of its successor; every other reward is clearly smaller (final: 0.85 * 0.5).
    K = 5
    base = torch.tensor([2.0, 1.0, 0.9, 0.85, 0.8])
    noise = torch.Generator().manual_seed(0)
    s = create_strategy(name, K, seed=1)
    for epoch in range(3):
        s.start_epoch(epoch)
        for _ in range(1000):
            s.update(base * (1 + 0.02 * torch.randn(K, generator=noise)))
    p = s.probabilities()
    assert int(p.argmax()) == 0
    assert float(p[0]) > 0.6  # at most 1 - gamma + gamma / K = 0.76


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(LEARNERS),
    gamma=st.floats(min_value=1e-3, max_value=1.0),
    data=st.data(),
)
def test_p_is_a_probability_vector_with_exploration_floor(name, gamma, data):
    K = data.draw(st.integers(min_value=2, max_value=10), label="K")
    loss = st.one_of(st.just(0.0), st.floats(min_value=1e-30, max_value=1e6))
    stream = data.draw(
        st.lists(st.lists(loss, min_size=K, max_size=K), min_size=1, max_size=25), label="losses"
    )
    s = create_strategy(name, K, gamma=gamma, seed=data.draw(st.integers(0, 2**32), label="seed"))
    for step, losses in enumerate(stream):
        s.start_epoch(step // 5)
        s.update(torch.tensor(losses, dtype=torch.float64))
        p = s.probabilities()
        assert bool(torch.isfinite(p).all())
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)
        assert bool((p >= gamma / K).all())
        w = s.weights()
        assert bool(torch.isfinite(w).all()) and 0 <= s.selected < K


@pytest.mark.parametrize("name", LEARNERS)
def test_same_seed_same_heads_and_checkpoint_resume(name):
    K = 6
    torch.manual_seed(0)
    stream = torch.rand(60, K) + 0.05
    ranks = [create_strategy(name, K, seed=7, scheme="sieve") for _ in range(2)]
    resumed = None
    for step, losses in enumerate(stream):
        if step == 30:
            resumed = create_strategy(name, K, seed=7, scheme="sieve")
            resumed.load_state_dict(reload(ranks[0].state_dict()))
        everyone = ranks + ([resumed] if resumed else [])
        for s in everyone:
            s.start_epoch(step // 20)
        weights = [s.weights() for s in everyone]
        assert all(torch.equal(weights[0], w) for w in weights)
        for s in everyone:
            s.update(losses)
    assert torch.equal(ranks[0].probabilities(), resumed.probabilities())


def test_weights_put_the_alternating_extra_on_the_sampled_head():
    s = create_strategy("exp3", 8, scheme="sieve", rho=4.0)
    for _ in range(10):
        s.update(torch.rand(8) + 0.1)
        w = s.weights().double()
        base = torch.tensor([1, 2, 1, 3, 1, 2, 1, 11], dtype=torch.float64) / 11
        extra = torch.zeros(8, dtype=torch.float64)
        extra[s.selected] = 2.0 / 4.0  # sum(B) / rho
        assert torch.allclose(w, base + extra, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("rwm", {"gamma": 0.0}, "gamma=0.0"),
        ("exp3", {"gamma": 1.01}, "gamma=1.01"),
        ("avgl", {"gamma": float("nan")}, "gamma=nan"),
        ("rwm", {"rho_last": -0.1}, "rho_last=-0.1"),
        ("exp3", {"rho": 0.0}, "rho=0.0"),
        ("avgl", {"momentum": 1.0}, "momentum=1.0"),
        ("rwm", {"momentum": 0.9}, "allowed are"),
        ("exp3", {"scheme": "fancy"}, "'fancy' is unknown"),
    ],
)
def test_bad_hyperparameters(name, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        create_strategy(name, 4, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", LEARNERS)
def test_needs_two_heads_and_one_loss_per_head(name):
    with pytest.raises(ValueError, match="num_heads=1"):
        create_strategy(name, 1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        create_strategy(name, 3).update(torch.ones(2))


@pytest.mark.parametrize("momentum", [None, 0.9, 0.6])
def test_avgl_moving_average_weights_the_past_by_momentum(momentum):
    """Two different rewards in a row: the EMA is momentum * old + (1 - momentum) * new, worked by hand."""
    s = create_strategy("avgl", 2, **({} if momentum is None else {"momentum": momentum}))
    momentum = 0.9 if momentum is None else momentum  # the default
    s.start_epoch(1)
    s.update(torch.tensor([2.0, 1.0]))  # r = [0.5, 0.85 * 0.5]: the EMA starts here
    s.update(torch.tensor([1.0, 2.0]))  # r = [-1, 0.85 * max(0, -1) = 0]
    ema = [momentum * 0.5 + (1 - momentum) * -1.0, momentum * 0.425]
    assert s.reward_ema.tolist() == pytest.approx(ema, abs=1e-12)
    assert s.reward_steps == 2
    clipped = [max(0.0, r) for r in ema]
    expected = [0.7 * r / sum(clipped) + 0.15 for r in clipped]
    assert s.probabilities().tolist() == pytest.approx(expected, abs=1e-12)


def test_avgl_resumes_from_a_checkpoint_taken_before_its_first_reward():
    ref, resumed = create_strategy("avgl", 2), create_strategy("avgl", 2)
    resumed.load_state_dict(reload(ref.state_dict()))
    for s in (ref, resumed):
        s.start_epoch(1)
        s.update(torch.tensor([2.0, 1.0]))
    assert resumed.reward_steps == 1 and torch.equal(resumed.probabilities(), ref.probabilities())


@pytest.mark.parametrize("steps", [-1, 1.0])
def test_avgl_refuses_a_reward_count_that_is_not_a_count(steps):
    s = create_strategy("avgl", 2)
    with pytest.raises(ValueError) as info:
        s.load_state_dict({**s.state_dict(), "reward_steps": steps})
    assert (
        str(info.value) == f"state_dict['reward_steps']={steps!r} is invalid: must be an integer in [0, inf]"
    )
