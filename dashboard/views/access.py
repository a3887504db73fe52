"""Who may see and do what in the dashboard.

Every dashboard view takes the project's slug from the URL and is wrapped in `project_view`:
a user outside the project gets 404 (its existence is not revealed), a user whose role is
too low for the view gets 403.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404

from feedback.selectors import role_allows, role_for
from flywheel.models import Project


def project_view(required_role: str):
    """Decorate `view(request, project, ...)`; sets request.project and request.role."""

    def decorate(view):
        @login_required
        @wraps(view)
        def wrapper(request, project_slug: str, *args, **kwargs):
            project = get_object_or_404(Project, slug=project_slug)
            role = role_for(user=request.user, project=project)
            if role is None:
                raise Http404("No such project")
            if not role_allows(role, required_role):
                raise PermissionDenied(f"This needs the {required_role} role")
            request.project, request.role = project, role
            return view(request, project, *args, **kwargs)

        return wrapper

    return decorate
