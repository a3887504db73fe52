"""The interactions list (filters, full-text search, keyset pages) and one interaction in full."""

import json

from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404, QueryDict
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_safe

from dashboard.selectors.interactions import (
    InteractionCursor,
    InteractionFilters,
    RatingFilter,
    index_version_choices,
    interaction_detail_get,
    interactions_page,
    model_version_choices,
)
from dashboard.views.access import project_view
from dashboard.views.overview import date_input_field


class InteractionFilterForm(forms.Form):
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


@project_view("viewer")
@require_safe
def interaction_detail(request, project, interaction_id):
    interaction = interaction_detail_get(project=project, interaction_id=interaction_id)
    if interaction is None:
        raise Http404("No such interaction in this project")
    return render(
        request,
        "dashboard/interaction_detail.html",
        {
            "project": project,
            "role": request.role,
            "section": "interactions",
            "interaction": interaction,
            "metadata_json": json.dumps(interaction.metadata, indent=2, ensure_ascii=False),
        },
    )
