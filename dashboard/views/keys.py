"""API key management for a project's admins: list, create (the raw key is shown once) and
revoke. Writes go through flywheel.services.api_keys."""

from urllib.parse import urlsplit

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from dashboard.selectors.keys import api_key_get, api_keys_for_project
from dashboard.views.access import project_view
from flywheel.models import ApiKey
from flywheel.services import api_key_create, api_key_revoke

_http_url = URLValidator(schemes=["http", "https"])


def is_web_origin(value: str) -> bool:
    """scheme://host[:port] and nothing more: what a browser sends in its Origin header."""
    try:
        _http_url(value)
    except ValidationError:
        return False
    parts = urlsplit(value)
    return (
        parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and parts.username is None
        and parts.password is None
    )


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Which app or site uses the key.")
    kind = forms.ChoiceField(
        choices=ApiKey.Kind.choices, initial=ApiKey.Kind.SECRET, widget=forms.RadioSelect
    )
    allowed_origins = forms.CharField(
        required=False,
        label="Allowed origins",
        help_text="Public keys only: one origin per line, e.g. https://app.example.com",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def clean_allowed_origins(self) -> list[str]:
        origins = [line.strip() for line in self.cleaned_data["allowed_origins"].splitlines()]
        origins = [origin for origin in origins if origin]
        invalid = [origin for origin in origins if not is_web_origin(origin)]
        if invalid:
            raise ValidationError(
                "Not an http(s) origin (scheme://host[:port], no path): %(origins)s",
                params={"origins": ", ".join(invalid)},
            )
        return origins

    def clean(self):
        cleaned = super().clean()
        kind, origins = cleaned.get("kind"), cleaned.get("allowed_origins")
        if origins is None:  # already refused above
            return cleaned
        if kind == ApiKey.Kind.PUBLIC and not origins:
            self.add_error(
                "allowed_origins",
                "A public key needs at least one allowed origin: the sites its widget runs on.",
            )
        if kind == ApiKey.Kind.SECRET and origins:
            self.add_error(
                "allowed_origins",
                "Secret keys are used from servers and take no origins; choose a public key.",
            )
        return cleaned


def _keys_context(request, project, form: ApiKeyCreateForm) -> dict:
    return {
        "project": project,
        "role": request.role,
        "section": "keys",
        "form": form,
        "api_keys": api_keys_for_project(project=project),
    }


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def keys(request, project):
    if request.method != "POST":
        return render(
            request, "dashboard/keys.html", _keys_context(request, project, ApiKeyCreateForm())
        )
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return render(request, "dashboard/keys.html", _keys_context(request, project, form))
    created = api_key_create(
        project=project,
        kind=form.cleaned_data["kind"],
        name=form.cleaned_data["name"],
        allowed_origins=form.cleaned_data["allowed_origins"],
    )
    # The raw key exists only in this response: it is not stored, so it can never be shown
    # again, and no cache may keep it.
    response = render(
        request,
        "dashboard/keys_created.html",
        {
            "project": project,
            "role": request.role,
            "section": "keys",
            "api_key": created.api_key,
            "raw_key": created.raw_key,
        },
    )
    add_never_cache_headers(response)
    return response


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def key_revoke(request, project, api_key_id: int):
    """GET asks for confirmation; POST revokes."""
    api_key = api_key_get(project=project, api_key_id=api_key_id)
    if api_key is None:
        raise Http404("No such API key in this project")
    if request.method == "POST":
        api_key_revoke(api_key=api_key)
        messages.success(request, f"Revoked the key “{api_key.name}”; it no longer works.")
        return redirect("dashboard:keys", project_slug=project.slug)
    return render(
        request,
        "dashboard/keys_revoke.html",
        {"project": project, "role": request.role, "section": "keys", "api_key": api_key},
    )
