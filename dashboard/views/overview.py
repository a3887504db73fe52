"""The overview: a project's interactions, satisfaction and corrections over a date range."""

from datetime import date, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from dashboard.selectors.overview import overview_get
from dashboard.views.access import project_view

DEFAULT_RANGE_DAYS = 30
# A year of days is already more bars than a chart can show apart.
MAX_RANGE_DAYS = 366
# Dates outside these are typos: nothing was logged before 1970, and the day after
# 9999-12-31 does not exist for Python.
EARLIEST_DATE, LATEST_DATE = date(1970, 1, 1), date(9998, 12, 31)


def date_input_field(label: str, *, required: bool = True) -> forms.DateField:
    return forms.DateField(
        label=label,
        required=required,
        validators=[MinValueValidator(EARLIEST_DATE), MaxValueValidator(LATEST_DATE)],
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )


class DateRangeForm(forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The query parameters are "from" and "to"; "from" is a Python keyword, so the fields
        # cannot be declared as class attributes.
        self.fields["from"] = date_input_field("From")
        self.fields["to"] = date_input_field("To")

    def clean(self):
        cleaned = super().clean()
        date_from, date_to = cleaned.get("from"), cleaned.get("to")
        if date_from and date_to:
            if date_from > date_to:
                raise ValidationError("The start date is after the end date.")
            if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
                raise ValidationError(f"Choose at most {MAX_RANGE_DAYS} days.")
        return cleaned


def date_range_form(query: QueryDict) -> DateRangeForm:
    """The form bound to the request's dates, the last DEFAULT_RANGE_DAYS days for any left
    out, so that the page always shows the range it reports on."""
    today = timezone.localdate()
    defaults = {
        "from": (today - timedelta(days=DEFAULT_RANGE_DAYS - 1)).isoformat(),
        "to": today.isoformat(),
    }
    return DateRangeForm({name: query.get(name) or default for name, default in defaults.items()})


@project_view("viewer")
@require_safe
def overview(request, project):
    form = date_range_form(request.GET)
    data = None
    if form.is_valid():
        data = overview_get(
            project=project,
            date_from=form.cleaned_data["from"],
            date_to=form.cleaned_data["to"],
        )
    return render(
        request,
        "dashboard/overview.html",
        {
            "project": project,
            "role": request.role,
            "section": "overview",
            "form": form,
            "overview": data,
            "chart_data": data.chart_data() if data else None,
        },
    )
