"""The annotation queue, under /dashboard/<project>/queue/."""

from django.urls import path

from feedback.views import queue

urlpatterns = [
    path("<slug:project_slug>/queue/", queue.queue, name="queue"),
    path(
        "<slug:project_slug>/queue/<uuid:interaction_id>/review/",
        queue.queue_review,
        name="queue_review",
    ),
    path(
        "<slug:project_slug>/queue/<uuid:interaction_id>/skip/",
        queue.queue_skip,
        name="queue_skip",
    ),
    path(
        "<slug:project_slug>/queue/skipped/reset/",
        queue.queue_skipped_reset,
        name="queue_skipped_reset",
    ),
]
