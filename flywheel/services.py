"""Writes of the serving core. Keyword-only, typed, named <entity>_<action>."""

from dataclasses import dataclass
from pathlib import Path

from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone

from flywheel.models import Document, Project

CONTENT_TYPE_BY_SUFFIX = {
    ".txt": Document.ContentType.TEXT,
    ".md": Document.ContentType.MARKDOWN,
    ".markdown": Document.ContentType.MARKDOWN,
    ".html": Document.ContentType.HTML,
    ".htm": Document.ContentType.HTML,
}


def expired_sessions_clear() -> int:
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted


def project_get_or_create(*, slug: str, name: str, description: str = "") -> tuple[Project, bool]:
    return Project.objects.get_or_create(
        slug=slug, defaults={"name": name, "description": description}
    )


@dataclass(frozen=True)
class DocumentUpsertResult:
    document: Document
    outcome: str  # "created", "updated" or "unchanged"


def document_upsert(
    *,
    project: Project,
    source_uri: str,
    title: str,
    content: str,
    content_type: str,
    metadata: dict | None = None,
) -> DocumentUpsertResult:
    content_hash = Document.hash_content(content_type=content_type, content=content)
    with transaction.atomic():
        existing = (
            Document.objects.select_for_update()
            .filter(project=project, source_uri=source_uri)
            .first()
        )
        if existing is None:
            document = Document.objects.create(
                project=project,
                source_uri=source_uri,
                title=title,
                content=content,
                content_type=content_type,
                metadata=metadata or {},
                content_hash=content_hash,
            )
            return DocumentUpsertResult(document=document, outcome="created")
        if (
            existing.content_hash == content_hash
            and existing.title == title
            and (existing.metadata == (metadata or {}))
        ):
            return DocumentUpsertResult(document=existing, outcome="unchanged")
        existing.title = title
        existing.content = content
        existing.content_type = content_type
        existing.metadata = metadata or {}
        existing.content_hash = content_hash
        existing.save()
        return DocumentUpsertResult(document=existing, outcome="updated")


def _title_from_text(*, path: Path, content: str) -> str:
    for line in content.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip() or path.stem
        if stripped:
            break
    return path.stem.replace("-", " ").replace("_", " ").strip().capitalize()


def documents_load_folder(*, project: Project, folder: Path) -> list[DocumentUpsertResult]:
    """Add every text, Markdown and HTML file under `folder`; the relative path is the URI."""
    results = []
    for path in sorted(folder.rglob("*")):
        content_type = CONTENT_TYPE_BY_SUFFIX.get(path.suffix.lower())
        if not path.is_file() or content_type is None:
            continue
        content = path.read_text(encoding="utf-8")
        results.append(
            document_upsert(
                project=project,
                source_uri=path.relative_to(folder).as_posix(),
                title=_title_from_text(path=path, content=content),
                content=content,
                content_type=content_type,
            )
        )
    return results


@dataclass(frozen=True)
class DemoBootstrapResult:
    project: Project
    document_counts: dict[str, int]
    admin_password: str | None  # only when the admin user was created by this call


def admin_user_ensure(*, username: str) -> str | None:
    """Create a superuser with a fresh random password; return it, or None if one exists."""
    import secrets

    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    return password


def demo_bootstrap(*, admin_username: str, knowledge_base: Path) -> DemoBootstrapResult:
    project, _ = project_get_or_create(
        slug="demo",
        name="Demo: Quillmate support",
        description="Support assistant for Quillmate, a fictional note-taking app.",
    )
    counts: dict[str, int] = {}
    for result in documents_load_folder(project=project, folder=knowledge_base):
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return DemoBootstrapResult(
        project=project,
        document_counts=counts,
        admin_password=admin_user_ensure(username=admin_username),
    )
