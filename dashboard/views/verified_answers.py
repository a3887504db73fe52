"""The verified answers page: every approved correction served as an answer, with the
questions it answered so that a reviewer can spot one it should not have; and the serving
policy that decides when one is served, which admins change and calibrate here."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from dashboard.selectors.verified_answers import (
    SERVED_LISTED,
    VerifiedAnswerFilters,
    serving_policy_summary,
    verified_answer_status_counts,
    verified_answers_page,
)
from dashboard.views.access import project_view
from feedback.selectors import role_allows
from flywheel.ml.bundled import ModelNotAvailable
from flywheel.models import ServingPolicy, VerifiedAnswer
from flywheel.services.verified_answers import (
    MAX_EVIDENCE_DEPTH,
    MAX_FALSE_MATCH_RATE,
    SERVING_POLICY_EDITABLE_FIELDS,
    ServingPolicyInvalid,
    serving_policy_update,
    verified_answers_calibrate,
)
from flywheel.validation import CheckedFormMixin


class VerifiedAnswerFilterForm(CheckedFormMixin, forms.Form):
    """The list's filters, from the query string; `answer` narrows it to one verified answer
    (where an interaction's page links to)."""

    status = forms.ChoiceField(required=False)
    answer = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args, status_counts: dict[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        total = sum(status_counts.values())
        status = self.fields["status"]
        assert isinstance(status, forms.ChoiceField)
        status.choices = [("", f"Any ({total})")] + [
            (value, f"{label.split(':')[0]} ({status_counts[value]})")
            for value, label in VerifiedAnswer.Status.choices
        ]

    def filters(self) -> VerifiedAnswerFilters:
        return VerifiedAnswerFilters(
            status=self.cleaned_data["status"],
            verified_answer_id=self.cleaned_data["answer"],
        )


class ServingPolicyForm(CheckedFormMixin, forms.Form):
    """The serving policy's editable settings. The ranges are the service's, so the form
    refuses what the service would, but with a message next to the field."""

    verified_answers = forms.ChoiceField(
        choices=ServingPolicy.VerifiedAnswersMode.choices,
        label="Verified answers",
        help_text="What happens when a question matches a verified one.",
    )
    verified_match_threshold = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Match threshold",
        help_text="From 0 to 1: the cosine similarity a question needs to a verified question. "
        "Leave empty to use the calibrated threshold.",
    )
    verified_match_evidence_depth = forms.IntegerField(
        min_value=0,
        max_value=MAX_EVIDENCE_DEPTH,
        label="Evidence depth",
        help_text=f"From 0 to {MAX_EVIDENCE_DEPTH}: a passage the verified answer rests on must "
        "be among this many top passages of the new question; 0 skips the check.",
    )
    calibration_false_match_rate = forms.FloatField(
        max_value=MAX_FALSE_MATCH_RATE,
        label="Target false-match rate",
        help_text=f"Above 0, at most {MAX_FALSE_MATCH_RATE}: calibration picks the lowest "
        "threshold at which at most this share of verified questions would match another "
        "verified question with a different answer.",
    )
    answer_mode = forms.ChoiceField(
        choices=ServingPolicy.AnswerMode.choices,
        label="Answers",
        help_text="How a question without a verified answer is answered.",
    )
    groundedness_threshold = forms.FloatField(
        min_value=0,
        max_value=1,
        label="Groundedness threshold",
        help_text="From 0 to 1, for the grounded mode: an answer with a smaller share of its "
        "content words in its passages is replaced by a quote.",
    )

    def clean_calibration_false_match_rate(self) -> float:
        rate = self.cleaned_data["calibration_false_match_rate"]
        if rate <= 0:
            raise ValidationError("Must be above 0: no sample of questions can show a rate of 0.")
        return rate

    @classmethod
    def for_policy(cls, policy: ServingPolicy) -> "ServingPolicyForm":
        return cls(initial={name: getattr(policy, name) for name in SERVING_POLICY_EDITABLE_FIELDS})


def _policy_settings(policy: ServingPolicy) -> list[tuple[object, object]]:
    """The policy as (label, value) rows, for those who may not change it."""
    labels = {name: field.label for name, field in ServingPolicyForm.base_fields.items()}
    threshold = policy.verified_match_threshold
    return [
        (labels["verified_answers"], policy.get_verified_answers_display()),
        (
            labels["verified_match_threshold"],
            "not set: the calibrated one, or the default"
            if threshold is None
            else f"{threshold:g}",
        ),
        (labels["verified_match_evidence_depth"], policy.verified_match_evidence_depth),
        (labels["calibration_false_match_rate"], f"{policy.calibration_false_match_rate:g}"),
        (labels["answer_mode"], policy.get_answer_mode_display()),
        (labels["groundedness_threshold"], f"{policy.groundedness_threshold:g}"),
    ]


def _render_page(request, project, *, policy_form: ServingPolicyForm | None = None):
    status_counts = verified_answer_status_counts(project=project)
    filter_form = VerifiedAnswerFilterForm(request.GET, status_counts=status_counts)
    listing, single_answer_id = None, None
    if filter_form.is_valid():
        filters = filter_form.filters()
        single_answer_id = filters.verified_answer_id
        listing = verified_answers_page(
            project=project, filters=filters, page_number=request.GET.get("page")
        )
    filters_query = request.GET.copy()
    filters_query.pop("page", None)
    summary = serving_policy_summary(project=project)
    may_change_policy = role_allows(request.role, "admin")
    if may_change_policy and policy_form is None:
        policy_form = ServingPolicyForm.for_policy(summary.policy)
    return render(
        request,
        "dashboard/verified_answers.html",
        {
            "project": project,
            "role": request.role,
            "section": "verified_answers",
            "filter_form": filter_form,
            "listing": listing,
            "single_answer_id": single_answer_id,
            "filters_query": filters_query.urlencode(),
            "status_counts": status_counts,
            "total_count": sum(status_counts.values()),
            "served_listed": SERVED_LISTED,
            "summary": summary,
            "may_change_policy": may_change_policy,
            "policy_form": policy_form if may_change_policy else None,
            "policy_settings": _policy_settings(summary.policy),
            "may_review": role_allows(request.role, "reviewer"),
        },
    )


@project_view("viewer")
@require_safe
def verified_answers(request, project):
    return _render_page(request, project)


def _policy_anchor(project) -> str:
    return reverse("dashboard:verified_answers", args=[project.slug]) + "#serving-policy"


@project_view("admin")
@require_POST
def serving_policy_change(request, project):
    form = ServingPolicyForm(request.POST)
    if form.is_valid():
        try:
            serving_policy_update(project=project, **form.cleaned_data)
        except ServingPolicyInvalid as error:
            for name, message in error.errors.items():
                form.add_error(name if name in form.fields else None, message)
        else:
            messages.success(request, "Serving policy saved. Questions asked from now on use it.")
            return redirect(_policy_anchor(project))
    return _render_page(request, project, policy_form=form)


@project_view("admin")
@require_POST
def verified_answers_calibrate_now(request, project):
    """Calibrate inline: it embeds the verified questions and retrieves passages for each,
    seconds for a few hundred verified answers."""
    try:
        policy = verified_answers_calibrate(project=project)
    except ModelNotAvailable as error:
        messages.error(request, f"Calibration needs the embedding model: {error}")
        return redirect(_policy_anchor(project))
    calibration = policy.calibration
    if policy.calibrated_threshold is None:
        messages.warning(
            request,
            f"Calibrated on {calibration['questions']} active verified answers: "
            f"{calibration.get('note', 'no threshold could be measured')}.",
        )
    else:
        messages.success(
            request,
            f"Calibrated on {calibration['questions']} active verified answers: the match "
            f"threshold is now {policy.calibrated_threshold:.3f}"
            + (
                ", but the threshold set by hand still applies."
                if policy.verified_match_threshold is not None
                else "."
            ),
        )
    return redirect(_policy_anchor(project))
