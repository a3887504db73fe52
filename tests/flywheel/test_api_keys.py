"""Keys are stored hashed, scoped, revocable, and record their last use."""

import importlib
import json
import uuid

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.urls import reverse

from flywheel.models import ApiKey, Interaction
from flywheel.services import api_key_create, api_key_revoke
from flywheel.services.api_keys import ApiKeyInvalid, is_web_origin
from tests.conftest import bearer

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
LOG = {"interactions": [{"messages": [{"role": "user", "content": "q"}], "response": "a"}]}


@pytest.mark.django_db
def test_only_the_hash_of_a_key_is_stored_and_the_prefix_tells_its_kind(project):
    secret = api_key_create(project=project, kind="secret", name="server")
    public = api_key_create(
        project=project, kind="public", name="widget", allowed_origins=["https://App.example/"]
    )

    assert secret.raw_key.startswith("fw_sk_") and public.raw_key.startswith("fw_pk_")
    stored = ApiKey.objects.get(pk=secret.api_key.pk)
    assert secret.raw_key not in {stored.key_hash, stored.display_prefix}
    assert stored.key_hash == ApiKey.hash_key(secret.raw_key)
    assert public.api_key.allowed_origins == ["https://app.example"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/v1/chat/completions", CHAT),
        ("post", "/api/v1/interactions", LOG),
        ("get", f"/api/v1/interactions/{uuid.uuid4()}", None),
        ("post", "/api/v1/documents", {"documents": []}),
    ],
)
def test_a_public_key_can_not_chat_log_or_read(client, public_key, method, path, body):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body else {}

    response = getattr(client, method)(path, **kwargs, **bearer(public_key))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "public_key_not_allowed"
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_unknown_missing_and_revoked_keys_get_401(client, project, secret_key):
    post = lambda **headers: client.post(  # noqa: E731
        "/api/v1/interactions", data=json.dumps(LOG), content_type="application/json", **headers
    )
    assert post(**bearer("fw_sk_not-a-key")).json()["error"]["code"] == "invalid_api_key"
    assert post().json()["error"]["code"] == "missing_api_key"

    api_key_revoke(api_key=ApiKey.objects.get(key_hash=ApiKey.hash_key(secret_key)))
    revoked = post(**bearer(secret_key))

    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "revoked_api_key"
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_a_successful_call_records_the_keys_last_use(client, project, secret_key):
    key = ApiKey.objects.get(key_hash=ApiKey.hash_key(secret_key))
    assert key.last_used_at is None

    client.post(
        "/api/v1/interactions",
        data=json.dumps(LOG),
        content_type="application/json",
        **bearer(secret_key),
    )

    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.django_db
def test_the_management_command_prints_a_working_key(client, project, capsys):
    call_command("create_api_key", project=project.slug, name="cli", kind="secret")
    raw_key = capsys.readouterr().out.strip()

    response = client.post(
        "/api/v1/interactions",
        data=json.dumps(LOG),
        content_type="application/json",
        **bearer(raw_key),
    )

    assert response.status_code == 201


# ---------------------------------------------------------------------------------------------
# Creation rules: one service decides, every entry point shows its refusal


@pytest.mark.parametrize(
    "origin, accepted",
    [
        ("https://app.example", True),
        ("http://localhost:3000", True),
        ("http://intranet-host:8080/", True),
        ("http://[::1]:8000", True),
        ("https://app.example/widget", False),
        ("https://app.example?from=x", False),
        ("https://app.example#top", False),
        ("https://user@app.example", False),
        ("ftp://app.example", False),
        ("app.example", False),
        ("https://app.example:99999", False),
        ("https://under_score.example", False),
    ],
)
def test_an_origin_is_a_scheme_a_host_and_an_optional_port(origin, accepted):
    assert is_web_origin(origin) is accepted


@pytest.mark.django_db
def test_a_new_secret_key_gets_the_default_scopes_and_a_public_key_rate(project):
    secret = api_key_create(project=project, kind="secret", name="app").api_key
    public = api_key_create(
        project=project, kind="public", name="w", allowed_origins=["https://a.example"]
    ).api_key
    chosen = api_key_create(
        project=project, kind="secret", name="ops", scopes=["versions", "jobs", "jobs"]
    ).api_key

    assert secret.scopes == ["chat", "log", "read", "rate"]
    assert public.scopes == ["rate"]
    assert chosen.scopes == ["jobs", "versions"]


REFUSED_KEYS = [
    (
        {"kind": "public", "scopes": ["rate", "chat"], "origins": ["https://a.example"]},
        "A public key can only rate: its one scope is 'rate'. Use a secret key from a server "
        "for anything else.",
    ),
    (
        {"kind": "secret", "scopes": None, "origins": ["https://a.example"]},
        "Secret keys are used from servers and take no origins; choose a public key.",
    ),
    (
        {"kind": "public", "scopes": None, "origins": ["https://a.example/widget?x=1"]},
        "Not an http(s) origin (scheme://host[:port], no path or query): "
        "https://a.example/widget?x=1",
    ),
    (
        {"kind": "public", "scopes": None, "origins": []},
        "A public key needs at least one allowed origin: the sites its widget runs on.",
    ),
]


def _refusal_by_service(project, kind, scopes, origins) -> str:
    with pytest.raises(ApiKeyInvalid) as refused:
        api_key_create(project=project, kind=kind, name="k", allowed_origins=origins, scopes=scopes)
    return refused.value.message


def _refusal_by_dashboard(client, project, kind, scopes, origins) -> str:
    response = client.post(
        reverse("dashboard:keys", args=[project.slug]),
        {
            "name": "k",
            "kind": kind,
            "scopes": scopes or [],
            "allowed_origins": "\n".join(origins),
        },
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    return " ".join(message for messages in errors.values() for message in messages)


def _refusal_by_admin(client, project, kind, scopes, origins) -> str:
    response = client.post(
        reverse("admin:flywheel_apikey_add"),
        {
            "project": project.pk,
            "kind": kind,
            "name": "k",
            "scope_choices": scopes or [],
            "allowed_origins_text": "\n".join(origins),
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    return " ".join(message for messages in errors.values() for message in messages)


def _refusal_by_command(project, kind, scopes, origins) -> str:
    arguments = ["--project", project.slug, "--kind", kind, "--name", "k"]
    arguments += [f"--scope={scope}" for scope in scopes or []]
    arguments += [f"--origin={origin}" for origin in origins]
    with pytest.raises(CommandError) as refused:
        call_command("create_api_key", *arguments)
    return str(refused.value)


@pytest.mark.django_db
@pytest.mark.parametrize("fields, message", REFUSED_KEYS)
def test_a_key_the_rules_refuse_is_refused_alike_everywhere(client, project, fields, message):
    kind, scopes, origins = fields["kind"], fields["scopes"], fields["origins"]
    client.force_login(
        get_user_model().objects.create_superuser(username="root", password="pw-root")
    )

    assert _refusal_by_service(project, kind, scopes, origins) == message
    assert _refusal_by_dashboard(client, project, kind, scopes, origins) == message
    assert _refusal_by_admin(client, project, kind, scopes, origins) == message
    assert _refusal_by_command(project, kind, scopes, origins) == message
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_dashboard_and_the_admin_create_keys_with_the_chosen_scopes(client, project):
    client.force_login(
        get_user_model().objects.create_superuser(username="root", password="pw-root")
    )

    client.post(
        reverse("dashboard:keys", args=[project.slug]),
        {"name": "ops", "kind": "secret", "scopes": ["jobs", "datasets"]},
    )
    client.post(
        reverse("admin:flywheel_apikey_add"),
        {"project": project.pk, "kind": "secret", "name": "admin-made", "scope_choices": []},
    )
    call_command("create_api_key", "--project", project.slug, "--name", "cli", "--scope=versions")

    scopes = dict(ApiKey.objects.values_list("name", "scopes"))
    assert scopes == {
        "ops": ["datasets", "jobs"],
        "admin-made": ["chat", "log", "read", "rate"],
        "cli": ["versions"],
    }


@pytest.mark.django_db
def test_keys_made_before_scopes_keep_what_they_could_do(project):
    secret = api_key_create(project=project, kind="secret", name="old-server").api_key
    public = api_key_create(
        project=project, kind="public", name="old-widget", allowed_origins=["https://a.example"]
    ).api_key
    ApiKey.objects.update(scopes=[])  # as the column was added
    migration = importlib.import_module("flywheel.migrations.0004_api_key_scopes")

    migration.existing_keys_scope(django_apps, schema_editor=None)

    secret.refresh_from_db()
    public.refresh_from_db()
    assert (secret.scopes, public.scopes) == (["chat", "log", "read", "rate"], ["rate"])


@pytest.mark.django_db
def test_the_database_refuses_a_public_key_with_more_than_rate(project):
    public = api_key_create(
        project=project, kind="public", name="w", allowed_origins=["https://a.example"]
    ).api_key

    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=public.pk).update(scopes=["rate", "chat"])
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=public.pk).update(kind="secret", scopes=["admin"])
