from django.contrib import admin, messages
from django.template.response import TemplateResponse

from flywheel.admin import IndexVersionAdmin, ModelVersionAdmin, ProjectAdmin
from flywheel.models import IndexVersion, ModelVersion, Project
from retrain.experiments.services import experiment_stop
from retrain.jobs.lifecycle import InvalidJobParameters, job_cancel, job_create
from retrain.models import CurationPolicy, DatasetVersion, Experiment, InstructionExample, Job
from retrain.promotion import (
    gate_decision,
    index_version_activate,
    index_version_rollback,
    model_version_promote,
    model_version_reject,
    model_version_rollback,
)
from retrain.transitions import TransitionRefused


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "state", "progress", "trigger", "created_at"]
    list_filter = ["project", "kind", "state", "trigger"]
    actions = ["cancel"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Job._meta.fields]

    def has_add_permission(self, request):
        return False  # jobs start from the Project actions, with validated parameters

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        for job in queryset:
            job_cancel(job=job, by=f"{request.user.get_username()} from the admin")
        messages.success(request, f"Asked {queryset.count()} job(s) to stop.")


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "verdict", "metric", "candidate_share", "started_at"]
    list_filter = ["project", "status", "verdict"]
    actions = ["stop"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Experiment._meta.fields]

    def has_add_permission(self, request):
        return False  # experiments start from the dashboard or the API, with checked parameters

    @admin.action(description="Stop the selected experiments (production serves everyone)")
    def stop(self, request, queryset):
        for experiment in queryset:
            try:
                experiment_stop(experiment=experiment, user=request.user)
            except TransitionRefused as refused:
                messages.warning(request, refused.message)
            else:
                messages.success(request, f"Stopped experiment #{experiment.pk}.")


@admin.register(CurationPolicy)
class CurationPolicyAdmin(admin.ModelAdmin):
    list_display = ["project", "near_duplicate_threshold", "eval_fraction", "scrub_pii"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "trigger", "created_at"]
    list_filter = ["project"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in DatasetVersion._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(InstructionExample)
class InstructionExampleAdmin(admin.ModelAdmin):
    list_display = ["interaction", "project", "status", "signal", "split", "cluster"]
    list_filter = ["project", "status", "signal", "split"]
    exclude = ["question_embedding"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in InstructionExample._meta.fields if f.name != "question_embedding"]

    def has_add_permission(self, request):
        return False


def _start_job(kind: str, description: str):
    @admin.action(description=description)
    def start(modeladmin, request, queryset):
        for project in queryset:
            try:
                job = job_create(
                    project=project,
                    kind=kind,
                    trigger=Job.Trigger.ADMIN,
                    triggered_by=request.user,
                )
            except (InvalidJobParameters, TransitionRefused) as refused:
                messages.error(request, f"{project}: {refused}")
            else:
                messages.success(request, f"{project}: job {job.pk} queued ({description}).")

    start.__name__ = f"start_{kind}"
    return start


# ---------------------------------------------------------------------------------------------
# Pointer switches. The serving core registers its versions; the switches' rules live in this
# layer (retrain.promotion), so their actions are added here. Each action calls the service
# and shows its refusal as an error message.


@admin.action(description="Roll the production model back to the previous version")
def roll_back_model(modeladmin, request, queryset):
    for project in queryset:
        try:
            restored = model_version_rollback(project=project, user=request.user)
        except TransitionRefused as refused:
            modeladmin.message_user(request, f"{project}: {refused.message}", messages.ERROR)
        else:
            modeladmin.message_user(
                request, f"{project}: {restored.name} is in production again.", messages.SUCCESS
            )


@admin.action(description="Roll the index back to the previous version")
def roll_back_index(modeladmin, request, queryset):
    for project in queryset:
        try:
            restored = index_version_rollback(project=project)
        except TransitionRefused as refused:
            modeladmin.message_user(request, f"{project}: {refused.message}", messages.ERROR)
        else:
            modeladmin.message_user(
                request, f"{project}: index v{restored.number} is active again.", messages.SUCCESS
            )


# The serving core registers projects; their job actions belong to this layer, so the admin
# is extended here rather than the core importing upwards.
admin.site.unregister(Project)


@admin.register(Project)
class ProjectWithJobsAdmin(ProjectAdmin):
    actions = [
        _start_job("index_refresh", "Refresh the index"),
        _start_job("lora_training", "Train a LoRA adapter (default parameters)"),
        _start_job("dataset_snapshot", "Snapshot a dataset version"),
        _start_job("recuration", "Re-curate all feedback under the current policy"),
        roll_back_model,
        roll_back_index,
    ]


admin.site.unregister(ModelVersion)
admin.site.unregister(IndexVersion)


@admin.register(ModelVersion)
class ModelVersionWithSwitchesAdmin(ModelVersionAdmin):
    actions = ["promote", "reject"]

    @admin.action(description="Promote the selected version to production…")
    def promote(self, request, queryset):
        """Asks for a reason on an intermediate page (needed unless the version's evaluation
        recommends it), then promotes."""
        if queryset.count() != 1:
            self.message_user(
                request,
                "Promote one version at a time: a project has one production version.",
                messages.ERROR,
            )
            return None
        version = queryset.get()
        if "apply" not in request.POST:
            return TemplateResponse(
                request,
                "admin/flywheel/modelversion/promote.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"Promote {version.name}",
                    "version": version,
                    "gate_decision": gate_decision(version),
                },
            )
        try:
            model_version_promote(
                version=version, reason=request.POST.get("reason", ""), user=request.user
            )
        except TransitionRefused as refused:
            self.message_user(request, refused.message, messages.ERROR)
        else:
            self.message_user(request, f"{version.name} is now in production.", messages.SUCCESS)
        return None

    @admin.action(description="Reject the selected candidates")
    def reject(self, request, queryset):
        for version in queryset:
            try:
                model_version_reject(version=version)
            except TransitionRefused as refused:
                self.message_user(request, refused.message, messages.ERROR)
            else:
                self.message_user(request, f"Rejected {version.name}.", messages.SUCCESS)


@admin.register(IndexVersion)
class IndexVersionWithSwitchesAdmin(IndexVersionAdmin):
    actions = ["activate"]

    @admin.action(description="Activate the selected index version")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(
                request,
                "Activate one version at a time: a project reads one index.",
                messages.ERROR,
            )
            return
        version = queryset.get()
        try:
            index_version_activate(version=version)
        except TransitionRefused as refused:
            self.message_user(request, refused.message, messages.ERROR)
        else:
            self.message_user(request, f"Index v{version.number} is now active.", messages.SUCCESS)
