from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from feedback.selectors import projects_for_user


@login_required
def dashboard_home(request):
    """The first project's overview, or the list when there are several."""
    projects = projects_for_user(user=request.user)
    if len(projects) == 1:
        return redirect("dashboard:overview", project_slug=projects[0].slug)
    return render(request, "dashboard/projects.html", {"projects": projects})
