"""Bounds for the verdicts judged on held-out images: the accuracy drop and the agreement.

A held-out set is a sample of the task's images, so what it shows is uncertain, and more so the
fewer images it has. A fixed threshold on the observed figure ("99 % top-1 agreement") passes or
fails correct quantizations by chance near the line. So each figure comes with a two-sided bound
at ``confidence`` (default 95 %), and the verdict follows the bounds:

* ``exceeds`` (the check fails) only when the data *show* the tolerance is broken: the bound on
  the good side is already past it. That is a one-sided test at (1 - confidence) / 2, so a
  correct artifact fails by chance at most about 2.5 % of the time, whatever the set's size;
* ``within`` when the bound on the bad side is inside the tolerance;
* ``undecided`` in between: the check passes (no evidence of harm), and the report says the set
  is too small to show the figure is within the tolerance, and about how many images would.

**Agreement** (with or without labels): among the images on which the reference is confident (see
:mod:`exporters.verify.compare`), the fraction whose top-1 class the candidate changed, with its
exact Clopper-Pearson interval, computed here from the regularized incomplete beta function
(continued fraction, :func:`math.lgamma`) and bisection, without scipy.

**Accuracy drop** (labelled images, the candidate against the reference on the same images):
``b`` images the reference classifies right and the candidate wrong, ``c`` the other way round, of
``n``. The drop is ``(b - c) / n``; its bounds are Tango's score interval for a difference of
paired proportions (Statistics in Medicine 17, 1998), with a continuity correction of 1/2: the
drops ``D`` not rejected by the score test of ``(b - c - n D) / sqrt(n (2 q + D (1 - D)))``, where
``q`` is the maximum-likelihood rate of ``c`` given the drop ``D``. Two simpler bounds were tried
and rejected:

* the exact conditional (McNemar) bound -- Clopper-Pearson on ``b`` of the ``d = b + c`` discordant
  images, scaled by the observed ``d / n`` -- takes the number of images that changed class as
  known. With no discordant image it gives bounds of exactly 0 from ten images, and when every
  discordant image went the bad way it has no allowance for there being more of them: its lower
  bound then fails a model whose true drop equals the tolerance a fifth of the time on 10,000
  images (simulated: 21.6 %), where it should at most 2.5 %;
* exact intervals on ``d / n`` and ``b / d`` combined (Bonferroni) are valid but too wide to fail
  12 of 256 images turned wrong and none right (a 4.7-point drop) at a 1-point tolerance.

The score interval holds its level on both: simulated (``tests/exporters/test_statistics.py``), each
side misses the true drop at most about 2.5 % of the time, from 30 to 10,000 images, with the
discordance two-sided, one-sided, or absent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Literal

#: within: the bound shows the figure inside the tolerance; exceeds: the bound shows it outside (fail);
#: undecided: the set cannot tell either way (pass, with how many images would tell)
Outcome = Literal["within", "exceeds", "undecided"]

#: the largest set the "how many images would" search considers
MAX_IMAGES_NEEDED = 100_000_000


# -- the exact interval -----------------------------------------------------------------------------


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF of the Beta(a, b) distribution at ``x`` (a, b > 0)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b), by bisection on :func:`regularized_beta` (monotone in x)."""
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if regularized_beta(middle, a, b) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def clopper_pearson(successes: float, trials: float, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided interval of a binomial proportion: each side holds at ``(1 - confidence) / 2``.

    ``lower`` solves P(X >= successes | p) = alpha / 2 and ``upper`` P(X <= successes | p) = alpha / 2
    (the Beta quantiles below); 0 trials give (0, 1). Counts may be fractional: the search for
    "how many images would" scales observed counts by a real factor."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not between 0 and 1")
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes of {trials} trials")
    if trials == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lower = 0.0 if successes == 0 else beta_quantile(alpha / 2, successes, trials - successes + 1)
    upper = 1.0 if successes == trials else beta_quantile(1 - alpha / 2, successes + 1, trials - successes)
    return lower, upper


def _drop_score(worse: float, better: float, images: float, drop: float) -> float:
    """Tango's continuity-corrected score statistic for "the paired drop is ``drop``"."""
    n = images
    a, b = 2 * n, -(worse + better) + drop * (2 * n - worse + better)
    c = -better * drop * (1 - drop)
    rate = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)  # the MLE of P(better) given ``drop``
    variance = n * (2 * rate + drop * (1 - drop))
    excess = worse - better - n * drop
    excess = math.copysign(max(abs(excess) - 0.5, 0.0), excess)
    if variance <= 0:
        return 0.0 if excess == 0 else math.copysign(math.inf, excess)
    return excess / math.sqrt(variance)


def drop_bounds(worse: float, better: float, images: float, confidence: float = 0.95) -> tuple[float, float]:
    """Bounds of the paired accuracy drop ``(worse - better) / images`` (see the module docstring).

    The score falls as the drop tested rises, so each bound is found by bisection between the
    observed drop and -1 or 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not between 0 and 1")
    if images <= 0:
        return -1.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    observed = (worse - better) / images
    low, high = -1.0, observed
    for _ in range(80):
        middle = (low + high) / 2
        if _drop_score(worse, better, images, middle) > z:
            low = middle
        else:
            high = middle
    lower = high
    low, high = observed, 1.0
    for _ in range(80):
        middle = (low + high) / 2
        if _drop_score(worse, better, images, middle) < -z:
            high = middle
        else:
            low = middle
    return lower, low


def _outcome(good_side: float, bad_side: float, limit: float) -> Outcome:
    """exceeds when even the good-side bound is past ``limit``; within when the bad-side bound is not."""
    if good_side > limit:
        return "exceeds"
    return "within" if bad_side <= limit else "undecided"


def _smallest(size: int, fits: Callable[[int], bool]) -> int | None:
    """The smallest n >= size for which ``fits(n)`` (assumed monotone in n), or None up to the cap."""
    high = max(size, 1)
    while not fits(high):
        if high >= MAX_IMAGES_NEEDED:
            return None
        high = min(high * 2, MAX_IMAGES_NEEDED)
    low = high // 2  # fits(low) is false, or low < size
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return max(high, size)


# -- the two figures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyDrop:
    """The candidate's accuracy drop against the reference on the same labelled images, and its verdict.

    Fractions throughout (0.01 = 1 point); reports print points."""

    images: int  # n: held-out images
    worse: int  # b: the reference right, the candidate wrong
    better: int  # c: the reference wrong, the candidate right
    changed: int  # images whose top-1 class the candidate changed (including wrong -> another wrong)
    confidence: float  # of the two-sided bounds
    drop: float  # (b - c) / n
    lower: float
    upper: float
    tolerance: float  # max_accuracy_drop
    outcome: Outcome
    images_needed: int | None  # undecided: images at which, at these rates, the drop is shown within

    @classmethod
    def judge(cls, worse: int, better: int, changed: int, images: int, tolerance: float,
              confidence: float = 0.95) -> AccuracyDrop:
        lower, upper = drop_bounds(worse, better, images, confidence)
        outcome = _outcome(lower, upper, tolerance)
        needed = None
        if outcome == "undecided" and (worse - better) / images < tolerance:
            rates = (worse / images, better / images)
            needed = _smallest(images, lambda n: drop_bounds(rates[0] * n, rates[1] * n, n, confidence)[1]
                               <= tolerance)
        return cls(images, worse, better, changed, confidence, (worse - better) / images, lower, upper, tolerance,
                   outcome, needed)

    def describe(self) -> str:
        """``accuracy drop 0.3 points (95 % bounds -0.9..2.9) on 359 images, 5 changed class: within 1 point``."""
        text = (f"accuracy drop {_points(self.drop)} points ({_percent(self.confidence)} bounds "
                f"{_points(self.lower)}..{_points(self.upper)}) on {self.images:,} images, "
                f"{self.changed:,} changed class ({self.worse:,} to wrong, {self.better:,} to right): ")
        limit = f"{_points(self.tolerance, exact=True)} point{'' if self.tolerance == 0.01 else 's'}"
        if self.outcome == "within":
            return text + f"within {limit}"
        if self.outcome == "exceeds":
            return text + f"exceeds {limit} (even its lower bound does)"
        return text + _too_few(f"a drop within {limit}", self.images_needed, "held-out")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ConfidentAgreement:
    """Top-1 agreement on the samples where the reference is confident, and its verdict.

    On held-out images (``sampled``) the agreement carries exact bounds; on seeded inputs, which
    are the test itself rather than a sample of anything, the bounds are the observation."""

    samples: int  # every sample compared
    confident: int  # samples on which the reference is confident (its margin >= ``margin``)
    changed: int  # confident samples whose top-1 class the candidate changed
    margin: float  # the confidence rule: top-1 lead over the runner-up, as a fraction of the sample's scale
    confidence: float
    sampled: bool
    agreement: float  # (confident - changed) / confident; 1 when nothing is confident
    lower: float
    upper: float
    minimum: float  # min_top1
    outcome: Outcome
    images_needed: int | None  # undecided: samples at which, at these rates, the agreement is shown within

    @classmethod
    def judge(cls, samples: int, confident: int, changed: int, margin: float, minimum: float, *,
              sampled: bool, confidence: float = 0.95) -> ConfidentAgreement:
        agreement = 1.0 - changed / confident if confident else 1.0
        if sampled:
            changed_low, changed_high = clopper_pearson(changed, confident, confidence)
            lower, upper = 1.0 - changed_high, 1.0 - changed_low
        else:
            lower = upper = agreement
        # the limit is on the changed fraction: 1 - minimum
        outcome = _outcome(1.0 - upper, 1.0 - lower, 1.0 - minimum)
        if not sampled and outcome == "undecided":  # an exact observation is never undecided
            outcome = "within"
        needed = None
        if outcome == "undecided" and confident and changed / confident < 1.0 - minimum:
            rate, share = changed / confident, confident / samples
            needed_confident = _smallest(confident, lambda k: clopper_pearson(rate * k, k, confidence)[1]
                                         <= 1.0 - minimum)
            needed = None if needed_confident is None else math.ceil(needed_confident / share)
        return cls(samples, confident, changed, margin, confidence, sampled, agreement, lower, upper, minimum,
                   outcome, needed)

    def describe(self) -> str:
        """``agreement on 312 confident of 359 images 100.0 % (95 % bounds 98.8..100.0 %): within 99.0 %``."""
        what = "images" if self.sampled else "samples"
        text = (f"top-1 agreement on the {self.confident:,} of {self.samples:,} {what} the reference is confident "
                f"on (top-1 lead >= {self.margin:.3g} of the sample's scale): {self.agreement:.1%}, "
                f"{self.changed:,} changed class")
        if self.sampled:
            text += f" ({_percent(self.confidence)} bounds {self.lower:.1%}..{self.upper:.1%})"
        text += ": "
        if self.outcome == "within":
            return text + f"at least {self.minimum:.1%}"
        if self.outcome == "exceeds":
            return text + f"below {self.minimum:.1%}" + (" (even its upper bound is)" if self.sampled else "")
        if not self.confident:
            return text + f"none to judge agreement on, so it cannot be shown at least {self.minimum:.1%}"
        return text + _too_few(f"agreement of at least {self.minimum:.1%}", self.images_needed, "held-out")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _too_few(claim: str, needed: int | None, kind: str) -> str:
    if needed is None:
        return f"too few {kind} images to show {claim}, and at the observed rates no number of images would"
    return f"too few {kind} images to show {claim}: about {needed:,} would"


def _points(fraction: float, *, exact: bool = False) -> str:
    value = 100 * fraction
    if exact:
        return f"{value:g}"
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g} %"
