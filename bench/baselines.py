"""The plain-PyTorch baseline every benchmark divides by: the same backbone with only its final head."""

from __future__ import annotations

from anytime.models import AnytimeNet, create_model


def plain_counterpart(model: AnytimeNet) -> AnytimeNet:
    """The same architecture with a single head after the last unit (a plain ResNet of that depth).

    With N units, a prediction period of N puts the only head after unit N-1 (spec §1), so the library builds
    the baseline itself and the comparison isolates exactly the cost of the extra heads.
    """
    num_units = model.head_units[-1] + 1
    plain = create_model(**{**model.config, "period": num_units})
    if plain.num_heads != 1:
        raise RuntimeError(f"expected one head with period={num_units}, got {plain.num_heads}")
    return plain
