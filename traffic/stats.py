"""The chi-squared test without scipy: regularized incomplete gamma functions (pure).

P(a, x) by its power series for x < a + 1, Q(a, x) by its continued fraction
(modified Lentz) otherwise -- the classic split, each converging fast on its
side -- and chi2_sf(x, k) = Q(k/2, x/2).

Public API:
    gamma_p(a: float, x: float) -> float      regularized lower incomplete gamma P(a, x)
    gamma_q(a: float, x: float) -> float      regularized upper incomplete gamma Q(a, x) = 1 - P
    chi2_sf(x: float, dof: int) -> float      P(X >= x) for X ~ chi-squared(dof)
    chi_square(observed, expected) -> tuple[float, int, float]   (statistic, dof, p-value)
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

_EPS = 1e-16
_TINY = 1e-300
_MAX_ITER = 10_000


def _series_p(a: float, x: float) -> float:
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _continued_fraction_q(a: float, x: float) -> float:
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def _check(a: float, x: float) -> None:
    if a <= 0 or x < 0 or math.isnan(x):
        raise ValueError(f"incomplete gamma needs a > 0 and x >= 0 (got a={a}, x={x})")


def gamma_p(a: float, x: float) -> float:
    _check(a, x)
    if x == 0:
        return 0.0
    if math.isinf(x):
        return 1.0
    if x < a + 1.0:
        return _series_p(a, x)
    return 1.0 - _continued_fraction_q(a, x)


def gamma_q(a: float, x: float) -> float:
    _check(a, x)
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return 1.0 - _series_p(a, x)
    return _continued_fraction_q(a, x)


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-squared distribution with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"chi-squared needs dof >= 1 (got {dof})")
    if x <= 0:
        return 1.0
    return gamma_q(dof / 2.0, x / 2.0)


def chi_square(observed: Sequence[float], expected: Sequence[float]) -> Tuple[float, int, float]:
    """Pearson's goodness-of-fit test: (statistic, dof = k - 1, p-value).

    A category expected 0 but observed > 0 makes the statistic infinite (p = 0).
    """
    if len(observed) != len(expected) or len(observed) < 2:
        raise ValueError("chi_square needs two equally long sequences of >= 2 categories")
    stat = 0.0
    for o, e in zip(observed, expected):
        if e == 0:
            if o:
                return math.inf, len(observed) - 1, 0.0
            continue
        stat += (o - e) ** 2 / e
    dof = len(observed) - 1
    return stat, dof, chi2_sf(stat, dof)
