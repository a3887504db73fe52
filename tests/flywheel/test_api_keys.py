"""Keys are stored hashed, scoped, revocable, and record their last use."""

import json
import uuid

import pytest
from django.core.management import call_command

from flywheel.models import ApiKey, Interaction
from flywheel.services import api_key_create, api_key_revoke
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
