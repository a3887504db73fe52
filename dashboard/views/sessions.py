"""One conversation: every interaction logged with the same session id."""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_safe

from dashboard.selectors.sessions import session_get
from dashboard.views.access import project_view


@project_view("viewer")
@require_safe
def session_detail(request, project, session_id: str):
    session = session_get(project=project, session_id=session_id)
    if session is None:
        raise Http404("No interaction of this project belongs to that session.")
    return render(
        request,
        "dashboard/session_detail.html",
        {"project": project, "role": request.role, "section": "interactions", "session": session},
    )
