"""/v1/chat/completions with the official `openai` client, over real HTTP, with the real models.

The live server runs in this process, so these tests use committed (transactional) data.
"""

import json

import openai
import pytest

from flywheel.models import GenerationBackend, IndexVersion, Interaction, ModelVersion
from flywheel.services import api_key_create
from tests.conftest import DEMO_KNOWLEDGE_BASE, bearer, index_folder
from tests.factories import ProjectFactory

QUESTION = "How long does a deleted note stay in the bin?"


@pytest.fixture
def demo_project(transactional_db):
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    return project


@pytest.fixture
def openai_client(live_server, demo_project):
    key = api_key_create(project=demo_project, kind="secret", name="app").raw_key
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)


def test_the_openai_client_gets_a_grounded_answer_and_the_call_is_logged(
    openai_client, demo_project
):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="flywheel",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=40,
        user="end-user-42",
    )
    completion = raw.parse()

    answer = completion.choices[0].message.content
    assert "30" in answer
    extension = completion.model_extra["flywheel"]
    interaction_id = raw.headers["X-Flywheel-Interaction-Id"]
    assert extension["interaction_id"] == interaction_id
    assert extension["citations"][0]["source_uri"] == "security.md"
    assert completion.usage.completion_tokens > 0

    logged = Interaction.objects.get(pk=interaction_id)
    assert logged.project == demo_project
    assert logged.source == Interaction.Source.CHAT
    assert logged.response == answer
    assert logged.query_text == QUESTION
    assert logged.end_user_id == "end-user-42"
    assert logged.query_embedding is not None and len(logged.query_embedding) == 384
    assert logged.model_version.status == ModelVersion.Status.PRODUCTION
    assert logged.index_version == IndexVersion.objects.get(project=demo_project)
    first = logged.retrieved[0]
    assert (first["rank"], first["source_uri"]) == (1, "security.md")
    assert first["index_version_id"] == logged.index_version_id and first["score"] > 0
    assert logged.prompt_tokens == completion.usage.prompt_tokens
    assert logged.latency_ms > 0
    assert set(logged.metadata["flywheel"]["timings_ms"]) >= {
        "embed_ms",
        "retrieve_ms",
        "generate_ms",
    }


def test_streaming_with_the_openai_client_delivers_the_logged_answer(openai_client):
    stream = openai_client.chat.completions.create(
        model="flywheel",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, extension, usage = [], [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish_reasons.append(choice.finish_reason)
        extension = (chunk.model_extra or {}).get("flywheel") or extension

    assert len([piece for piece in pieces if piece]) > 1, "the answer arrives in pieces"
    assert finish_reasons[-1] in {"stop", "length"}
    logged = Interaction.objects.get(pk=extension["interaction_id"])
    assert logged.response == "".join(pieces).strip()
    assert usage.completion_tokens == logged.completion_tokens > 0
    assert extension["citations"][0]["source_uri"] == "security.md"


def test_rag_can_be_switched_off_per_request(openai_client):
    completion = openai_client.chat.completions.create(
        model="flywheel",
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=8,
        extra_body={"flywheel": {"rag": False, "metadata": {"experiment": "no-rag"}}},
    )

    logged = Interaction.objects.get(pk=completion.model_extra["flywheel"]["interaction_id"])
    assert logged.retrieved == [] and logged.index_version is None
    assert logged.metadata["experiment"] == "no-rag"


def test_the_openai_client_sees_our_errors_as_its_own(openai_client, live_server):
    with pytest.raises(openai.BadRequestError) as bad_request:
        openai_client.chat.completions.create(model="flywheel", messages=[], max_tokens=8)
    assert bad_request.value.body["param"] == "messages"

    revoked = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="fw_sk_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        revoked.chat.completions.create(
            model="flywheel", messages=[{"role": "user", "content": "hi"}]
        )
    assert not Interaction.objects.exists()


def test_a_project_can_be_served_by_a_remote_openai_compatible_server(
    live_server, demo_project, settings
):
    """The remote backend, tested against a real OpenAI-compatible server: this very one,
    serving the demo project. The proxying project has no documents of its own."""
    upstream_key = api_key_create(project=demo_project, kind="secret", name="upstream").raw_key
    settings.FLYWHEEL_REMOTE_API_KEY = upstream_key
    proxy = ProjectFactory(
        generation_backend=GenerationBackend.OPENAI,
        remote_base_url=f"{live_server.url}/v1",
        # The upstream is a Flywheel too: its production model answers to `flywheel`.
        remote_model="flywheel",
    )
    proxy_client = openai.OpenAI(
        base_url=f"{live_server.url}/v1",
        max_retries=0,
        api_key=api_key_create(project=proxy, kind="secret", name="app").raw_key,
    )
    messages = [{"role": "user", "content": QUESTION}]

    plain = proxy_client.chat.completions.create(model="flywheel", messages=messages, max_tokens=40)
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in proxy_client.chat.completions.create(
            model="flywheel", messages=messages, max_tokens=40, stream=True
        )
        if chunk.choices
    )

    proxied = Interaction.objects.filter(project=proxy).order_by("created_at")
    upstream = Interaction.objects.filter(project=demo_project)
    assert [i.response for i in proxied] == [plain.choices[0].message.content, streamed.strip()]
    assert {i.model_name for i in proxied} == {"flywheel"}
    assert upstream.count() == 2, "each proxied call was answered upstream"
    assert "30" in plain.choices[0].message.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, status, code",
    [
        ("{not json", 400, "invalid_json"),
        (json.dumps({"messages": "hi"}), 400, "invalid_request"),
        (json.dumps({"messages": [{"role": "user", "content": 42}]}), 400, "invalid_request"),
        (json.dumps({"messages": [{"role": "assistant", "content": "x"}]}), 400, "invalid_request"),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            400,
            "unsupported_parameter",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            400,
            "invalid_request",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            400,
            "invalid_request",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}], "flywheel": {"top_k": 0}}),
            400,
            "invalid_request",
        ),
    ],
)
def test_malformed_chat_requests_get_a_json_400_and_nothing_is_logged(
    client, secret_key, body, status, code
):
    response = client.post(
        "/v1/chat/completions", data=body, content_type="application/json", **bearer(secret_key)
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert not Interaction.objects.exists()


@pytest.mark.django_db
def test_bodies_over_the_limit_get_413_and_nothing_is_stored(client, secret_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    interactions = [{"messages": [{"role": "user", "content": "q" * 3000}], "response": "a"}]

    response = client.post(
        "/api/v1/interactions",
        data=json.dumps({"interactions": interactions}),
        content_type="application/json",
        **bearer(secret_key),
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert not Interaction.objects.exists()


def test_the_openapi_documentation_lists_every_endpoint(client):
    schema = client.get("/api/openapi.json").json()
    assert {
        "/v1/chat/completions",
        "/api/v1/documents",
        "/api/v1/interactions",
        "/api/v1/interactions/{interaction_id}",
    } <= set(schema["paths"])
    assert client.get("/api/docs").status_code == 200
