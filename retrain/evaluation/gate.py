"""The promotion gate: a candidate replaces production only when it is measurably better."""

from dataclasses import asdict, dataclass

LOWER_IS_BETTER = {"eval_loss"}


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    candidate: float | None
    production: float | None
    improvement: float | None  # relative; positive means the candidate is better
    margin: float
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GateDecision":
        """The decision as an evaluation job recorded it in its metrics."""
        return cls(
            passed=bool(values.get("passed")),
            metric=values.get("metric", ""),
            candidate=values.get("candidate"),
            production=values.get("production"),
            improvement=values.get("improvement"),
            margin=values.get("margin") or 0.0,
            reason=values.get("reason", ""),
        )

    @property
    def improvement_percent(self) -> float | None:
        return None if self.improvement is None else 100 * self.improvement

    @property
    def margin_percent(self) -> float:
        return 100 * self.margin


def promotion_gate_decide(
    *, metric: str, margin: float, candidate: dict, production: dict
) -> GateDecision:
    candidate_value, production_value = candidate.get(metric), production.get(metric)
    if candidate_value is None or production_value is None:
        return GateDecision(
            False,
            metric,
            candidate_value,
            production_value,
            None,
            margin,
            f"no {metric} to compare; an admin decides",
        )
    if metric in LOWER_IS_BETTER:
        improvement = (production_value - candidate_value) / max(abs(production_value), 1e-9)
    else:
        improvement = (candidate_value - production_value) / max(abs(production_value), 1e-9)
    passed = improvement >= margin
    verdict = "beats" if passed else "does not beat"
    reason = (
        f"candidate {metric} {candidate_value:.4f} {verdict} production {production_value:.4f} "
        f"by the required {margin:.1%} (improvement {improvement:+.1%})"
    )
    return GateDecision(
        passed, metric, candidate_value, production_value, improvement, margin, reason
    )
