"""Dashboard URLs under /dashboard/ (namespace "dashboard"), and the widget's demo page.

Each area keeps its routes in its own module: urls_dashboard (overview, interactions,
exports, API keys), urls_queue (the annotation queue), urls_widget (the widget demo), and
retrain.urls_dashboard (curation policy, dataset versions) and retrain.urls_jobs (jobs, model
and index versions).
"""

from django.urls import include, path

from feedback.views.home import dashboard_home

app_name = "dashboard"

urlpatterns = [
    path("", dashboard_home, name="home"),
    path("", include("feedback.urls_dashboard")),
    path("", include("feedback.urls_queue")),
    path("", include("retrain.urls_dashboard")),
    path("", include("retrain.urls_jobs")),
]
