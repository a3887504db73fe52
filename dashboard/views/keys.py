"""API key management for a project's admins: list, create (the raw key is shown once) and
revoke. Writes go through flywheel.services.api_keys."""

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from dashboard.selectors.keys import api_key_get, api_keys_for_project
from dashboard.views.access import project_view
from flywheel.models import ApiKey
from flywheel.services import api_key_create, api_key_revoke
from flywheel.services.api_keys import ApiKeyInvalid
from flywheel.validation import CheckedFormMixin


class ApiKeyCreateForm(CheckedFormMixin, forms.Form):
    """What the admin asks for; whether it is a valid key is the service's rule
    (api_key_create), whose refusal lands on the field it names."""

    name = forms.CharField(max_length=200, help_text="Which app or site uses the key.")
    kind = forms.ChoiceField(
        choices=ApiKey.Kind.choices, initial=ApiKey.Kind.SECRET, widget=forms.RadioSelect
    )
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do. None ticked: a secret key gets what an app that serves "
        "and logs needs (chat, log, read, rate), a public key rate, the only scope it may have. "
        "Datasets, jobs and versions administer the project.",
    )
    allowed_origins = forms.CharField(
        required=False,
        label="Allowed origins",
        help_text="Public keys only: one origin per line, e.g. https://app.example.com",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def origins(self) -> list[str]:
        return self.cleaned_data["allowed_origins"].splitlines()

    def chosen_scopes(self) -> list[str] | None:
        """The scopes ticked; None (none ticked) gives the kind's default scopes."""
        return self.cleaned_data["scopes"] or None


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
    try:
        created = api_key_create(
            project=project,
            kind=form.cleaned_data["kind"],
            name=form.cleaned_data["name"],
            allowed_origins=form.origins(),
            scopes=form.chosen_scopes(),
        )
    except ApiKeyInvalid as invalid:
        form.add_error(invalid.field, invalid.message)
        return render(request, "dashboard/keys.html", _keys_context(request, project, form))
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
