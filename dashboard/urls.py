"""Every server-rendered page of a project's dashboard, under /dashboard/ (namespace
"dashboard"); the widget's demo page is at /widget/demo/ (see `widget_urlpatterns`)."""

from django.urls import path

from dashboard.views import (
    datasets,
    documents,
    experiments,
    exports,
    interactions,
    jobs,
    keys,
    overview,
    policy,
    queue,
    sessions,
    verified_answers,
    versions,
)
from dashboard.views.home import dashboard_home
from dashboard.views.widget_demo import widget_demo

app_name = "dashboard"

PROJECT = "<slug:project_slug>"

urlpatterns = [
    path("", dashboard_home, name="home"),
    # Overview, interactions and their exports, API keys.
    path(f"{PROJECT}/", overview.overview, name="overview"),
    path(f"{PROJECT}/interactions/", interactions.interactions_list, name="interactions"),
    path(
        f"{PROJECT}/interactions/export.csv",
        exports.interactions_export_csv,
        name="interactions_export_csv",
    ),
    path(
        f"{PROJECT}/interactions/export.jsonl",
        exports.interactions_export_jsonl,
        name="interactions_export_jsonl",
    ),
    path(
        f"{PROJECT}/interactions/<uuid:interaction_id>/",
        interactions.interaction_detail,
        name="interaction_detail",
    ),
    path(
        f"{PROJECT}/interactions/<uuid:interaction_id>/reviews/<int:review_id>/revisions/",
        interactions.review_revise_view,
        name="review_revise",
    ),
    # A conversation: the interactions sharing a session id (which may contain slashes).
    path(f"{PROJECT}/sessions/<path:session_id>/", sessions.session_detail, name="session"),
    path(f"{PROJECT}/keys/", keys.keys, name="keys"),
    path(f"{PROJECT}/keys/<int:api_key_id>/revoke/", keys.key_revoke, name="key_revoke"),
    # The knowledge base.
    path(f"{PROJECT}/documents/", documents.documents, name="documents"),
    path(f"{PROJECT}/documents/upload/", documents.document_upload, name="document_upload"),
    path(
        f"{PROJECT}/documents/<int:document_id>/delete/",
        documents.document_delete_confirm,
        name="document_delete",
    ),
    # The annotation queue.
    path(f"{PROJECT}/queue/", queue.queue, name="queue"),
    path(f"{PROJECT}/queue/<uuid:interaction_id>/review/", queue.queue_review, name="queue_review"),
    path(f"{PROJECT}/queue/<uuid:interaction_id>/skip/", queue.queue_skip, name="queue_skip"),
    path(
        f"{PROJECT}/queue/<uuid:interaction_id>/shadow/<int:shadow_answer_id>/judge/",
        queue.queue_pairwise_judge,
        name="queue_pairwise_judge",
    ),
    path(
        f"{PROJECT}/queue/skipped/reset/",
        queue.queue_skipped_reset,
        name="queue_skipped_reset",
    ),
    # Curation policy and dataset versions.
    path(f"{PROJECT}/datasets/", datasets.datasets, name="datasets"),
    path(
        f"{PROJECT}/datasets/snapshot/", datasets.dataset_snapshot_create, name="dataset_snapshot"
    ),
    path(f"{PROJECT}/datasets/<int:number>/", datasets.dataset_detail, name="dataset_detail"),
    path(
        f"{PROJECT}/datasets/<int:number>/download/<str:export_format>/<str:split>/",
        datasets.dataset_download,
        name="dataset_download",
    ),
    path(f"{PROJECT}/policy/", policy.policy, name="policy"),
    path(f"{PROJECT}/policy/recurate/", policy.policy_recurate, name="policy_recurate"),
    # Verified answers and the serving policy that decides when they are served.
    path(
        f"{PROJECT}/verified-answers/",
        verified_answers.verified_answers,
        name="verified_answers",
    ),
    path(
        f"{PROJECT}/verified-answers/policy/",
        verified_answers.serving_policy_change,
        name="serving_policy",
    ),
    path(
        f"{PROJECT}/verified-answers/calibrate/",
        verified_answers.verified_answers_calibrate_now,
        name="verified_answers_calibrate",
    ),
    # Jobs, model versions and index versions.
    path(f"{PROJECT}/jobs/", jobs.jobs, name="jobs"),
    path(f"{PROJECT}/jobs/start/", jobs.job_start, name="job_start"),
    path(f"{PROJECT}/jobs/<int:job_id>/", jobs.job_detail, name="job_detail"),
    path(f"{PROJECT}/jobs/<int:job_id>/progress/", jobs.job_progress, name="job_progress"),
    path(f"{PROJECT}/jobs/<int:job_id>/cancel/", jobs.job_cancel_request, name="job_cancel"),
    path(f"{PROJECT}/versions/", versions.versions, name="versions"),
    path(
        f"{PROJECT}/versions/models/<int:version_id>/promote/",
        versions.model_version_promote_confirm,
        name="model_version_promote",
    ),
    path(
        f"{PROJECT}/versions/models/<int:version_id>/reject/",
        versions.model_version_reject_confirm,
        name="model_version_reject",
    ),
    path(
        f"{PROJECT}/versions/models/rollback/",
        versions.model_version_rollback_confirm,
        name="model_version_rollback",
    ),
    path(
        f"{PROJECT}/versions/indexes/<int:version_id>/activate/",
        versions.index_version_activate_confirm,
        name="index_version_activate",
    ),
    path(
        f"{PROJECT}/versions/indexes/rollback/",
        versions.index_version_rollback_confirm,
        name="index_version_rollback",
    ),
    # Canary experiments.
    path(f"{PROJECT}/experiments/", experiments.experiments, name="experiments"),
    path(
        f"{PROJECT}/experiments/start/",
        experiments.experiment_start_request,
        name="experiment_start",
    ),
    path(
        f"{PROJECT}/experiments/<int:experiment_id>/",
        experiments.experiment_detail,
        name="experiment_detail",
    ),
    path(
        f"{PROJECT}/experiments/<int:experiment_id>/figures/",
        experiments.experiment_figures,
        name="experiment_figures",
    ),
    path(
        f"{PROJECT}/experiments/<int:experiment_id>/stop/",
        experiments.experiment_stop_request,
        name="experiment_stop",
    ),
]

# Outside the namespace, at the site root: the rating widget's demo page.
widget_urlpatterns = [path("widget/demo/", widget_demo, name="widget_demo")]
