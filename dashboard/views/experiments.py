"""Canary experiments in the dashboard: the list, and for admins the start form; one
experiment's live figures (htmx polls them while it runs) and, for admins, stopping it. The
rules are retrain.experiments'; a start or stop they refuse is shown with their words."""

from datetime import timedelta
from typing import cast

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from dashboard.selectors.experiments import (
    candidate_index_versions,
    candidate_model_versions,
    experiment_detail_get,
    experiments_listed,
)
from dashboard.views.access import project_view
from flywheel.models import IndexVersion, ModelVersion
from flywheel.validation import CheckedFormMixin
from retrain.experiments.selectors import experiment_get
from retrain.experiments.services import (
    MAX_DURATION,
    MIN_RATINGS_PER_ARM_FLOOR,
    ExperimentParameters,
    ExperimentRefused,
    InvalidExperimentParameters,
    experiment_start,
    experiment_stop,
)
from retrain.models import Experiment

# The service's parameter names, as the form's fields (shares are percentages here).
FORM_FIELD_OF_PARAMETER = {"candidate_share": "candidate_percent", "shadow_share": "shadow_percent"}


class ModelVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return obj.name


class IndexVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return f"v{obj.number}"


class ExperimentStartForm(CheckedFormMixin, forms.Form):
    candidate_model = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        empty_label="None: production's model",
        help_text="A candidate model version (trained, not yet promoted).",
    )
    candidate_index = IndexVersionChoiceField(
        queryset=IndexVersion.objects.none(),
        required=False,
        empty_label="None: the active index",
        help_text="A ready index version (built, never active).",
    )
    candidate_percent = forms.FloatField(
        label="Candidate's share of the traffic (%)",
        initial=10,
        help_text="People are assigned by a stable hash of their id, so each keeps one arm.",
    )
    metric = forms.ChoiceField(choices=Experiment.Metric.choices)
    min_ratings_per_arm = forms.IntegerField(
        initial=100,
        min_value=MIN_RATINGS_PER_ARM_FLOOR,
        help_text="No verdict before each arm has this many ratings.",
    )
    max_duration_hours = forms.FloatField(
        label="Deadline (hours)",
        initial=168,
        help_text="Undecided then: not enough data.",
    )
    no_difference_margin = forms.FloatField(
        required=False,
        help_text="A difference smaller than this either way counts as none; empty: 0.05 of "
        "thumbs-up rate, 0.2 of a score.",
    )
    shadow_percent = forms.FloatField(
        label="Shadow share of control's traffic (%)",
        initial=0,
        help_text="The candidate also answers this share of control's questions, unseen, for "
        "side-by-side review.",
    )
    auto_promote = forms.BooleanField(
        required=False, help_text="Promote the candidate when it wins."
    )
    stop_on_loss = forms.BooleanField(
        required=False, initial=True, help_text="Stop early when control wins."
    )
    error_rate_factor = forms.FloatField(
        initial=2.0, help_text="Stop the candidate when its error rate exceeds control's by this."
    )
    latency_p95_factor = forms.FloatField(
        initial=2.0, help_text="Stop the candidate when its latency p95 exceeds control's by this."
    )

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        cast(
            forms.ModelChoiceField, self.fields["candidate_model"]
        ).queryset = candidate_model_versions(project=project)
        cast(
            forms.ModelChoiceField, self.fields["candidate_index"]
        ).queryset = candidate_index_versions(project=project)

    def parameters(self) -> ExperimentParameters:
        data = self.cleaned_data
        hours = min(max(data["max_duration_hours"], -1.0), MAX_DURATION.days * 24 + 1)
        return ExperimentParameters(
            candidate_share=data["candidate_percent"] / 100,
            metric=data["metric"],
            min_ratings_per_arm=data["min_ratings_per_arm"],
            max_duration=timedelta(hours=hours),
            shadow_share=data["shadow_percent"] / 100,
            auto_promote=data["auto_promote"],
            stop_on_loss=data["stop_on_loss"],
            error_rate_factor=data["error_rate_factor"],
            latency_p95_factor=data["latency_p95_factor"],
            no_difference_margin=data["no_difference_margin"],
        )


class ExperimentStopForm(CheckedFormMixin, forms.Form):
    reason = forms.CharField(required=False, max_length=2000)


def _experiments_page(request, project, *, form=None, status=200):
    context = {
        "project": project,
        "role": request.role,
        "section": "experiments",
        "experiments": experiments_listed(project=project),
    }
    if request.role == "admin":
        context["form"] = form or ExperimentStartForm(project=project)
    return render(request, "dashboard/experiments.html", context, status=status)


@project_view("viewer")
@require_safe
def experiments(request, project):
    return _experiments_page(request, project)


@project_view("admin")
@require_POST
def experiment_start_request(request, project):
    form = ExperimentStartForm(request.POST, project=project)
    if not form.is_valid():
        return _experiments_page(request, project, form=form, status=400)
    try:
        experiment = experiment_start(
            project=project,
            parameters=form.parameters(),
            candidate_model_version=form.cleaned_data["candidate_model"],
            candidate_index_version=form.cleaned_data["candidate_index"],
            user=request.user,
        )
    except InvalidExperimentParameters as invalid:
        form.add_error(FORM_FIELD_OF_PARAMETER.get(invalid.param, invalid.param), invalid.message)
    except ExperimentRefused as refused:
        form.add_error(None, refused.message)
    else:
        messages.success(request, f"Experiment #{experiment.pk} is running.")
        return redirect(
            "dashboard:experiment_detail", project_slug=project.slug, experiment_id=experiment.pk
        )
    return _experiments_page(request, project, form=form, status=400)


def _detail_or_404(project, experiment_id: int):
    detail = experiment_detail_get(project=project, experiment_id=experiment_id)
    if detail is None:
        raise Http404("No such experiment in this project")
    return detail


@project_view("viewer")
@require_safe
def experiment_detail(request, project, experiment_id: int):
    return render(
        request,
        "dashboard/experiment_detail.html",
        {
            "project": project,
            "role": request.role,
            "section": "experiments",
            "detail": _detail_or_404(project, experiment_id),
        },
    )


@project_view("viewer")
@require_safe
def experiment_figures(request, project, experiment_id: int):
    """The live part of the page, which htmx polls while the experiment runs; a stopped or
    finished one's copy has no polling trigger, so the last poll ends the polling."""
    return render(
        request,
        "dashboard/partials/experiment_figures.html",
        {
            "project": project,
            "role": request.role,
            "detail": _detail_or_404(project, experiment_id),
        },
    )


@project_view("admin")
@require_POST
def experiment_stop_request(request, project, experiment_id: int):
    experiment = experiment_get(project=project, experiment_id=experiment_id)
    if experiment is None:
        raise Http404("No such experiment in this project")
    form = ExperimentStopForm(request.POST)
    try:
        if not form.is_valid():
            raise ExperimentRefused(
                " ".join(str(error) for errors in form.errors.values() for error in errors)
            )
        experiment_stop(
            experiment=experiment, reason=form.cleaned_data["reason"], user=request.user
        )
    except ExperimentRefused as refused:
        messages.warning(request, refused.message)
    else:
        messages.success(
            request, f"Stopped experiment #{experiment.pk}: production serves everyone again."
        )
    return redirect(
        "dashboard:experiment_detail", project_slug=project.slug, experiment_id=experiment.pk
    )
