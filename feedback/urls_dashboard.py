"""The overview, interactions (list, detail, exports) and API keys of a project's dashboard."""

from django.urls import path

from feedback.views.exports import interactions_export_csv, interactions_export_jsonl
from feedback.views.interactions import interaction_detail, interactions_list
from feedback.views.keys import key_revoke, keys
from feedback.views.overview import overview

urlpatterns = [
    path("<slug:project_slug>/", overview, name="overview"),
    path("<slug:project_slug>/interactions/", interactions_list, name="interactions"),
    path(
        "<slug:project_slug>/interactions/export.csv",
        interactions_export_csv,
        name="interactions_export_csv",
    ),
    path(
        "<slug:project_slug>/interactions/export.jsonl",
        interactions_export_jsonl,
        name="interactions_export_jsonl",
    ),
    path(
        "<slug:project_slug>/interactions/<uuid:interaction_id>/",
        interaction_detail,
        name="interaction_detail",
    ),
    path("<slug:project_slug>/keys/", keys, name="keys"),
    path("<slug:project_slug>/keys/<int:api_key_id>/revoke/", key_revoke, name="key_revoke"),
]
