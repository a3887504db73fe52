"""Jobs, model versions and index versions, under /dashboard/<project>/ (namespace
"dashboard")."""

from django.urls import path

from retrain.views import jobs, versions

urlpatterns = [
    path("<slug:project_slug>/jobs/", jobs.jobs, name="jobs"),
    path("<slug:project_slug>/jobs/start/", jobs.job_start, name="job_start"),
    path("<slug:project_slug>/jobs/<int:job_id>/", jobs.job_detail, name="job_detail"),
    path(
        "<slug:project_slug>/jobs/<int:job_id>/progress/",
        jobs.job_progress,
        name="job_progress",
    ),
    path(
        "<slug:project_slug>/jobs/<int:job_id>/cancel/",
        jobs.job_cancel_request,
        name="job_cancel",
    ),
    path("<slug:project_slug>/versions/", versions.versions, name="versions"),
    path(
        "<slug:project_slug>/versions/models/<int:version_id>/promote/",
        versions.model_version_promote_confirm,
        name="model_version_promote",
    ),
    path(
        "<slug:project_slug>/versions/models/<int:version_id>/reject/",
        versions.model_version_reject_confirm,
        name="model_version_reject",
    ),
    path(
        "<slug:project_slug>/versions/models/rollback/",
        versions.model_version_rollback_confirm,
        name="model_version_rollback",
    ),
    path(
        "<slug:project_slug>/versions/indexes/<int:version_id>/activate/",
        versions.index_version_activate_confirm,
        name="index_version_activate",
    ),
    path(
        "<slug:project_slug>/versions/indexes/rollback/",
        versions.index_version_rollback_confirm,
        name="index_version_rollback",
    ),
]
