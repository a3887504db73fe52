"""The sequential test behind an experiment's verdict: pure functions, no Django.

The test is a mixture sequential probability ratio test (mSPRT; Johari, Pekelis and Walsh,
"Always valid inference", 2017) on the difference of the arms' means, candidate minus
control, with a normal mixture of standard deviation `mixture_sd` over the difference and the
normal approximation of each arm's mean. Its confidence sequence — the differences its
likelihood ratio has not rejected at level `alpha` — contains the true difference at every
moment at once with probability at least 1 - alpha, so the figures may be looked at after
every rating and the experiment stopped whenever they decide, without raising the error rate:

- candidate wins: the whole sequence lies above zero;
- control wins: the whole sequence lies below zero;
- no difference: the whole sequence lies inside (-margin, +margin);

each is wrong with probability at most alpha (the sequence would have to miss the truth).
The guarantee rests on the normal approximation, which is why no verdict is given before each
arm has its minimum of ratings; bench/experiments.py measures the false-positive rate the
test really has over repeated A/A experiments.
"""

import math
from dataclasses import dataclass
from enum import StrEnum

# The chance that a verdict is wrong, however often the figures are looked at.
ALPHA = 0.05
# The mixture's standard deviation as a share of the metric's range: the test is most
# sensitive to differences of about a tenth of the scale (0.1 of the thumbs-up rate, 0.4 of
# a 1-5 score).
MIXTURE_SD_SHARE_OF_RANGE = 0.1


class Verdict(StrEnum):
    UNDECIDED = ""
    CANDIDATE_WINS = "candidate_wins"
    CONTROL_WINS = "control_wins"
    NO_DIFFERENCE = "no_difference"
    NOT_ENOUGH_DATA = "not_enough_data"


@dataclass(frozen=True)
class Scale:
    """The range a metric's observations lie in: 0-1 for thumbs (up is 1), 1-5 for scores."""

    low: float
    high: float

    @property
    def range(self) -> float:
        return self.high - self.low

    @property
    def mixture_sd(self) -> float:
        return MIXTURE_SD_SHARE_OF_RANGE * self.range


THUMBS = Scale(0.0, 1.0)
SCORES = Scale(1.0, 5.0)


@dataclass(frozen=True)
class ArmSample:
    """An arm's observations as sufficient statistics: how many, their sum and the sum of
    their squares."""

    count: int
    total: float
    total_of_squares: float

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def mean_variance(self, scale: Scale) -> float:
        """The variance of the arm's mean: the sample variance with one pseudo-observation at
        the scale's largest variance, so that an arm whose ratings all agree still carries
        some uncertainty, divided by the count."""
        if self.count == 0:
            return math.inf
        squared_deviations = max(self.total_of_squares - self.total**2 / self.count, 0.0)
        largest_variance = (scale.range / 2) ** 2
        return (squared_deviations + largest_variance) / self.count**2


def confidence_radius(variance: float, *, mixture_sd: float, alpha: float = ALPHA) -> float:
    """Half the width of the normal-mixture confidence sequence around an estimate whose
    variance is `variance`: the estimate ± this covers the truth at every moment at once with
    probability at least 1 - alpha."""
    if math.isinf(variance):
        return math.inf
    mixture_variance = mixture_sd**2
    return math.sqrt(
        variance
        * (variance + mixture_variance)
        / mixture_variance
        * (2 * math.log(1 / alpha) + math.log((variance + mixture_variance) / variance))
    )


def likelihood_ratio(estimate: float, variance: float, *, mixture_sd: float) -> float:
    """The mixture likelihood ratio of "the difference is not zero" over "it is zero"; the
    test rejects zero once it reaches 1 / alpha."""
    mixture_variance = mixture_sd**2
    exponent = mixture_variance * estimate**2 / (2 * variance * (variance + mixture_variance))
    return math.sqrt(variance / (variance + mixture_variance)) * math.exp(min(exponent, 700.0))


def probability_positive(estimate: float, variance: float, *, mixture_sd: float) -> float:
    """The posterior probability that the difference is above zero, with the mixture as the
    prior; shown beside the verdict, which rests on the confidence sequence alone."""
    mixture_variance = mixture_sd**2
    z = estimate * mixture_sd / math.sqrt(variance * (variance + mixture_variance))
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def arm_interval(sample: ArmSample, *, scale: Scale, alpha: float = ALPHA) -> Interval:
    """The arm's mean with its confidence sequence, kept inside the scale."""
    if sample.count == 0 or sample.mean is None:
        return Interval(None, None, None)
    radius = confidence_radius(
        sample.mean_variance(scale), mixture_sd=scale.mixture_sd, alpha=alpha
    )
    return Interval(
        sample.mean, max(scale.low, sample.mean - radius), min(scale.high, sample.mean + radius)
    )


@dataclass(frozen=True)
class Comparison:
    """The candidate against control at one moment."""

    difference: Interval
    likelihood_ratio: float | None
    probability_candidate_better: float | None
    verdict: Verdict
    alpha: float
    margin: float

    def as_dict(self) -> dict:
        return {
            "difference": self.difference.as_dict(),
            "likelihood_ratio": self.likelihood_ratio,
            "probability_candidate_better": self.probability_candidate_better,
            "verdict": self.verdict.value,
            "alpha": self.alpha,
            "margin": self.margin,
        }


def compare(
    *,
    control: ArmSample,
    candidate: ArmSample,
    scale: Scale,
    min_per_arm: int,
    margin: float,
    deadline_passed: bool,
    alpha: float = ALPHA,
) -> Comparison:
    """The difference (candidate minus control) with its confidence sequence, and what it
    decides: nothing before each arm has `min_per_arm` observations, a verdict once the
    sequence excludes zero or lies within ±`margin`, and not enough data when the deadline
    passed without one."""
    if control.count == 0 or candidate.count == 0:
        verdict = Verdict.NOT_ENOUGH_DATA if deadline_passed else Verdict.UNDECIDED
        return Comparison(Interval(None, None, None), None, None, verdict, alpha, margin)
    assert control.mean is not None and candidate.mean is not None
    estimate = candidate.mean - control.mean
    variance = control.mean_variance(scale) + candidate.mean_variance(scale)
    radius = confidence_radius(variance, mixture_sd=scale.mixture_sd, alpha=alpha)
    low, high = estimate - radius, estimate + radius
    verdict = Verdict.UNDECIDED
    if min(control.count, candidate.count) >= min_per_arm:
        if low > 0:
            verdict = Verdict.CANDIDATE_WINS
        elif high < 0:
            verdict = Verdict.CONTROL_WINS
        elif -margin < low and high < margin:
            verdict = Verdict.NO_DIFFERENCE
    if verdict == Verdict.UNDECIDED and deadline_passed:
        verdict = Verdict.NOT_ENOUGH_DATA
    return Comparison(
        difference=Interval(estimate, max(-scale.range, low), min(scale.range, high)),
        likelihood_ratio=likelihood_ratio(estimate, variance, mixture_sd=scale.mixture_sd),
        probability_candidate_better=probability_positive(
            estimate, variance, mixture_sd=scale.mixture_sd
        ),
        verdict=verdict,
        alpha=alpha,
        margin=margin,
    )


@dataclass(frozen=True)
class ArmHealth:
    """What the safety check compares: requests that failed among all the arm's requests,
    and the 95th percentile of the answered ones' latency."""

    requests: int
    failures: int
    latency_p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def error_rate_smoothed(self) -> float:
        """Smoothed by one failure and one success, so that an arm without failures still
        has a rate above zero to be compared with."""
        return (self.failures + 1) / (self.requests + 2)


def safety_breach(
    *,
    control: ArmHealth,
    candidate: ArmHealth,
    error_rate_factor: float,
    latency_p95_factor: float,
    min_requests: int,
) -> str:
    """Why the candidate must stop ("" when it need not): once it has served `min_requests`
    requests, an error rate above control's (smoothed) times `error_rate_factor`, or (with
    control having served as many) a latency p95 above control's times `latency_p95_factor`."""
    if candidate.requests < min_requests:
        return ""
    if candidate.error_rate > error_rate_factor * control.error_rate_smoothed:
        return (
            f"The candidate's error rate ({candidate.failures} of {candidate.requests} requests) "
            f"exceeds {error_rate_factor:g} times control's ({control.failures} of "
            f"{control.requests})."
        )
    if (
        control.requests >= min_requests
        and candidate.latency_p95_ms is not None
        and control.latency_p95_ms is not None
        and candidate.latency_p95_ms > latency_p95_factor * control.latency_p95_ms
    ):
        return (
            f"The candidate's latency p95 ({candidate.latency_p95_ms:.0f} ms) exceeds "
            f"{latency_p95_factor:g} times control's ({control.latency_p95_ms:.0f} ms)."
        )
    return ""
