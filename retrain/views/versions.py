from django.shortcuts import render

from feedback.views.access import project_view
from flywheel.models import IndexVersion, ModelVersion


@project_view("viewer")
def versions(request, project):
    return render(request, "dashboard/versions.html", {
        "project": project, "role": request.role, "section": "versions",
        "model_versions": ModelVersion.objects.filter(project=project).order_by("-created_at"),
        "index_versions": IndexVersion.objects.filter(project=project).order_by("-number"),
    })  # fmt: skip
