"""Curation policy and dataset versions, under /dashboard/<project>/ (namespace "dashboard")."""

from django.urls import path

from retrain.views import datasets, policy

urlpatterns = [
    path("<slug:project_slug>/datasets/", datasets.datasets, name="datasets"),
    path(
        "<slug:project_slug>/datasets/snapshot/",
        datasets.dataset_snapshot_create,
        name="dataset_snapshot",
    ),
    path(
        "<slug:project_slug>/datasets/<int:number>/",
        datasets.dataset_detail,
        name="dataset_detail",
    ),
    path(
        "<slug:project_slug>/datasets/<int:number>/download/<str:export_format>/<str:split>/",
        datasets.dataset_download,
        name="dataset_download",
    ),
    path("<slug:project_slug>/policy/", policy.policy, name="policy"),
    path("<slug:project_slug>/policy/recurate/", policy.policy_recurate, name="policy_recurate"),
]
