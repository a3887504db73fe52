"""The annotation queue: one interaction at a time, approved, rejected, corrected or skipped.

Every action is a plain form post. htmx sends it with the HX-Request header and gets the
refreshed workspace (the next item and the progress) to swap in; without JavaScript the post
is answered with a redirect back to the queue and the outcome as a message.
"""

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.selectors.queue import queue_item_get, queue_progress_get
from dashboard.views.access import project_view
from feedback.models import PairwiseJudgement, Review
from feedback.services.pairwise import (
    PairwiseJudgementForbidden,
    PairwiseJudgementRefused,
    pairwise_judgement_submit,
)
from feedback.services.review_queue import review_queue_next
from feedback.services.reviews import ReviewLeaseLost, review_lease_release, review_submit_leased
from flywheel.selectors.interactions import interaction_get
from flywheel.validation import CheckedFormMixin

DECISION_DONE = {
    Review.Decision.APPROVED: "Approved",
    Review.Decision.REJECTED: "Rejected",
    Review.Decision.CORRECTED: "Ideal answer saved",
}


class IdealAnswerForm(CheckedFormMixin, forms.Form):
    ideal_answer = forms.CharField(
        error_messages={"required": "Write the ideal answer before saving it."}
    )


class PairwiseJudgementForm(CheckedFormMixin, forms.Form):
    preferred = forms.ChoiceField(
        choices=PairwiseJudgement.Preferred.choices,
        error_messages={
            "required": "Choose which answer is better, or a tie.",
            "invalid_choice": "Choose the served answer, the shadow answer or a tie.",
        },
    )
    note = forms.CharField(required=False)


PREFERRED_DONE = {
    PairwiseJudgement.Preferred.SERVED: "the served answer is better",
    PairwiseJudgement.Preferred.SHADOW: "the candidate's shadow answer is better",
    PairwiseJudgement.Preferred.TIE: "a tie",
}


@dataclass(frozen=True)
class Notice:
    level: int  # one of django.contrib.messages' levels
    text: str

    @property
    def tags(self) -> str:
        return messages.DEFAULT_TAGS[self.level]


def _skipped_key(project) -> str:
    return f"review_queue_skipped:{project.pk}"


def _skipped_ids(request, project) -> list[str]:
    """Interactions this reviewer skipped in this session: the queue passes over them."""
    return request.session.get(_skipped_key(project), [])


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _workspace_context(
    request,
    project,
    *,
    notice=None,
    invalid_form=None,
    invalid_for=None,
    invalid_judgement=None,
):
    """`invalid_judgement`: (shadow answer id, the pairwise form with its errors)."""
    skipped = _skipped_ids(request, project)
    interaction = review_queue_next(project=project, reviewer=request.user, exclude_ids=skipped)
    item = queue_item_get(interaction=interaction, reviewer=request.user) if interaction else None
    if item and invalid_form is not None and item.interaction.pk == invalid_for:
        form = invalid_form
    else:
        form = IdealAnswerForm(initial={"ideal_answer": item.editor_text if item else ""})
    return {
        "project": project,
        "role": request.role,
        "section": "queue",
        "item": item,
        "form": form,
        "invalid_judgement_for": invalid_judgement[0] if invalid_judgement else None,
        "judgement_form": invalid_judgement[1] if invalid_judgement else PairwiseJudgementForm(),
        "notice": notice,
        "skipped_count": len(skipped),
        "progress": queue_progress_get(project=project, reviewer=request.user),
    }


def _after_action(request, project, *, notice: Notice, status: int = 200):
    if _is_htmx(request):
        context = _workspace_context(request, project, notice=notice)
        return render(request, "dashboard/partials/queue_workspace.html", context, status=status)
    messages.add_message(request, notice.level, notice.text)
    return redirect("dashboard:queue", project_slug=project.slug)


def _interaction_or_404(project, interaction_id):
    interaction = interaction_get(project=project, interaction_id=interaction_id)
    if interaction is None:
        raise Http404("No such interaction in this project")
    return interaction


@project_view("reviewer")
def queue(request, project):
    return render(request, "dashboard/queue.html", _workspace_context(request, project))


@project_view("reviewer")
@require_POST
def queue_review(request, project, interaction_id):
    interaction = _interaction_or_404(project, interaction_id)
    decision = request.POST.get("decision")
    if decision not in Review.Decision.values:
        return HttpResponseBadRequest("Unknown decision")
    ideal_answer = ""
    if decision == Review.Decision.CORRECTED:
        form = IdealAnswerForm(request.POST)
        if not form.is_valid():
            # Unprocessable: the same item comes back with the error beside the editor.
            context = _workspace_context(
                request, project, invalid_form=form, invalid_for=interaction.pk
            )
            template = "partials/queue_workspace.html" if _is_htmx(request) else "queue.html"
            return render(request, f"dashboard/{template}", context, status=422)
        ideal_answer = form.cleaned_data["ideal_answer"]
    try:
        review_submit_leased(
            interaction=interaction,
            reviewer=request.user,
            decision=decision,
            ideal_answer=ideal_answer,
        )
    except ReviewLeaseLost as lost:
        if lost.already_reviewed:
            why = "That item has already been reviewed"
        else:
            why = "Your hold on that item expired and another reviewer has it now"
        notice = Notice(messages.WARNING, f"{why}, so your decision was not saved.")
        return _after_action(request, project, notice=notice, status=409)
    notice = Notice(messages.SUCCESS, f"{DECISION_DONE[decision]}: “{interaction}”.")
    return _after_action(request, project, notice=notice)


@project_view("reviewer")
@require_POST
def queue_pairwise_judge(request, project, interaction_id, shadow_answer_id):
    """Which is better: the served answer or the candidate's shadow answer (or a tie). The
    item stays in the reviewer's hands for its review; a judgement is not one."""
    interaction = _interaction_or_404(project, interaction_id)
    shadow_answer = interaction.shadow_answers.filter(pk=shadow_answer_id).first()
    if shadow_answer is None:
        raise Http404("No such shadow answer of this interaction")
    form = PairwiseJudgementForm(request.POST)
    if form.is_valid():
        try:
            pairwise_judgement_submit(
                shadow_answer=shadow_answer,
                reviewer=request.user,
                preferred=form.cleaned_data["preferred"],
                note=form.cleaned_data["note"],
            )
        except PairwiseJudgementForbidden as refused:
            raise PermissionDenied(str(refused)) from refused
        except PairwiseJudgementRefused as refused:
            form.add_error(None, str(refused))
    if form.errors:
        # Unprocessable: the item comes back with the error beside the comparison.
        context = _workspace_context(request, project, invalid_judgement=(shadow_answer.pk, form))
        template = "partials/queue_workspace.html" if _is_htmx(request) else "queue.html"
        return render(request, f"dashboard/{template}", context, status=422)
    preferred = form.cleaned_data["preferred"]
    notice = Notice(messages.SUCCESS, f"Judged “{interaction}”: {PREFERRED_DONE[preferred]}.")
    return _after_action(request, project, notice=notice)


@project_view("reviewer")
@require_POST
def queue_skip(request, project, interaction_id):
    interaction = _interaction_or_404(project, interaction_id)
    skipped = _skipped_ids(request, project)
    if str(interaction.pk) not in skipped:
        request.session[_skipped_key(project)] = [*skipped, str(interaction.pk)]
    review_lease_release(interaction=interaction, reviewer=request.user)
    notice = Notice(messages.INFO, f"Skipped “{interaction}”; it stays in the queue for others.")
    return _after_action(request, project, notice=notice)


@project_view("reviewer")
@require_POST
def queue_skipped_reset(request, project):
    request.session.pop(_skipped_key(project), None)
    notice = Notice(messages.INFO, "The items you skipped are back in your queue.")
    return _after_action(request, project, notice=notice)
