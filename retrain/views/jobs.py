from django.shortcuts import render

from feedback.views.access import project_view
from retrain.models import Job


@project_view("viewer")
def jobs(request, project):
    recent = Job.objects.filter(project=project).order_by("-created_at")[:50]
    return render(request, "dashboard/jobs.html", {
        "project": project, "role": request.role, "section": "jobs", "jobs": recent,
    })  # fmt: skip
