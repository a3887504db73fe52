"""The curation policy page (admins): edit what feedback becomes training data, and start a
re-curation job that curates existing feedback again under the policy as it now stands."""

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.views.access import project_view
from flywheel.validation import CheckedFormMixin
from retrain.curation.pii import (
    DETECTED_KINDS,
    PII_KIND_LABELS,
    PII_SOURCES,
    pii_entities_normalise,
)
from retrain.curation.policy import curation_policy_get
from retrain.jobs.lifecycle import job_create
from retrain.models import CurationPolicy, Job
from retrain.selectors import examples_curated_before_count, interactions_with_feedback_count
from retrain.transitions import JobAlreadyUnfinished


@dataclass(frozen=True)
class PolicySection:
    title: str
    description: str
    field_names: tuple[str, ...]


POLICY_SECTIONS = (
    PolicySection(
        "Signals",
        "Which feedback turns an answer into a training example. A reviewer's verdict "
        "outranks end-user ratings.",
        (
            "include_reviewer_approved",
            "include_thumbs_up",
            "min_score",
            "prefer_corrections",
            "exclude_thumbs_down_without_correction",
        ),
    ),
    PolicySection(
        "Lengths",
        "Examples outside these limits are excluded.",
        ("min_answer_chars", "max_answer_chars", "max_question_chars"),
    ),
    PolicySection(
        "Deduplication and split",
        "Similar questions form a cluster: only its best example enters datasets, and the "
        "whole cluster lands in one split, so no paraphrase of an eval question is trained on.",
        ("near_duplicate_threshold", "eval_fraction"),
    ),
    PolicySection(
        "Privacy",
        "Scrubbing applies to questions, answers and corrections before they are stored as "
        "examples, each with the kinds chosen for its source; the system prompt and the "
        "retrieved context are left as served.",
        ("scrub_pii", *(f"pii_{source}" for source in PII_SOURCES), "scrub_private_ips"),
    ),
    PolicySection(
        "Retraining and promotion",
        "When new data justifies training an adapter, and when a trained candidate replaces "
        "the production model.",
        (
            "min_new_examples_to_retrain",
            "promotion_metric",
            "promotion_margin",
            "min_eval_examples",
        ),
    ),
)


def _pii_kinds_field(source: str, help_text: str = "") -> forms.MultipleChoiceField:
    label = PII_SOURCES[source]
    return forms.MultipleChoiceField(
        required=False,
        choices=[(kind, PII_KIND_LABELS[kind]) for kind in DETECTED_KINDS],
        widget=forms.CheckboxSelectMultiple,
        label=f"Scrubbed in {label[0].lower()}{label[1:]}",
        help_text=help_text,
    )


class CurationPolicyForm(CheckedFormMixin, forms.ModelForm):
    # One set of checkboxes per source, saved together as the `pii_entities` field.
    pii_user_messages = _pii_kinds_field(
        "user_messages",
        "By default every kind everywhere, but IP addresses only in end-user messages: in "
        "answers and corrections they are the product's own servers.",
    )
    pii_model_answers = _pii_kinds_field("model_answers")
    pii_corrections = _pii_kinds_field("corrections")
    # Declared to check the ranges here, with a message per field, before the database's
    # check constraints would refuse them.
    min_score = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=5,
        label="Minimum mean score",
        help_text="An average score (1 to 5) of at least this makes the answer an example. Leave "
        "empty so that scores alone never do.",
    )
    near_duplicate_threshold = forms.FloatField(
        max_value=1,
        label="Near-duplicate threshold",
        help_text="Above 0, at most 1. Questions at least this similar (cosine similarity of "
        "their embeddings) form one cluster; 1 groups exact duplicates only. A cluster keeps "
        "its members, so a change applies to newly curated questions.",
    )
    eval_fraction = forms.FloatField(
        min_value=0,
        max_value=0.5,
        label="Eval fraction",
        help_text="From 0 to 0.5: the share of clusters held out for evaluation. Re-curating "
        "moves existing clusters to their new split.",
    )
    promotion_margin = forms.FloatField(
        min_value=0,
        max_value=1,
        label="Promotion margin",
        help_text="From 0 to 1: how much better, as an absolute difference on the metric (a "
        "score from 0 to 1), a candidate must be shown to be — the lower end of the 95 % "
        "interval of its mean difference from production — to replace it automatically; "
        "0.01 = one point of token F1.",
    )
    min_eval_examples = forms.IntegerField(
        min_value=2,
        max_value=10_000,
        label="Minimum evaluation examples",
        help_text="From 2 to 10,000: the fewest questions both models answered that a gate "
        "decision may rest on; with fewer, the decision is 'insufficient evidence'.",
    )

    class Meta:
        model = CurationPolicy
        fields = [name for section in POLICY_SECTIONS for name in section.field_names]
        labels = {
            "include_reviewer_approved": "Approved reviews",
            "include_thumbs_up": "Thumbs up",
            "prefer_corrections": "Prefer corrections",
            "exclude_thumbs_down_without_correction": "Exclude thumbs down without a correction",
            "min_answer_chars": "Minimum answer length (characters)",
            "max_answer_chars": "Maximum answer length (characters)",
            "max_question_chars": "Maximum question length (characters)",
            "scrub_pii": "Scrub PII",
            "scrub_private_ips": "Scrub private IP addresses too",
            "min_new_examples_to_retrain": "Minimum new examples to retrain",
            "promotion_metric": "Promotion metric",
        }
        help_texts = {
            "exclude_thumbs_down_without_correction": "An answer with more thumbs down than "
            "up and no correction never becomes an example; it can still be the rejected side "
            "of a preference pair.",
            "min_answer_chars": "Shorter answers are excluded.",
            "max_answer_chars": "Longer answers are excluded.",
            "max_question_chars": "Longer questions are excluded.",
            "scrub_pii": "Replace the kinds chosen below with placeholders such as <EMAIL>.",
            "scrub_private_ips": "Private-range addresses (10.x, 172.16-31.x, 192.168.x, "
            "loopback, link-local) identify nobody outside their network and are often the "
            "fact a question is about, so they are kept unless this is on; it applies where "
            "IP addresses are scrubbed.",
            "min_new_examples_to_retrain": "How many new examples justify training a new adapter.",
            "promotion_metric": "What a candidate and the production model are compared on, "
            "question by question, over the held-out eval split and the golden set. The LLM "
            "judge needs a judge server (FLYWHEEL_JUDGE_BASE_URL).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for source in PII_SOURCES:
            self.fields[f"pii_{source}"].initial = self.instance.pii_entities.get(source, [])

    def save(self, commit: bool = True) -> CurationPolicy:
        self.instance.pii_entities = pii_entities_normalise(
            {source: self.cleaned_data[f"pii_{source}"] for source in PII_SOURCES}
        )
        return super().save(commit)

    def sections(self) -> list[tuple[PolicySection, list[forms.BoundField]]]:
        return [
            (section, [self[name] for name in section.field_names]) for section in POLICY_SECTIONS
        ]

    def clean_near_duplicate_threshold(self) -> float:
        threshold = self.cleaned_data["near_duplicate_threshold"]
        if threshold <= 0:
            raise ValidationError("Must be above 0: at 0 every question would be one cluster.")
        return threshold

    def clean(self):
        cleaned = super().clean()
        shortest, longest = cleaned.get("min_answer_chars"), cleaned.get("max_answer_chars")
        if shortest is not None and longest is not None and shortest > longest:
            self.add_error(
                "min_answer_chars", "Must not exceed the maximum answer length, or nothing fits."
            )
        return cleaned


def _policy_context(request, project, form: CurationPolicyForm) -> dict:
    return {
        "project": project,
        "role": request.role,
        "section": "policy",
        "form": form,
        "interactions_with_feedback": interactions_with_feedback_count(project=project),
        # updated_at is not a form field, so even a rejected form still holds the stored one.
        "examples_curated_before_policy": examples_curated_before_count(
            project=project, moment=form.instance.updated_at
        ),
    }


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def policy(request, project):
    current = curation_policy_get(project=project)
    if request.method != "POST":
        form = CurationPolicyForm(instance=current)
        return render(request, "dashboard/policy.html", _policy_context(request, project, form))
    form = CurationPolicyForm(request.POST, instance=current)
    if not form.is_valid():
        return render(request, "dashboard/policy.html", _policy_context(request, project, form))
    form.save()
    messages.success(
        request,
        "Curation policy saved. It applies to feedback curated from now on; re-curate all to "
        "apply it to the examples curated before.",
    )
    return redirect("dashboard:policy", project_slug=project.slug)


@project_view("admin")
@require_POST
def policy_recurate(request, project):
    """Queue a re-curation job: the curation workers curate every interaction with feedback
    again under the current policy. One at a time: while one is unfinished, it is refused."""
    try:
        job = job_create(
            project=project,
            kind=Job.Kind.RECURATION,
            trigger=Job.Trigger.DASHBOARD,
            triggered_by=request.user,
        )
    except JobAlreadyUnfinished as refused:
        messages.warning(request, refused.message)
    else:
        job_url = reverse("dashboard:job_detail", args=[project.slug, job.pk])
        messages.success(
            request,
            format_html(
                'Re-curation queued as <a href="{}">job {}</a>: the curation workers curate '
                "the {} interactions with feedback again under the current policy.",
                job_url,
                job.pk,
                interactions_with_feedback_count(project=project),
            ),
        )
    return redirect("dashboard:policy", project_slug=project.slug)
