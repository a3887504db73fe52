"""Model and index versions in the dashboard: what each is made of and where it came from,
and, for admins, the pointer switches: promote, reject and roll back a model version, activate
and roll back an index version.

Each switch is a GET that asks for confirmation and says what will happen, then a POST that
does it through retrain.promotion, whose rules decide: a switch they refuse (a promotion
without evidence or reason, an index still building, nothing to roll back to) is shown with
their reason instead, as is a rollback whose target changed since it was confirmed."""

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_safe

from dashboard.selectors.versions import (
    VERSIONS_LISTED,
    index_version_get,
    index_versions_for_project,
    model_version_get,
    model_versions_for_project,
)
from dashboard.views.access import project_view
from flywheel.models import IndexVersion, ModelVersion
from retrain.promotion import (
    PROMOTE,
    experiment_decision,
    gate_decision,
    index_version_activate,
    index_version_previous,
    index_version_rollback,
    model_version_previous,
    model_version_promote,
    model_version_reject,
    model_version_rollback,
)
from retrain.transitions import TransitionRefused

PROMOTABLE = (
    ModelVersion.Status.CANDIDATE,
    ModelVersion.Status.RETIRED,
    ModelVersion.Status.REJECTED,
)
REJECTABLE = (ModelVersion.Status.CANDIDATE,)
ACTIVATABLE = (IndexVersion.Status.READY, IndexVersion.Status.RETIRED)


@project_view("viewer")
@require_safe
def versions(request, project):
    return render(
        request,
        "dashboard/versions.html",
        {
            "project": project,
            "role": request.role,
            "section": "versions",
            "model_versions": model_versions_for_project(project=project),
            "index_versions": index_versions_for_project(project=project),
            "model_rollback_target": model_version_previous(project=project),
            "index_rollback_target": index_version_previous(project=project),
            "promotable": PROMOTABLE,
            "rejectable": REJECTABLE,
            "activatable": ACTIVATABLE,
            "versions_listed": VERSIONS_LISTED,
        },
    )


@dataclass(frozen=True)
class Switch:
    """One pointer switch as its confirmation page presents it."""

    question: str
    consequence: str
    button: str
    done: str
    # Does it, given the POST; raises TransitionRefused when the rules refuse it.
    perform: Callable[[dict], object]
    # Why the switch cannot be made now; empty when it can.
    refusal: str = ""
    # A promotion asks why; `reason_note` says whether a reason is needed.
    asks_reason: bool = False
    reason_note: str = ""
    # The version a rollback goes to, as the confirmation page named it.
    target_id: int | None = None
    dangerous: bool = False


def _confirm_or_switch(request, project, switch: Switch):
    context = {"project": project, "role": request.role, "section": "versions", "switch": switch}
    if request.method != "POST":
        return render(request, "dashboard/version_confirm.html", context)
    if switch.refusal:
        messages.warning(request, switch.refusal)
        return redirect("dashboard:versions", project_slug=project.slug)
    try:
        switch.perform(request.POST)
    except TransitionRefused as refused:
        if switch.asks_reason and refused.code == "promotion_reason_required":
            # The admin can still give the reason: ask again, with the rule's words.
            context |= {"reason_error": refused.message, "reason": request.POST.get("reason")}
            return render(request, "dashboard/version_confirm.html", context, status=400)
        messages.warning(request, refused.message)
    else:
        messages.success(request, switch.done)
    return redirect("dashboard:versions", project_slug=project.slug)


def _target_changed(request, target) -> bool:
    """A rollback POST names the version its confirmation page showed; another switch since
    then makes a different version the target, which the admin never confirmed."""
    return request.method == "POST" and request.POST.get("target") != str(target.pk)


def _model_version_or_404(project, version_id: int) -> ModelVersion:
    version = model_version_get(project=project, version_id=version_id)
    if version is None:
        raise Http404("No such model version in this project")
    return version


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def model_version_promote_confirm(request, project, version_id: int):
    version = _model_version_or_404(project, version_id)
    decision = gate_decision(version)
    if experiment_decision(version) == PROMOTE:
        reason_note = "It won a canary experiment on live ratings; a reason is optional."
    elif decision == PROMOTE:
        reason_note = "Its evaluation recommends it; a reason is optional."
    elif decision:
        reason_note = f"Its evaluation decided “{decision}”: promoting it anyway needs a reason."
    else:
        reason_note = "It was never evaluated: promoting it by hand needs a reason."
    return _confirm_or_switch(
        request,
        project,
        Switch(
            question=f"Promote {version.name} to production?",
            consequence="Serving answers with it from the next request on; the current production "
            "version is retired and stays available for a rollback.",
            button=f"Promote {version.name}",
            done=f"{version.name} is now in production.",
            perform=lambda data: model_version_promote(
                version=version, reason=data.get("reason", ""), user=request.user
            ),
            asks_reason=True,
            reason_note=reason_note,
        ),
    )


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def model_version_reject_confirm(request, project, version_id: int):
    version = _model_version_or_404(project, version_id)
    return _confirm_or_switch(
        request,
        project,
        Switch(
            question=f"Reject {version.name}?",
            consequence="It leaves the candidates; it is kept, and can still be promoted later.",
            button=f"Reject {version.name}",
            done=f"Rejected {version.name}.",
            perform=lambda data: model_version_reject(version=version),
            dangerous=True,
        ),
    )


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def model_version_rollback_confirm(request, project):
    target = model_version_previous(project=project)
    refusal = ""
    if target is not None and _target_changed(request, target):
        refusal = "The model versions changed since you confirmed; look at them again."
    name = target.name if target else ""
    return _confirm_or_switch(
        request,
        project,
        Switch(
            question=f"Roll production back to {name}?" if target else "Roll back production?",
            consequence=f"{name} was production before the current version; it serves again from "
            "the next request on, and the current version is retired.",
            button=f"Roll back to {name}",
            done=f"Rolled back: {name} is in production again.",
            perform=lambda data: model_version_rollback(project=project, user=request.user),
            refusal=refusal,
            target_id=target.pk if target else None,
            dangerous=True,
        ),
    )


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def index_version_activate_confirm(request, project, version_id: int):
    version = index_version_get(project=project, version_id=version_id)
    if version is None:
        raise Http404("No such index version in this project")
    return _confirm_or_switch(
        request,
        project,
        Switch(
            question=f"Activate index v{version.number}?",
            consequence="Retrieval reads it from the next request on; the active version is "
            "retired and stays available for a rollback.",
            button=f"Activate v{version.number}",
            done=f"Index v{version.number} is now active.",
            perform=lambda data: index_version_activate(version=version),
        ),
    )


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def index_version_rollback_confirm(request, project):
    target = index_version_previous(project=project)
    refusal = ""
    if target is not None and _target_changed(request, target):
        refusal = "The index versions changed since you confirmed; look at them again."
    number = target.number if target else None
    return _confirm_or_switch(
        request,
        project,
        Switch(
            question=f"Roll the index back to v{number}?" if target else "Roll back the index?",
            consequence=f"v{number} was active before the current version; retrieval reads it "
            "again from the next request on, and the current version is retired.",
            button=f"Roll back to v{number}",
            done=f"Rolled back: index v{number} is active again.",
            perform=lambda data: index_version_rollback(project=project),
            refusal=refusal,
            target_id=target.pk if target else None,
            dangerous=True,
        ),
    )
