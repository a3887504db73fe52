from django.contrib import admin, messages

from flywheel.admin import ProjectAdmin
from flywheel.models import Project
from retrain.jobs.lifecycle import job_cancel, job_create
from retrain.models import CurationPolicy, DatasetVersion, InstructionExample, Job


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
            job_cancel(job=job)
        messages.success(request, f"Asked {queryset.count()} job(s) to stop.")


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
            job = job_create(
                project=project, kind=kind, trigger=Job.Trigger.ADMIN, triggered_by=request.user
            )
            messages.success(request, f"{project}: job {job.pk} queued ({description}).")

    start.__name__ = f"start_{kind}"
    return start


# The serving core registers projects; their job actions belong to this layer, so the admin
# is extended here rather than the core importing upwards.
admin.site.unregister(Project)


@admin.register(Project)
class ProjectWithJobsAdmin(ProjectAdmin):
    actions = [
        _start_job("index_refresh", "Refresh the index"),
        _start_job("lora_training", "Train a LoRA adapter (default parameters)"),
        _start_job("dataset_snapshot", "Snapshot a dataset version"),
    ]
