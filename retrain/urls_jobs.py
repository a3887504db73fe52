from django.urls import path

from retrain.views import jobs, versions

urlpatterns = [
    path("<slug:project_slug>/jobs/", jobs.jobs, name="jobs"),
    path("<slug:project_slug>/versions/", versions.versions, name="versions"),
]
