"""The promotion gate on paired per-example scores: it promotes only when the interval of the
mean difference clears the margin, rejects a candidate shown worse, and otherwise (too few
examples, an open question) decides nothing."""

import numpy as np
import pytest

from retrain.evaluation.gate import (
    CONFIDENCE,
    GateDecision,
    GateOutcome,
    paired_bootstrap_interval,
    promotion_gate_decide,
)

CONTRACT_KEYS = {
    "decision",
    "metric",
    "n",
    "min_examples",
    "margin",
    "mean_difference",
    "interval",
    "confidence",
    "seed",
    "reason",
}


def _pairs(differences: list[float], production: float = 0.4) -> list[tuple[float, float]]:
    """(candidate, production) scores whose differences are `differences`."""
    return [(production + difference, production) for difference in differences]


def test_four_examples_are_insufficient_evidence_however_clear_they_look():
    decision = promotion_gate_decide(
        metric="token_f1", margin=0.01, min_examples=30, pairs=_pairs([0.5, 0.6, 0.4, 0.5])
    )

    assert decision.decision == GateOutcome.INSUFFICIENT_EVIDENCE
    assert not decision.promotes
    assert decision.n == 4 and decision.min_examples == 30
    assert decision.mean_difference == pytest.approx(0.5)
    assert "fewer than the 30 the policy requires" in decision.reason


def test_a_candidate_better_by_more_than_the_margin_on_every_question_is_promoted():
    # 40 questions, the candidate better by 0.10 to 0.29 on each.
    differences = [0.10 + 0.01 * (i % 20) for i in range(40)]

    decision = promotion_gate_decide(
        metric="rouge_l", margin=0.05, min_examples=30, pairs=_pairs(differences)
    )

    assert decision.decision == GateOutcome.PROMOTE and decision.promotes
    low, high = decision.interval
    assert 0.05 < low < decision.mean_difference < high < 0.29
    assert decision.mean_difference == pytest.approx(np.mean(differences))
    assert "better by more than the margin 0.05" in decision.reason


def test_a_candidate_worse_on_most_questions_is_rejected():
    differences = [-0.2] * 30 + [0.05] * 5

    decision = promotion_gate_decide(
        metric="token_f1", margin=0.01, min_examples=30, pairs=_pairs(differences)
    )

    assert decision.decision == GateOutcome.REJECT
    assert decision.interval[1] < 0


def test_an_interval_that_straddles_zero_or_the_margin_decides_nothing():
    mixed = promotion_gate_decide(
        metric="token_f1", margin=0.0, min_examples=30, pairs=_pairs([0.3, -0.3] * 20)
    )
    # Surely better, but not surely by the margin.
    short_of_margin = promotion_gate_decide(
        metric="token_f1", margin=0.2, min_examples=30, pairs=_pairs([0.15, 0.2] * 20)
    )

    assert mixed.decision == GateOutcome.INSUFFICIENT_EVIDENCE
    assert mixed.interval[0] < 0 < mixed.interval[1]
    assert short_of_margin.decision == GateOutcome.INSUFFICIENT_EVIDENCE
    assert 0 < short_of_margin.interval[0] < 0.2


def test_unscored_pairs_are_left_out_and_none_scored_is_no_evidence():
    judged = [(1.0, 0.5)] * 3 + [(None, 0.5), (0.75, None)]

    partly = promotion_gate_decide(metric="judge", margin=0.0, min_examples=2, pairs=judged)
    unscored = promotion_gate_decide(
        metric="judge", margin=0.0, min_examples=2, pairs=[(None, None)] * 4
    )

    assert partly.n == 3 and partly.decision == GateOutcome.PROMOTE
    assert unscored.n == 0 and unscored.interval is None and unscored.mean_difference is None
    assert unscored.decision == GateOutcome.INSUFFICIENT_EVIDENCE
    assert "no example was scored on judge" in unscored.reason


def test_the_interval_is_reproducible_from_its_seed_and_covers_the_mean():
    differences = np.array([0.3, -0.1, 0.2, 0.0, 0.15, -0.05, 0.4, 0.1])

    first = paired_bootstrap_interval(differences, seed=7)
    again = paired_bootstrap_interval(differences, seed=7)
    other_seed = paired_bootstrap_interval(differences, seed=8)

    assert first == again
    assert first != other_seed
    assert first[0] < differences.mean() < first[1]
    assert differences.min() <= first[0] and first[1] <= differences.max()


def test_the_decision_is_recorded_with_the_contracted_keys_and_read_back():
    decision = promotion_gate_decide(
        metric="token_f1", margin=0.01, min_examples=3, pairs=_pairs([0.2, 0.3, 0.25]), seed=3
    )

    recorded = decision.as_dict()

    assert set(recorded) == CONTRACT_KEYS
    assert recorded["decision"] == "promote" and recorded["seed"] == 3
    assert recorded["confidence"] == CONFIDENCE == 0.95
    assert isinstance(recorded["interval"], list) and len(recorded["interval"]) == 2
    assert GateDecision.from_dict(recorded) == decision


def test_a_decision_recorded_before_the_gate_weighed_evidence_reads_as_insufficient():
    legacy = {"passed": True, "metric": "eval_loss", "reason": "candidate eval_loss beats"}

    decision = GateDecision.from_dict(legacy)

    assert decision.decision == GateOutcome.INSUFFICIENT_EVIDENCE and not decision.promotes
    assert decision.interval is None and decision.reason == "candidate eval_loss beats"
