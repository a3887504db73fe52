"""Reads of the feedback app."""

from flywheel.models import Project

ROLE_RANK = {"viewer": 1, "reviewer": 2, "admin": 3}


def projects_for_user(*, user) -> list[Project]:
    """The projects a dashboard user may see, by name."""
    if user.is_superuser:
        return list(Project.objects.order_by("name"))
    return list(Project.objects.filter(memberships__user=user).order_by("name"))


def role_for(*, user, project: Project) -> str | None:
    """The user's role in the project (superusers are admins everywhere), or None."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return "admin"
    from feedback.models import ProjectMembership

    membership = ProjectMembership.objects.filter(user=user, project=project).first()
    return membership.role if membership else None


def role_allows(role: str | None, required: str) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[required]
