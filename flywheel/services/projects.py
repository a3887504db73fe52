import secrets
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model

from flywheel.models import ApiKey, Project
from flywheel.services.api_keys import api_key_create
from flywheel.services.documents import documents_load_folder
from flywheel.services.indexing import document_index


def project_get_or_create(*, slug: str, name: str, description: str = "") -> tuple[Project, bool]:
    return Project.objects.get_or_create(
        slug=slug, defaults={"name": name, "description": description}
    )


def admin_user_ensure(*, username: str) -> str | None:
    """Create a superuser with a fresh random password; return it, or None if one exists."""
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    return password


@dataclass(frozen=True)
class DemoBootstrapResult:
    project: Project
    document_counts: dict[str, int]
    admin_password: str | None  # only when the admin user was created by this call
    # The raw keys, only when this call created them: the app's (what an app that serves and
    # logs needs) and the admin's (every scope: datasets, jobs, versions too).
    app_key: str | None
    admin_key: str | None


def demo_bootstrap(*, admin_username: str, knowledge_base: Path) -> DemoBootstrapResult:
    """The demo `make run` shows: a project, its knowledge base indexed, an admin user.

    Indexing runs here rather than on a worker: the workers start only after this returns.
    """
    project, _ = project_get_or_create(
        slug="demo",
        name="Demo: Quillmate support",
        description="Support assistant for Quillmate, a fictional note-taking app.",
    )
    counts: dict[str, int] = {}
    for result in documents_load_folder(project=project, folder=knowledge_base):
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
        document_index(document_id=result.document.pk)
    return DemoBootstrapResult(
        project=project,
        document_counts=counts,
        admin_password=admin_user_ensure(username=admin_username),
        app_key=_demo_key_ensure(project=project, name=DEMO_APP_KEY_NAME, scopes=None),
        admin_key=_demo_key_ensure(
            project=project, name=DEMO_ADMIN_KEY_NAME, scopes=ApiKey.Scope.values
        ),
    )


DEMO_APP_KEY_NAME = "demo"
DEMO_ADMIN_KEY_NAME = "demo-admin"


def _demo_key_ensure(*, project: Project, name: str, scopes: list[str] | None) -> str | None:
    """A secret key of that name, created once (None when it exists: its value is gone)."""
    if ApiKey.objects.filter(project=project, kind=ApiKey.Kind.SECRET, name=name).exists():
        return None
    return api_key_create(
        project=project, kind=ApiKey.Kind.SECRET, name=name, scopes=scopes
    ).raw_key
