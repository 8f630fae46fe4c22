"""Static weight schemes B (spec §2) and the strategy that always returns them.

Weights are computed in exact rational arithmetic and rounded to float once at the end, so e.g. SIEVE's
normalised K = 8 vector is exactly ``[r / 11 for r in raw]`` and tests can compare with ``==``.
Heads are 0-based here: the spec's head ``i`` is index ``i - 1``, and ``K - 1`` is the final head.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch
from torch import Tensor

from anytime.weighting.base import WeightingStrategy, check_int, register_strategy

NORMALISATIONS = ("last", "sum", "none")


def _opt(K: int, j: int) -> list[Fraction]:
    return [Fraction(int(k == j)) for k in range(K)]


def _const(K: int) -> list[Fraction]:
    return [Fraction(1)] * K


def _linear(K: int) -> list[Fraction]:
    return [Fraction(1, 4) + Fraction(3, 4) * Fraction(k, K - 1) for k in range(K)]


def _half_end(K: int) -> list[Fraction]:
    return [Fraction(1, K - 1)] * (K - 1) + [Fraction(1)]


def _with_final_as_sum(others: list[int]) -> list[Fraction]:
    """Final weight = sum of the others, i.e. half of the total (SIEVE, EXP-LIN)."""
    return [Fraction(r) for r in [*others, sum(others)]]


def _sieve(K: int) -> list[Fraction]:
    """r_i = #{k >= 0 : 2^k < K and 2^k divides K - i}: anchored at the final head (reference default)."""
    powers = [2**k for k in range(K.bit_length()) if 2**k < K]
    return _with_final_as_sum([sum((K - 1 - k) % p == 0 for p in powers) for k in range(K - 1)])


def _exp_lin(K: int) -> list[Fraction]:
    """The project's reconstruction (spec §2): head at distance 2^k from the end gets k + 1, others 1."""
    raw = [1] * (K - 1)
    k = 0
    while 2**k < K:
        raw[K - 1 - 2**k] = k + 1
        k += 1
    return _with_final_as_sum(raw)


# Schemes defined relative to the other heads need K >= 2; OPT takes the head index j.
_SCHEMES: dict[str, tuple[Callable[..., list[Fraction]], int]] = {
    "opt": (_opt, 1),
    "const": (_const, 1),
    "linear": (_linear, 2),
    "half_end": (_half_end, 2),
    "sieve": (_sieve, 2),
    "exp_lin": (_exp_lin, 2),
}
SCHEMES = tuple(_SCHEMES)


def eann_zeroed_heads(K: int) -> int:
    """How many leading heads of a K-head EANN member get weight 0 (no loss: they stay untrained)."""
    return K // 2


def static_weights(
    scheme: str, K: int, normalisation: str = "last", eann: bool = False, *, j: int | None = None
) -> list[float]:
    """The static weight vector B of ``scheme`` for K heads (spec §2).

    ``normalisation``: ``"last"`` (default: final weight 1, so the final head trains as a plain network of
    its depth would), ``"sum"`` (weights sum to 1) or ``"none"`` (raw). ``eann=True`` zeroes the first
    floor(K/2) weights first (EANN members only need their second half to be good). OPT(j) is a one-hot
    at head ``j`` (0-based) and is already normalised under every option, even when j < K - 1.
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"weight scheme {scheme!r} is unknown: choose one of {list(SCHEMES)}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation={normalisation!r} is invalid: choose one of {list(NORMALISATIONS)}")
    if not isinstance(eann, bool):
        raise ValueError(f"eann={eann!r} is invalid: must be true or false")
    build, min_heads = _SCHEMES[scheme]
    check_int(f"K (number of heads) for scheme {scheme!r}", K, low=min_heads)
    if scheme == "opt":
        if j is None:
            raise ValueError(f"scheme 'opt' needs the head index j, an integer in [0, {K - 1}]")
        raw = build(K, check_int("j", j, low=0, high=K - 1))
    elif j is not None:
        raise ValueError(f"j={j!r} is invalid for scheme {scheme!r}: only 'opt' takes a head index")
    else:
        raw = build(K)
    if eann:
        zeroed = eann_zeroed_heads(K)
        raw = [Fraction(0)] * zeroed + raw[zeroed:]
        if not any(raw):
            raise ValueError(f"j={j!r} is invalid with eann=True: heads 0..{zeroed - 1} are zeroed for K={K}")
    if scheme != "opt" and normalisation != "none":
        scale = raw[-1] if normalisation == "last" else sum(raw)
        raw = [w / scale for w in raw]
    return [float(w) for w in raw]


class StaticStrategy(WeightingStrategy):
    """The same weights B at every step; nothing is learned, so the state is only the epoch."""

    def __init__(
        self,
        num_heads: int,
        *,
        scheme: str,
        normalisation: str = "last",
        eann: bool = False,
        j: int | None = None,
    ) -> None:
        super().__init__(num_heads)
        self.scheme = scheme
        self._weights = torch.tensor(
            static_weights(scheme, num_heads, normalisation, eann, j=j), dtype=torch.float32
        )

    def weights(self) -> Tensor:
        return self._weights.clone()


def _register_static(scheme: str) -> None:
    """One registry entry per scheme; only 'opt' accepts (and requires) j."""
    if scheme == "opt":

        def make(
            num_heads: int, *, j: int, normalisation: str = "last", eann: bool = False
        ) -> StaticStrategy:
            return StaticStrategy(num_heads, scheme="opt", normalisation=normalisation, eann=eann, j=j)

    else:

        def make(num_heads: int, *, normalisation: str = "last", eann: bool = False) -> StaticStrategy:
            return StaticStrategy(num_heads, scheme=scheme, normalisation=normalisation, eann=eann)

    make.__doc__ = f"Static weighting with scheme {scheme!r} (spec §2)."
    register_strategy(scheme)(make)


for _scheme in SCHEMES:
    _register_static(_scheme)
