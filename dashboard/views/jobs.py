"""Jobs in the dashboard: the list with its filters, one job as it runs (htmx polls its
progress), and, for admins, starting and cancelling jobs. Writes go through
retrain.jobs.lifecycle, which checks every job's parameters by the rules of its kind."""

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from dashboard.selectors.jobs import (
    JOBS_LISTED,
    dataset_versions_to_train_on,
    golden_set_names,
    job_detail_get,
    job_get,
    jobs_for_project,
    model_versions_to_evaluate,
)
from dashboard.views.access import project_view
from flywheel.validation import CheckedFormMixin
from retrain.evaluation import job as evaluation
from retrain.index_refresh import job as index_refresh
from retrain.jobs.lifecycle import InvalidJobParameters, job_cancel, job_create
from retrain.models import Job
from retrain.training import job as training
from retrain.training import retriever_job
from retrain.transitions import JobAlreadyUnfinished


class JobFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "All kinds"), *Job.Kind.choices], required=False)
    state = forms.ChoiceField(choices=[("", "All states"), *Job.State.choices], required=False)


class JobKindForm(forms.Form):
    kind = forms.ChoiceField(choices=Job.Kind.choices)


def _golden_set_field() -> forms.ChoiceField:
    return forms.ChoiceField(
        required=False,
        choices=[("", "None"), *((name, name) for name in golden_set_names())],
        help_text="Questions with known answers, from the golden sets folder.",
    )


def _count_field(label: str, **options) -> forms.IntegerField:
    return forms.IntegerField(label=label, required=False, min_value=1, **options)


class JobParametersForm(CheckedFormMixin, forms.Form):
    """One kind's parameters. A field left empty is left out, so the kind's default applies;
    an unbound form starts from those defaults."""

    # Why no job of this kind can be started now; empty when one can.
    unavailable = ""

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        if not self.is_bound:
            self.initial = self.kind_defaults()

    def kind_defaults(self) -> dict:
        return {}

    def job_parameters(self) -> dict:
        return {name: value for name, value in self.cleaned_data.items() if value not in (None, "")}


class IndexRefreshForm(JobParametersForm):
    activate = forms.BooleanField(
        required=False,
        label="Activate the new index",
        help_text="Retrieval switches to it "
        "once built; otherwise it waits, ready, for an admin to activate it.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["golden_set"] = _golden_set_field()

    def kind_defaults(self) -> dict:
        return index_refresh.validate_parameters({})


class LoraTrainingForm(JobParametersForm):
    dataset_version = forms.TypedChoiceField(coerce=int, empty_value=None, required=False)
    r = _count_field("Rank (r)")
    lora_alpha = _count_field("LoRA alpha")
    learning_rate = forms.FloatField(required=False, min_value=0)
    epochs = forms.FloatField(required=False, min_value=0)
    max_steps = _count_field("Max steps", help_text="Empty: the epochs decide.")
    batch_size = _count_field("Batch size")
    max_length = _count_field("Max length (tokens)")
    evaluate = forms.BooleanField(
        required=False, help_text="Queue an evaluation of the new candidate against production."
    )
    auto_promote = forms.BooleanField(
        required=False,
        help_text="Promote the candidate if the promotion gate decides 'promote': better than "
        "production by the policy's margin, on enough evaluation questions.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].choices = [
            ("", "A fresh snapshot of the curated examples"),
            *(
                (
                    version.number,
                    f"v{version.number} · {version.counts.get('train', 0)} train "
                    f"examples · {version.created_at:%Y-%m-%d}",
                )
                for version in dataset_versions_to_train_on(project=self.project)
            ),
        ]

    def kind_defaults(self) -> dict:
        return training.validate_parameters({})


class EvaluationForm(JobParametersForm):
    model_version = forms.TypedChoiceField(coerce=int)
    max_examples = _count_field("Max examples per suite")
    max_new_tokens = _count_field("Max new tokens per answer")
    auto_promote = forms.BooleanField(
        required=False,
        help_text="Promote the version if the promotion gate decides 'promote': better than "
        "production by the policy's margin, on enough evaluation questions.",
    )

    def __init__(self, *args, **kwargs):
        self.versions = model_versions_to_evaluate(project=kwargs["project"])
        super().__init__(*args, **kwargs)
        self.fields["model_version"].choices = [
            (version.pk, f"{version.name} ({version.get_status_display().lower()})")
            for version in self.versions
        ]
        self.fields["golden_set"] = _golden_set_field()
        if not self.versions:
            self.unavailable = "There is no model version to evaluate yet."

    def kind_defaults(self) -> dict:
        if not self.versions:
            return {}
        return evaluation.validate_parameters({"model_version": self.versions[0].pk})


class DatasetSnapshotForm(JobParametersForm):
    """A snapshot takes no parameters: it freezes whatever curation included."""


class RecurationForm(JobParametersForm):
    """A re-curation takes no parameters: the current curation policy decides."""


class RetrieverTrainingForm(JobParametersForm):
    learning_rate = forms.FloatField(required=False, min_value=0)
    epochs = forms.FloatField(required=False, min_value=0)
    max_steps = _count_field("Max steps", help_text="Empty: the epochs decide.")
    batch_size = _count_field("Batch size")
    eval_fraction = forms.FloatField(
        required=False,
        min_value=0,
        max_value=0.9,
        help_text="Share of the questions held out to compare the candidate with production.",
    )
    min_pairs = _count_field("Minimum (question, passage) pairs")
    auto_promote = forms.BooleanField(
        required=False,
        help_text="Promote the candidate when it retrieves the held-out questions' passages "
        "at least as well as production, then rebuild the index with it.",
    )

    def kind_defaults(self) -> dict:
        return retriever_job.validate_parameters({})


PARAMETER_FORMS: dict[str, type[JobParametersForm]] = {
    Job.Kind.INDEX_REFRESH: IndexRefreshForm,
    Job.Kind.LORA_TRAINING: LoraTrainingForm,
    Job.Kind.EVALUATION: EvaluationForm,
    Job.Kind.DATASET_SNAPSHOT: DatasetSnapshotForm,
    Job.Kind.RETRIEVER_TRAINING: RetrieverTrainingForm,
    Job.Kind.RECURATION: RecurationForm,
}
KIND_DESCRIPTIONS = {
    Job.Kind.INDEX_REFRESH: "Rebuild the retrieval index from the current documents and the "
    "approved corrections, and measure it against the active one.",
    Job.Kind.LORA_TRAINING: "Train a LoRA adapter on a dataset version's train split; it "
    "becomes a candidate model version.",
    Job.Kind.EVALUATION: "Compare a model version with production on held-out examples; the "
    "promotion gate decides whether it may replace production.",
    Job.Kind.DATASET_SNAPSHOT: "Freeze the curated examples into a dataset version (none is "
    "made when nothing changed).",
    Job.Kind.RETRIEVER_TRAINING: "Fine-tune the embedding model on (question, passage) pairs "
    "from rated and reviewed answers; it becomes a candidate retriever.",
    Job.Kind.RECURATION: "Curate every interaction with feedback again under the current "
    "curation policy (one re-curation at a time).",
}


@dataclass(frozen=True)
class StartOption:
    kind: str
    label: str
    description: str
    form: JobParametersForm


def _start_options(project, *, submitted: JobParametersForm | None = None) -> list[StartOption]:
    """One form per kind, each under its kind's name as prefix so that their fields do not
    clash; the submitted one stays bound to show its errors."""
    options = []
    for kind, label in Job.Kind.choices:
        form = submitted if submitted and submitted.prefix == kind else None
        options.append(
            StartOption(
                kind=kind,
                label=label,
                description=KIND_DESCRIPTIONS[kind],
                form=form or PARAMETER_FORMS[kind](project=project, prefix=kind),
            )
        )
    return options


def _jobs_page(request, project, *, kind_form=None, submitted=None):
    filters = JobFilterForm(request.GET)
    chosen = filters.cleaned_data if filters.is_valid() else {}
    context = {
        "project": project,
        "role": request.role,
        "section": "jobs",
        "filters": filters,
        "jobs_listed": JOBS_LISTED,
        "jobs": jobs_for_project(
            project=project, kind=chosen.get("kind", ""), state=chosen.get("state", "")
        ),
    }
    if request.role == "admin":
        context["kind_form"] = kind_form
        context["start_options"] = _start_options(project, submitted=submitted)
    return render(request, "dashboard/jobs.html", context)


@project_view("viewer")
@require_safe
def jobs(request, project):
    return _jobs_page(request, project)


@project_view("admin")
@require_POST
def job_start(request, project):
    kind_form = JobKindForm(request.POST)
    if not kind_form.is_valid():
        return _jobs_page(request, project, kind_form=kind_form)
    kind = kind_form.cleaned_data["kind"]
    form = PARAMETER_FORMS[kind](request.POST, project=project, prefix=kind)
    if form.is_valid():
        try:
            job = job_create(
                project=project,
                kind=kind,
                trigger=Job.Trigger.DASHBOARD,
                parameters=form.job_parameters(),
                triggered_by=request.user,
            )
        except (InvalidJobParameters, JobAlreadyUnfinished) as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Queued job #{job.pk}: {job.get_kind_display()}.")
            return redirect("dashboard:job_detail", project_slug=project.slug, job_id=job.pk)
    return _jobs_page(request, project, submitted=form)


def _job_detail_or_404(project, job_id: int):
    detail = job_detail_get(project=project, job_id=job_id)
    if detail is None:
        raise Http404("No such job in this project")
    return detail


@project_view("viewer")
@require_safe
def job_detail(request, project, job_id: int):
    return render(
        request,
        "dashboard/job_detail.html",
        {
            "project": project,
            "role": request.role,
            "section": "jobs",
            "detail": _job_detail_or_404(project, job_id),
        },
    )


@project_view("viewer")
@require_safe
def job_progress(request, project, job_id: int):
    """The live part of the job's page, which htmx polls while the job is unfinished; once it
    is finished the partial comes without its polling trigger, and the polling stops."""
    return render(
        request,
        "dashboard/partials/job_progress.html",
        {
            "project": project,
            "role": request.role,
            "detail": _job_detail_or_404(project, job_id),
        },
    )


@project_view("admin")
@require_POST
def job_cancel_request(request, project, job_id: int):
    job = job_get(project=project, job_id=job_id)
    if job is None:
        raise Http404("No such job in this project")
    if job.is_finished:
        messages.warning(request, f"Job #{job.pk} had already finished ({job.state}).")
    else:
        job = job_cancel(job=job, by=f"{request.user.get_username()} from the dashboard")
        if job.state == Job.State.CANCELLED:
            messages.success(request, f"Cancelled job #{job.pk} before it started.")
        else:
            messages.success(request, f"Asked job #{job.pk} to stop; it stops at its next step.")
    return redirect("dashboard:job_detail", project_slug=project.slug, job_id=job.pk)
