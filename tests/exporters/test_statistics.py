"""The bounds int8 verdicts rest on, checked against what can be derived without this module:
closed forms, binomial sums written out, and coverage simulated with a seeded generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exporters.verify.statistics import (
    AccuracyDrop,
    ConfidentAgreement,
    beta_quantile,
    clopper_pearson,
    drop_bounds,
    regularized_beta,
)


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("n", [1, 5, 40, 359, 5000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_no_success_and_all_successes_have_closed_forms(n: int, confidence: float) -> None:
    """x = 0: P(X <= 0 | p) = (1 - p)^n = alpha / 2, so upper = 1 - (alpha / 2)^(1/n); x = n mirrors it."""
    half = (1 - confidence) / 2
    assert clopper_pearson(0, n, confidence) == pytest.approx((0.0, 1 - half ** (1 / n)), rel=1e-9, abs=1e-12)
    assert clopper_pearson(n, n, confidence) == pytest.approx((half ** (1 / n), 1.0), rel=1e-9)
    # x = 1: P(X >= 1 | p) = 1 - (1 - p)^n = alpha / 2
    if n > 1:
        assert clopper_pearson(1, n, confidence)[0] == pytest.approx(1 - (1 - half) ** (1 / n), rel=1e-8)


@pytest.mark.parametrize(("x", "n"), [(1, 3), (2, 4), (7, 50), (13, 64), (30, 120)])
def test_the_bounds_solve_the_binomial_tails(x: int, n: int) -> None:
    """lower: P(X >= x | lower) = alpha / 2; upper: P(X <= x | upper) = alpha / 2 (sums written out)."""
    lower, upper = clopper_pearson(x, n)
    assert 1 - _binomial_cdf(x - 1, n, lower) == pytest.approx(0.025, rel=1e-7)
    assert _binomial_cdf(x, n, upper) == pytest.approx(0.025, rel=1e-7)


def test_the_incomplete_beta_matches_its_special_cases() -> None:
    for x in (0.01, 0.3, 0.5, 0.97):
        assert regularized_beta(x, 1, 1) == pytest.approx(x)  # the uniform distribution
        assert regularized_beta(x, 2, 1) == pytest.approx(x ** 2)
        assert regularized_beta(x, 1, 3) == pytest.approx(1 - (1 - x) ** 3)
        assert regularized_beta(x, 2.5, 4) == pytest.approx(1 - regularized_beta(1 - x, 4, 2.5))  # symmetry
    assert beta_quantile(0.5, 3, 3) == pytest.approx(0.5)


def test_the_bounds_are_monotone() -> None:
    for n in (10, 100):
        lowers, uppers = zip(*(clopper_pearson(x, n) for x in range(n + 1)), strict=True)
        assert all(a < b for a, b in zip(lowers[:-1], lowers[1:], strict=True))
        assert all(a < b for a, b in zip(uppers[:-1], uppers[1:], strict=True))
    narrow, wide = clopper_pearson(5, 50, 0.9), clopper_pearson(5, 50, 0.99)
    assert wide[0] < narrow[0] < 0.1 < narrow[1] < wide[1]
    widths = [np.diff(clopper_pearson(n // 10, n)) for n in (20, 200, 2000)]  # more images, tighter
    assert widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize(("n", "p"), [(20, 0.05), (64, 0.3), (359, 0.01), (500, 0.5)])
def test_clopper_pearson_covers_the_truth_at_least_as_often_as_promised(n: int, p: float) -> None:
    """Each side misses the true proportion at most (1 - confidence) / 2 of the time (exact, so
    conservative); 4,000 seeded draws leave a Monte Carlo error of about 0.25 points."""
    draws = np.random.default_rng(n).binomial(n, p, size=4000)
    bounds = {x: clopper_pearson(int(x), n) for x in np.unique(draws)}
    below = np.mean([bounds[x][1] < p for x in draws])  # the upper bound below the truth
    above = np.mean([bounds[x][0] > p for x in draws])
    assert below <= 0.025 + 0.008 and above <= 0.025 + 0.008


@pytest.mark.parametrize(("n", "worse", "better"), [
    (30, 0.05, 0.05), (64, 0.3, 0.01), (256, 0.05, 0.0), (359, 0.006, 0.006), (1000, 0.01, 0.0),
    (10_000, 0.01, 0.0), (500, 0.05, 0.04), (100, 0.0, 0.0)])
def test_the_paired_drop_bounds_hold_their_level(n: int, worse: float, better: float) -> None:
    """On images drawn as a multinomial (reference right and candidate wrong, the reverse, the
    same), each side of the drop's 95 % bounds misses the true drop ``worse - better`` at most
    about 2.5 % of the time: with the discordance two-sided, one-sided (where the bound
    conditional on the discordant count misses far more often at 10,000 images), or absent."""
    truth = worse - better
    counts = np.random.default_rng(7).multinomial(n, [worse, better, 1 - worse - better], size=3000)
    bounds = {(b, c): drop_bounds(b, c, n) for b, c in {(int(b), int(c)) for b, c, _ in counts}}
    low = np.mean([bounds[(b, c)][0] > truth + 1e-12 for b, c, _ in counts])
    high = np.mean([bounds[(b, c)][1] < truth - 1e-12 for b, c, _ in counts])
    assert low <= 0.025 + 0.009 and high <= 0.025 + 0.009, (low, high)


def test_the_drop_bounds_widen_with_fewer_images_and_nothing_changed_is_not_certainty() -> None:
    small, large = drop_bounds(0, 0, 10), drop_bounds(0, 0, 1000)
    assert small[0] < large[0] < 0 < large[1] < small[1]  # no image changed class: still uncertain
    assert large[1] < 0.01 < small[1]
    low, high = drop_bounds(30, 2, 256)
    assert low < 28 / 256 < high and low > 0


def test_a_verdict_needs_evidence_to_fail_and_says_how_many_images_would_decide() -> None:
    # a clear drop fails
    clear = AccuracyDrop.judge(worse=20, better=1, changed=22, images=256, tolerance=0.01)
    assert clear.outcome == "exceeds" and clear.lower > 0.01 and clear.images_needed is None
    # nothing changed on 100 images: no evidence of harm, but not shown within 1 point either
    few = AccuracyDrop.judge(worse=0, better=0, changed=0, images=100, tolerance=0.01)
    assert few.outcome == "undecided" and few.images_needed is not None
    assert few.upper > 0.01 >= drop_bounds(0, 0, few.images_needed)[1]
    assert drop_bounds(0, 0, few.images_needed - 1)[1] > 0.01  # the smallest such set
    assert f"about {few.images_needed:,} would" in few.describe()
    assert AccuracyDrop.judge(0, 0, 0, few.images_needed, 0.01).outcome == "within"
    # the same rates on more images
    balanced = AccuracyDrop.judge(worse=3, better=3, changed=8, images=300, tolerance=0.01)
    assert balanced.outcome == "undecided" and balanced.images_needed is not None
    n = balanced.images_needed
    assert drop_bounds(3 / 300 * n, 3 / 300 * n, n)[1] <= 0.01 < drop_bounds(3 / 300 * (n - 1), 3 / 300 * (n - 1),
                                                                             n - 1)[1]
    # agreement: 0 of k confident images changed class shows >= 99 % once (alpha/2)^(1/k) >= 0.99
    k = math.ceil(math.log(0.025) / math.log(0.99))
    assert ConfidentAgreement.judge(k, k, 0, 0.5, 0.99, sampled=True).outcome == "within"
    short = ConfidentAgreement.judge(2 * (k - 1), k - 1, 0, 0.5, 0.99, sampled=True)
    assert short.outcome == "undecided" and short.images_needed == 2 * k  # half the images were confident
    broken = ConfidentAgreement.judge(64, 40, 8, 0.5, 0.99, sampled=True)
    assert broken.outcome == "exceeds" and broken.upper < 0.99
    assert "below 99.0% (even its upper bound is)" in broken.describe()
