"""The curation policy page (admins): edit what feedback becomes training data, and re-curate
existing feedback under the policy as it now stands."""

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.views.access import project_view
from retrain.curation.pipeline import interactions_curate_in_batches
from retrain.curation.policy import curation_policy_get
from retrain.models import CurationPolicy
from retrain.selectors import (
    examples_curated_before_count,
    interaction_ids_least_recently_curated,
    interactions_with_feedback_count,
)

# Re-curating runs inside the request until a background job exists for it: this bounds how
# long an admin waits; pressing again continues with the next slice.
RECURATE_INLINE_LIMIT = 2000
RECURATE_BATCH_SIZE = 1000


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
        "examples; the system prompt and the retrieved context are left as served.",
        ("scrub_pii",),
    ),
    PolicySection(
        "Retraining and promotion",
        "When new data justifies training an adapter, and when a trained candidate replaces "
        "the production model.",
        ("min_new_examples_to_retrain", "promotion_metric", "promotion_margin"),
    ),
)


class CurationPolicyForm(forms.ModelForm):
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
        label="Promotion margin",
        help_text="The relative improvement a candidate needs on the metric to replace "
        "production automatically, e.g. 0.01 = 1 %.",
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
            "scrub_pii": "Replace e-mail addresses, phone numbers, card numbers, IBANs, IP "
            "addresses and secrets with placeholders such as <EMAIL>.",
            "min_new_examples_to_retrain": "How many new examples justify training a new adapter.",
            "promotion_metric": "What a candidate and the production model are compared on, "
            "over the held-out eval split.",
        }

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
        "recurate_inline_limit": RECURATE_INLINE_LIMIT,
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
    """Curate the project's feedback again under the current policy, at most
    RECURATE_INLINE_LIMIT interactions per press, those curated longest ago first."""
    interaction_ids = interaction_ids_least_recently_curated(
        project=project, limit=RECURATE_INLINE_LIMIT
    )
    by_status = interactions_curate_in_batches(
        project=project, interaction_ids=interaction_ids, batch_size=RECURATE_BATCH_SIZE
    )
    messages.success(request, _recurated_message(project, by_status))
    return redirect("dashboard:policy", project_slug=project.slug)


def _recurated_message(project, by_status: dict[str, int]) -> str:
    curated = sum(by_status.values())
    outcome = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
    message = f"Re-curated {curated} interactions with feedback" + (
        f" ({outcome})." if outcome else "."
    )
    total = interactions_with_feedback_count(project=project)
    if total > curated:
        message += (
            f" {total - curated} more were left for later, to keep this page quick: press "
            f"“Re-curate all” again to continue, or run `manage.py curate --project "
            f"{project.slug}`."
        )
    return message
