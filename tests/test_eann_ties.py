"""Validation ties in EANN selection go to the deeper output, in the traced curve and the real predictor."""

import torch

from anytime.eann import AnytimePredictor, MemberCurve, eann_curve
from anytime.models import create_model


def test_curve_breaks_a_validation_tie_towards_the_head_with_more_flops():
    shallow = MemberCurve("a", [1, 2], [0.5, 0.4], [0.5, 0.45])
    deep = MemberCurve("b", [3, 6], [0.4, 0.1], [0.35, 0.1])
    curve = eann_curve([shallow, deep], sequential=True)
    # t = 5: a's final head (2 FLOPs, val 0.4) and b's first head (3 FLOPs, val 0.4) tie on validation
    assert curve.budget == [1, 2, 5, 8]
    assert (curve.member[2], curve.head[2], curve.test_error[2]) == (1, 0, 0.35)


def test_curve_breaks_an_equal_cost_tie_towards_the_later_member():
    first = MemberCurve("a", [1, 2], [0.5, 0.4], [0.5, 0.45])
    second = MemberCurve("b", [2, 4], [0.4, 0.1], [0.35, 0.1])
    curve = eann_curve([first, second], workers=1)
    # t = 4: a's final head and b's first head both cost 2 FLOPs and tie on validation
    assert curve.budget == [1, 2, 4, 6]
    assert (curve.member[2], curve.head[2], curve.test_error[2]) == (1, 0, 0.35)


def test_predictor_breaks_a_validation_tie_towards_the_deeper_output():
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(create_model("resann", num_classes=10, in_channels=1, n=1, c=4, period=1).eval())
    # member 1's first head ties member 0's final head on validation (0.3)
    predictor = AnytimePredictor(members, (1, 8, 8), val_errors=[[0.5, 0.4, 0.3], [0.3, 0.2, 0.1]])
    x = torch.randn(3, 1, 8, 8)
    result = predictor.predict(x, flops_budget=predictor.spent[1][0])
    assert (result.member, result.head) == (1, 0)
    torch.testing.assert_close(result.logits, members[1](x, until=0)[0])
