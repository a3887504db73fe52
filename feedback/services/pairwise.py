"""Pairwise judgements: a reviewer compares the answer an interaction was served with the
answer a candidate gave the same prompt in shadow mode, and says which is better (or a tie).
A reviewer's new judgement of the same shadow answer replaces their earlier one."""

from feedback.models import PairwiseJudgement
from feedback.selectors import role_allows, role_for
from flywheel.models import ShadowAnswer


class PairwiseJudgementRefused(Exception):
    """A judgement that cannot be recorded; `code` names why, for an API's error."""

    code = "pairwise_judgement_refused"


class PairwiseJudgementForbidden(PairwiseJudgementRefused):
    code = "pairwise_judgement_forbidden"


class PairwiseJudgementInvalid(PairwiseJudgementRefused):
    """The judgement itself is wrong; `field` names the part at fault."""

    code = "invalid_pairwise_judgement"

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


class ShadowAnswerNotComparable(PairwiseJudgementRefused):
    """The candidate failed to answer (or answered nothing): there is no second answer."""

    code = "shadow_answer_not_comparable"


def shadow_answer_comparable(shadow_answer: ShadowAnswer) -> bool:
    return not shadow_answer.error and bool(shadow_answer.response.strip())


def pairwise_judgement_submit(
    *, shadow_answer: ShadowAnswer, reviewer, preferred: str, note: str = ""
) -> PairwiseJudgement:
    """Record `reviewer`'s verdict on `shadow_answer` beside the answer its interaction was
    served: "served", "shadow" or "tie".

    Refused with PairwiseJudgementForbidden unless the reviewer reviews (or administers) the
    interaction's project, PairwiseJudgementInvalid for an unknown verdict, and
    ShadowAnswerNotComparable when the candidate produced no answer to compare."""
    interaction = shadow_answer.interaction
    if not role_allows(role_for(user=reviewer, project=interaction.project), "reviewer"):
        raise PairwiseJudgementForbidden(
            "Only a reviewer or an admin of the project may judge its answers."
        )
    if preferred not in PairwiseJudgement.Preferred.values:
        raise PairwiseJudgementInvalid(
            f"Unknown verdict {preferred!r}: one of "
            f"{', '.join(PairwiseJudgement.Preferred.values)}.",
            field="preferred",
        )
    if not shadow_answer_comparable(shadow_answer):
        raise ShadowAnswerNotComparable(
            "The candidate gave no answer to this prompt"
            + (f" ({shadow_answer.error})" if shadow_answer.error else "")
            + ", so there is nothing to compare."
        )
    judgement, _ = PairwiseJudgement.objects.update_or_create(
        shadow_answer=shadow_answer,
        reviewer=reviewer,
        defaults={"interaction": interaction, "preferred": preferred, "note": note.strip()},
    )
    return judgement
