"""chi-squared survival function vs table values and closed forms."""

from __future__ import annotations

import math

import pytest

from traffic.stats import chi2_sf, chi_square, gamma_p, gamma_q

# (x, dof, upper-tail probability): critical values from standard chi-squared tables
TABLE = [
    (3.841458820694124, 1, 0.05),
    (6.634896601021214, 1, 0.01),
    (5.991464547107979, 2, 0.05),
    (7.814727903251178, 3, 0.05),
    (11.070497693516351, 5, 0.05),
    (18.307038053275146, 10, 0.05),
    (23.209251158954356, 10, 0.01),
    (124.3421134287, 100, 0.05),
    (0.0039321400000195, 1, 0.95),
]


@pytest.mark.parametrize("x,dof,p", TABLE)
def test_table_values(x: float, dof: int, p: float) -> None:
    assert chi2_sf(x, dof) == pytest.approx(p, rel=1e-8)


@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 2.7, 9.0, 30.0, 80.0])
def test_closed_forms(x: float) -> None:
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-12)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
    three = math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    assert chi2_sf(x, 3) == pytest.approx(three, rel=1e-12)
    assert chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-12)
    six = math.exp(-x / 2) * (1 + x / 2 + (x / 2) ** 2 / 2)
    assert chi2_sf(x, 6) == pytest.approx(six, rel=1e-12)


def test_p_plus_q_is_one_on_both_branches() -> None:
    for a, x in [(0.5, 0.1), (3.0, 2.0), (3.0, 10.0), (50.0, 40.0), (50.0, 70.0)]:
        assert gamma_p(a, x) + gamma_q(a, x) == pytest.approx(1.0, abs=1e-14)


def test_edges() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(-1.0, 3) == 1.0
    assert chi2_sf(math.inf, 3) == 0.0
    assert chi2_sf(1000.0, 2) == pytest.approx(math.exp(-500), rel=1e-9)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError):
        gamma_q(-1.0, 1.0)


def test_chi_square() -> None:
    # (50-40)^2/40 + (30-40)^2/40 + 0 = 5.0 with 2 dof: p = exp(-2.5)
    stat, dof, p = chi_square([50, 30, 20], [40, 40, 20])
    assert (stat, dof) == (5.0, 2)
    assert p == pytest.approx(math.exp(-2.5), rel=1e-12)
    assert chi_square([1, 5], [0, 6])[0] == math.inf
    assert chi_square([0, 6], [0, 6]) == (0.0, 1, 1.0)
    with pytest.raises(ValueError):
        chi_square([1], [1])
