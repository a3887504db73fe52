"""The interactions list (filters, full-text search, keyset pages) and one interaction in full,
where a review is revised."""

import json

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST, require_safe

from dashboard.selectors.interactions import (
    InteractionCursor,
    InteractionFilters,
    RatingFilter,
    index_version_choices,
    interaction_detail_get,
    interactions_page,
    model_version_choices,
    review_history,
)
from dashboard.views.access import project_view
from dashboard.views.overview import date_input_field
from feedback.models import Review
from feedback.services.reviews import (
    ReviewReviser,
    ReviewRevisionForbidden,
    ReviewRevisionInvalid,
    ReviewRevisionUnchanged,
    ReviewSuperseded,
    review_revise,
    review_revise_check_allowed,
)
from flywheel.validation import CheckedFormMixin


class InteractionFilterForm(CheckedFormMixin, forms.Form):
    """The list's filters, read from the query string; the exports take the same ones."""

    rating = forms.ChoiceField(
        required=False,
        choices=[
            (RatingFilter.ANY, "Any"),
            (RatingFilter.UP, "Thumbs up"),
            (RatingFilter.DOWN, "Thumbs down"),
            (RatingFilter.UNRATED, "Unrated"),
        ],
    )
    has_correction = forms.BooleanField(required=False, label="With a correction")
    model_version = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Any", label="Model version"
    )
    index_version = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Any", label="Index version"
    )
    q = forms.CharField(
        required=False,
        max_length=500,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": 'refund -annual "bin"'}),
    )
    # Not shown in the form: changing a filter starts again from the first page.
    cursor = forms.CharField(required=False, max_length=200, label="Page link")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        model_version = self.fields["model_version"]
        model_version.queryset = model_version_choices(project=project)
        model_version.label_from_instance = lambda version: version.name
        index_version = self.fields["index_version"]
        index_version.queryset = index_version_choices(project=project)
        index_version.label_from_instance = lambda version: f"v{version.number}"
        # "from" is a Python keyword: see DateRangeForm.
        self.fields["from"] = date_input_field("From", required=False)
        self.fields["to"] = date_input_field("To", required=False)

    def clean_cursor(self) -> InteractionCursor | None:
        token = self.cleaned_data["cursor"]
        if not token:
            return None
        try:
            return InteractionCursor.decode(token)
        except ValueError as error:
            raise ValidationError(
                "This page link is broken; start again from the first page."
            ) from error

    def clean(self):
        cleaned = super().clean()
        date_from, date_to = cleaned.get("from"), cleaned.get("to")
        if date_from and date_to and date_from > date_to:
            raise ValidationError("The start date is after the end date.")
        return cleaned

    def filters(self) -> InteractionFilters:
        cleaned = self.cleaned_data
        return InteractionFilters(
            rating=cleaned["rating"],
            has_correction=cleaned["has_correction"],
            model_version=cleaned["model_version"],
            index_version=cleaned["index_version"],
            date_from=cleaned["from"],
            date_to=cleaned["to"],
            search=cleaned["q"].strip(),
        )


def _filters_query(query: QueryDict) -> str:
    """The request's filters as a query string, without the page cursor."""
    filters = query.copy()
    filters.pop("cursor", None)
    return filters.urlencode()


def _wants_results_only(request) -> bool:
    # htmx swaps the results in place; restoring a page from history needs the whole page.
    return "HX-Request" in request.headers and "HX-History-Restore-Request" not in request.headers


@project_view("viewer")
@require_safe
def interactions_list(request, project):
    form = InteractionFilterForm(request.GET, project=project)
    page = None
    if form.is_valid():
        page = interactions_page(
            project=project, filters=form.filters(), after=form.cleaned_data["cursor"]
        )
    filters = _filters_query(request.GET)
    next_page_query = None
    if page and page.next_cursor:
        next_query = QueryDict(filters, mutable=True)
        next_query["cursor"] = page.next_cursor.encode()
        next_page_query = next_query.urlencode()
    template = (
        "dashboard/partials/interactions_results.html"
        if _wants_results_only(request)
        else "dashboard/interactions.html"
    )
    response = render(
        request,
        template,
        {
            "project": project,
            "role": request.role,
            "section": "interactions",
            "form": form,
            "page": page,
            "filters_query": filters,
            "next_page_query": next_page_query,
            "is_first_page": not request.GET.get("cursor"),
        },
    )
    patch_vary_headers(response, ["HX-Request"])
    return response


class ReviewRevisionForm(CheckedFormMixin, forms.Form):
    """A new state for the review that counts; the service decides whether it may be made."""

    decision = forms.ChoiceField(choices=Review.Decision.choices, widget=forms.RadioSelect)
    ideal_answer = forms.CharField(
        required=False,
        label="Ideal answer",
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Required when the decision is “corrected”; ignored otherwise.",
    )
    note = forms.CharField(required=False, label="Note", widget=forms.Textarea(attrs={"rows": 2}))

    @classmethod
    def for_review(cls, review: Review) -> "ReviewRevisionForm":
        return cls(
            initial={
                "decision": review.decision,
                "ideal_answer": review.ideal_answer,
                "note": review.note,
            },
            prefix=f"review-{review.pk}",
        )


def _revisable_review(*, interaction, user) -> Review | None:
    """The review that counts, when `user` may revise it."""
    reviews = list(interaction.reviews.all())
    if not reviews:
        return None
    try:
        review_revise_check_allowed(review=reviews[0], reviser=ReviewReviser(user=user))
    except ReviewRevisionForbidden:
        return None
    return reviews[0]


def _detail_page(
    request, project, interaction, *, revision_form=None, revised_review=None, status: int = 200
):
    """The page; with the revision form of the review that counts when the user may revise
    it, or with `revision_form` (a refused one) beside `revised_review`."""
    for review in interaction.reviews.all():
        review.history = review_history(review=review)
    if revision_form is None:
        revised_review = _revisable_review(interaction=interaction, user=request.user)
        if revised_review is not None:
            revision_form = ReviewRevisionForm.for_review(revised_review)
    return render(
        request,
        "dashboard/interaction_detail.html",
        {
            "project": project,
            "role": request.role,
            "section": "interactions",
            "interaction": interaction,
            "metadata_json": json.dumps(interaction.metadata, indent=2, ensure_ascii=False),
            "revised_review_id": revised_review.pk if revised_review else None,
            "revision_form": revision_form,
        },
        status=status,
    )


def _interaction_detail_or_404(project, interaction_id):
    interaction = interaction_detail_get(project=project, interaction_id=interaction_id)
    if interaction is None:
        raise Http404("No such interaction in this project")
    return interaction


@project_view("viewer")
@require_safe
def interaction_detail(request, project, interaction_id):
    interaction = _interaction_detail_or_404(project, interaction_id)
    return _detail_page(request, project, interaction)


@project_view("reviewer")
@require_POST
def review_revise_view(request, project, interaction_id, review_id):
    """Revise a review from the interaction page: back to the page with a message, or the
    page again with the form and its errors (403, 409 or 422, after the service's refusal)."""
    interaction = _interaction_detail_or_404(project, interaction_id)
    review = next((r for r in interaction.reviews.all() if r.pk == review_id), None)
    if review is None:
        raise Http404("No such review of this interaction")
    form = ReviewRevisionForm(request.POST, prefix=f"review-{review.pk}")
    if not form.is_valid():
        return _detail_page(
            request, project, interaction, revision_form=form, revised_review=review, status=422
        )
    try:
        review_revise(
            review=review,
            reviser=ReviewReviser(user=request.user),
            decision=form.cleaned_data["decision"],
            ideal_answer=form.cleaned_data["ideal_answer"],
            note=form.cleaned_data["note"],
        )
    except ReviewRevisionInvalid as error:
        form.add_error(error.field, str(error))
        status = 422
    except ReviewRevisionForbidden as error:
        form.add_error(None, str(error))
        status = 403
    except (ReviewRevisionUnchanged, ReviewSuperseded) as error:
        form.add_error(None, str(error))
        status = 409
    else:
        messages.success(request, "Review revised; the interaction is being curated again with it.")
        return redirect(
            reverse(
                "dashboard:interaction_detail",
                kwargs={"project_slug": project.slug, "interaction_id": interaction.pk},
            )
            + "#reviews"
        )
    # The page shows the review as it stands, next to the refused form.
    interaction = _interaction_detail_or_404(project, interaction_id)
    return _detail_page(
        request, project, interaction, revision_form=form, revised_review=review, status=status
    )
