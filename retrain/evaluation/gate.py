"""The promotion gate: a candidate replaces production only on evidence that it is better.

Candidate and production answer the same questions, so each question gives a paired
difference of a per-example metric (candidate minus production). The gate bootstraps the mean of
those differences (resampling questions with replacement, from a fixed seed, so the same scores
always give the same decision) and decides on its 95 % interval:

- `promote`: the interval's lower bound is above the margin — the candidate is better by more
  than the margin (an absolute difference on the metric: 0.01 on token-F1 is one point);
- `reject`: the interval's upper bound is below zero — the candidate is worse;
- `insufficient_evidence`: fewer paired examples than the policy's minimum, or an interval
  that leaves the question open. It never promotes.
"""

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# Resamples drawn at once, which bounds the memory a large evaluation needs.
BOOTSTRAP_BATCH = 500


class GateOutcome(StrEnum):
    PROMOTE = "promote"
    REJECT = "reject"
    INSUFFICIENT_EVIDENCE = "insufficient_evidence"


# The per-example metrics a gate may compare on, as the policy offers them.
GATE_METRICS = {
    "token_f1": "Token F1",
    "rouge_l": "ROUGE-L",
    "judge": "LLM judge score",
}


@dataclass(frozen=True)
class GateDecision:
    decision: GateOutcome
    metric: str
    n: int
    min_examples: int
    margin: float
    mean_difference: float | None
    interval: tuple[float, float] | None
    confidence: float
    seed: int
    reason: str

    def as_dict(self) -> dict:
        values = asdict(self)
        values["decision"] = str(self.decision)
        values["interval"] = list(self.interval) if self.interval is not None else None
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "GateDecision":
        """The decision as an evaluation job recorded it in its metrics."""
        interval = values.get("interval")
        try:
            decision = GateOutcome(values.get("decision", ""))
        except ValueError:
            # Recorded before the gate reasoned about evidence: it proved nothing.
            decision = GateOutcome.INSUFFICIENT_EVIDENCE
        return cls(
            decision=decision,
            metric=values.get("metric", ""),
            n=values.get("n") or 0,
            min_examples=values.get("min_examples") or 0,
            margin=values.get("margin") or 0.0,
            mean_difference=values.get("mean_difference"),
            interval=(interval[0], interval[1]) if interval else None,
            confidence=values.get("confidence") or CONFIDENCE,
            seed=values.get("seed") or 0,
            reason=values.get("reason", ""),
        )

    @property
    def promotes(self) -> bool:
        return self.decision == GateOutcome.PROMOTE

    @property
    def label(self) -> str:
        return self.decision.replace("_", " ")


def paired_bootstrap_interval(
    differences: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The percentile interval of the mean of `differences`, over resamples of the examples."""
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, BOOTSTRAP_BATCH):
        rows = min(BOOTSTRAP_BATCH, resamples - start)
        picks = generator.integers(0, len(differences), size=(rows, len(differences)))
        means[start : start + rows] = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def promotion_gate_decide(
    *,
    metric: str,
    margin: float,
    min_examples: int,
    pairs: list[tuple[float | None, float | None]],
    seed: int = BOOTSTRAP_SEED,
) -> GateDecision:
    """Decide on (candidate score, production score) pairs of the same questions; a pair with
    a side unscored (a judge that gave no score) is left out."""
    scored = [(c, p) for c, p in pairs if c is not None and p is not None]
    n = len(scored)

    def decided(outcome: GateOutcome, reason: str, mean=None, interval=None) -> GateDecision:
        return GateDecision(
            decision=outcome,
            metric=metric,
            n=n,
            min_examples=min_examples,
            margin=margin,
            mean_difference=mean,
            interval=interval,
            confidence=CONFIDENCE,
            seed=seed,
            reason=reason,
        )

    if n == 0:
        return decided(
            GateOutcome.INSUFFICIENT_EVIDENCE,
            f"no example was scored on {metric}; an admin decides",
        )
    differences = np.array([c - p for c, p in scored], dtype=float)
    mean = float(differences.mean())
    low, high = paired_bootstrap_interval(differences, seed=seed)
    shown = (
        f"mean {metric} difference {mean:+.4f}, {CONFIDENCE:.0%} interval [{low:+.4f}, "
        f"{high:+.4f}] over {n} paired examples"
    )
    if n < min_examples:
        return decided(
            GateOutcome.INSUFFICIENT_EVIDENCE,
            f"{shown}: fewer than the {min_examples} the policy requires; an admin decides",
            mean,
            (low, high),
        )
    if low > margin:
        return decided(
            GateOutcome.PROMOTE,
            f"{shown}: the candidate is better by more than the margin {margin:g}",
            mean,
            (low, high),
        )
    if high < 0:
        return decided(GateOutcome.REJECT, f"{shown}: the candidate is worse", mean, (low, high))
    return decided(
        GateOutcome.INSUFFICIENT_EVIDENCE,
        f"{shown}: the interval does not clear the margin {margin:g} and does not show the "
        "candidate worse; an admin decides",
        mean,
        (low, high),
    )
