"""The rating widget's demo page: a small chat answered on the server by the chat service (so
no secret key reaches the browser), with every answer rated through the real widget."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from feedback.selectors import projects_for_user, role_allows, role_for
from flywheel.generation import GenerationError, GenerationParameters
from flywheel.models import ApiKey, Interaction, Project
from flywheel.services import api_key_create, api_key_revoke
from flywheel.services.chat import (
    ChatRequest,
    chat_complete,
    chat_prepare,
    default_retrieval_options,
)
from flywheel.validation import CheckedFormMixin

# Session entries, by project id.
DEMO_KEYS_SESSION = "widget_demo_public_keys"
CONVERSATIONS_SESSION = "widget_demo_conversations"
# Turns of the conversation kept and handed to the model with the next question.
CONVERSATION_TURNS = 10


class QuestionForm(CheckedFormMixin, forms.Form):
    question = forms.CharField(max_length=2000, strip=True)


def projects_administered(user) -> list[Project]:
    return [
        project
        for project in projects_for_user(user=user)
        if role_allows(role_for(user=user, project=project), "admin")
    ]


def demo_project(request: HttpRequest) -> Project:
    """The project named by ?project=<slug>, or the first one the user administers."""
    slug = request.GET.get("project")
    if not slug:
        administered = projects_administered(request.user)
        if not administered:
            raise PermissionDenied("The widget demo needs the admin role in a project")
        return administered[0]
    project = Project.objects.filter(slug=slug).first()
    role = role_for(user=request.user, project=project) if project else None
    if role is None:
        raise Http404("No such project")  # its existence is not revealed
    if not role_allows(role, "admin"):
        raise PermissionDenied("The widget demo needs the admin role")
    return project


def demo_public_key(request: HttpRequest, project: Project) -> str:
    """A public key allowed from this site's origin, for the widget on this page.

    A key's raw value is shown only once, at creation, and the page needs it on every visit;
    so the value lives in the user's session and nowhere else. A session without one (a new
    login) cannot recover the existing demo key's value: that key is revoked and replaced, so
    at most one demo key per project and origin is ever active. Public keys only rate, and the
    page hands the value to every visitor's browser anyway, so a session is a safe place for it.
    """
    origin = request.build_absolute_uri("/").rstrip("/")
    keys = request.session.get(DEMO_KEYS_SESSION, {})
    raw_key = keys.get(str(project.pk))
    if (
        raw_key
        and ApiKey.objects.filter(
            project=project,
            key_hash=ApiKey.hash_key(raw_key),
            allowed_origins__contains=[origin],
            revoked_at__isnull=True,
        ).exists()
    ):
        return raw_key
    name = f"Widget demo page ({origin})"
    with transaction.atomic():
        # Concurrent first visits take turns, so that only one demo key stays active.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        for old_key in ApiKey.objects.filter(
            project=project, kind=ApiKey.Kind.PUBLIC, name=name, revoked_at__isnull=True
        ):
            api_key_revoke(api_key=old_key)
        raw_key = api_key_create(
            project=project, kind=ApiKey.Kind.PUBLIC, name=name, allowed_origins=[origin]
        ).raw_key
    request.session[DEMO_KEYS_SESSION] = keys | {str(project.pk): raw_key}
    return raw_key


def conversation_ids(request: HttpRequest, project: Project) -> list[str]:
    return request.session.get(CONVERSATIONS_SESSION, {}).get(str(project.pk), [])


def conversation_ids_save(request: HttpRequest, project: Project, ids: list[str]) -> None:
    conversations = request.session.get(CONVERSATIONS_SESSION, {})
    request.session[CONVERSATIONS_SESSION] = conversations | {str(project.pk): ids}


def conversation(request: HttpRequest, project: Project) -> list[Interaction]:
    return list(
        Interaction.objects.filter(
            project=project, pk__in=conversation_ids(request, project)
        ).order_by("created_at")
    )


def question_answer(request: HttpRequest, project: Project, question: str) -> Interaction:
    earlier_turns = []
    for turn in conversation(request, project):
        earlier_turns += [
            {"role": "user", "content": turn.query_text},
            {"role": "assistant", "content": turn.response},
        ]
    chat_request = ChatRequest(
        messages=[*earlier_turns, {"role": "user", "content": question}],
        parameters=GenerationParameters(max_tokens=settings.FLYWHEEL_GENERATION_MAX_TOKENS),
        retrieval=default_retrieval_options(),
        end_user_id=f"widget-demo:{request.user.get_username()}",
        metadata={"page": "widget_demo"},
    )
    prepared = chat_prepare(project=project, request=chat_request)
    return chat_complete(prepared=prepared).interaction


@login_required
@require_http_methods(["GET", "POST"])
def widget_demo(request: HttpRequest) -> HttpResponse:
    project = demo_project(request)
    page_url = f"{reverse('widget_demo')}?project={project.slug}"
    form = QuestionForm(request.POST or None)
    if request.method == "POST":
        if request.POST.get("action") == "restart":
            conversation_ids_save(request, project, [])
            return redirect(page_url)
        if form.is_valid():
            try:
                answered = question_answer(request, project, form.cleaned_data["question"])
            except GenerationError as error:
                messages.error(request, f"The model could not answer: {error}")
            else:
                ids = [*conversation_ids(request, project), str(answered.pk)]
                conversation_ids_save(request, project, ids[-CONVERSATION_TURNS:])
                return redirect(page_url)
    return render(
        request,
        "widget/demo.html",
        {
            "project": project,
            "administered": projects_administered(request.user),
            "form": form,
            "turns": conversation(request, project),
            "public_key": demo_public_key(request, project),
            # Unversioned, unlike {% static %} under the manifest storage: for other sites.
            "widget_url": request.build_absolute_uri(f"{settings.STATIC_URL}flywheel/widget.js"),
        },
    )
