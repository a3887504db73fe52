"""The OpenAI surface beyond chat — models, embeddings, model names, unsupported parameters,
unknown paths — with the official `openai` client and LangChain's `langchain-openai`, over
real HTTP against the live server, with the real models and tiny outputs.

The live server runs in this process, so these tests use committed (transactional) data.
"""

import base64
import shutil
import uuid
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from flywheel.ml.bundled import embedding_model_path
from flywheel.ml.loading import embed_texts, load_embedder
from flywheel.models import EmbeddingModelVersion, IndexVersion, Interaction, ModelVersion
from flywheel.services import api_key_create
from flywheel.services.served_models import retriever_for
from retrain.promotion import index_version_activate
from tests.conftest import index_folder
from tests.factories import ProjectFactory

BIN_PAGE = "# Bin\n\nDeleted notes stay in the bin for 30 days, then they are gone for good.\n"
PLANS_PAGE = "# Plans\n\nThe team plan costs 8 euros per user per month, billed yearly.\n"
QUESTION = "How long do deleted notes stay in the bin?"
# A short answer with retrieval off: these tests are about the protocol, not the answer.
CHEAP = {"max_tokens": 4, "extra_body": {"flywheel": {"rag": False}}}


@pytest.fixture
def served_project(transactional_db, tmp_path, one_torch_thread):
    project = ProjectFactory()
    (tmp_path / "bin.md").write_text(BIN_PAGE)
    (tmp_path / "plans.md").write_text(PLANS_PAGE)
    index_folder(project, tmp_path)
    return project


@pytest.fixture
def base_url(live_server) -> str:
    return f"{live_server.url}/v1"


@pytest.fixture
def app_key(served_project) -> str:
    """A secret key with the default scopes (chat, log, read, rate), as an app holds."""
    return api_key_create(project=served_project, kind="secret", name="app").raw_key


@pytest.fixture
def openai_client(base_url, app_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=app_key, max_retries=0)


def _candidate(project, name: str) -> ModelVersion:
    """A candidate model version on the base model (no adapter): what serves it is what the
    test checks, not how it answers."""
    return ModelVersion.objects.create(
        project=project, name=name, base_model="", status=ModelVersion.Status.CANDIDATE
    )


def _interaction_id(completion_id: str) -> uuid.UUID:
    return uuid.UUID(completion_id.removeprefix("chatcmpl-"))


# ---------------------------------------------------------------------------------------------
# GET /v1/models


def test_the_model_list_names_production_each_version_the_candidate_and_the_retriever(
    openai_client, served_project
):
    older = _candidate(served_project, "lora-older")
    newer = _candidate(served_project, "lora-newer")
    retriever = retriever_for(project=served_project)

    models = {model.id: model for model in openai_client.models.list()}

    production = ModelVersion.objects.get(
        project=served_project, status=ModelVersion.Status.PRODUCTION
    )
    assert set(models) == {
        "flywheel",
        "flywheel:candidate",
        "flywheel:embedding",
        production.name,
        older.name,
        newer.name,
        retriever.name,
    }
    assert models["flywheel"].model_extra["flywheel"]["resolves_to"] == production.name
    assert models["flywheel:candidate"].model_extra["flywheel"]["resolves_to"] == newer.name
    assert models["flywheel:embedding"].model_extra["flywheel"] == {
        "endpoint": "/v1/embeddings",
        "resolves_to": retriever.name,
        "status": None,
    }
    assert models[older.name].model_extra["flywheel"]["status"] == "candidate"
    assert {(model.object, model.owned_by) for model in models.values()} == {
        ("model", served_project.slug)
    }
    assert models[newer.name].created == int(newer.created_at.timestamp())
    # The bundled retriever is named by its package, never by where the server keeps it.
    assert "/" not in retriever.name
    embedded_with = Path(IndexVersion.objects.get(project=served_project).embedding_model)
    assert retriever.name in embedded_with.parts


def test_the_list_is_in_openais_shape_and_one_model_reads_back(base_url, app_key, openai_client):
    listed = requests.get(f"{base_url}/models", headers={"Authorization": f"Bearer {app_key}"})

    body = listed.json()
    assert listed.status_code == 200 and body["object"] == "list"
    assert all(
        {"id", "object", "created", "owned_by"} <= set(model) and model["object"] == "model"
        for model in body["data"]
    )
    one = openai_client.models.retrieve("flywheel")
    assert (one.id, one.object) == ("flywheel", "model")
    read_back = requests.get(
        f"{base_url}/models/flywheel", headers={"Authorization": f"Bearer {app_key}"}
    )
    assert read_back.json() == next(m for m in body["data"] if m["id"] == "flywheel")


def test_an_unknown_model_and_a_candidate_that_does_not_exist_are_404(openai_client):
    for name in ("gpt-4o", "flywheel:candidate"):
        with pytest.raises(openai.NotFoundError) as missing:
            openai_client.models.retrieve(name)
        assert missing.value.body["code"] == "model_not_found"
        assert name in missing.value.body["message"]


def test_a_read_key_lists_models_and_a_key_with_neither_chat_nor_read_does_not(
    base_url, served_project
):
    def key(scopes):
        return api_key_create(
            project=served_project, kind="secret", name="-".join(scopes), scopes=scopes
        ).raw_key

    reader = openai.OpenAI(base_url=base_url, api_key=key(["read"]), max_retries=0)
    assert "flywheel" in {model.id for model in reader.models.list()}

    rater = openai.OpenAI(base_url=base_url, api_key=key(["rate"]), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        rater.models.list()
    assert refused.value.body["code"] == "missing_scope"
    assert "'chat' or 'read' scope" in refused.value.body["message"]


# ---------------------------------------------------------------------------------------------
# Which model answers a chat request


def test_an_unknown_model_name_is_404_and_nothing_is_answered_or_logged(openai_client):
    for name in ("gpt-4o-mini", "flywheel:embedding"):
        with pytest.raises(openai.NotFoundError) as missing:
            openai_client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": QUESTION}], **CHEAP
            )
        error = missing.value.body
        assert (error["code"], error["param"], error["type"]) == (
            "model_not_found",
            "model",
            "not_found_error",
        )
        assert name in error["message"]
    assert not Interaction.objects.exists()


def test_flywheel_serves_production_a_version_name_that_version_and_the_candidate_alias_the_newest(
    openai_client, served_project
):
    older = _candidate(served_project, "lora-older")
    newer = _candidate(served_project, "lora-newer")

    def served_by(model: str) -> tuple[str, ModelVersion]:
        completion = openai_client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], **CHEAP
        )
        logged = Interaction.objects.get(pk=_interaction_id(completion.id))
        assert completion.model_extra["flywheel"]["model_version"]["name"] == completion.model
        return completion.model, logged.model_version

    production = ModelVersion.objects.filter(
        project=served_project, status=ModelVersion.Status.PRODUCTION
    )
    model, version = served_by("flywheel")
    assert (model, version) == (version.name, production.get())
    assert served_by("lora-older") == (older.name, older)
    assert served_by("flywheel:candidate") == (newer.name, newer)


def test_the_completion_id_carries_the_interaction_id_streamed_or_not(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="flywheel", messages=[{"role": "user", "content": QUESTION}], **CHEAP
    )
    completion = raw.parse()
    interaction_id = _interaction_id(completion.id)
    assert str(interaction_id) == completion.model_extra["flywheel"]["interaction_id"]
    assert str(interaction_id) == raw.headers["X-Flywheel-Interaction-Id"]
    assert completion.id == f"chatcmpl-{interaction_id.hex}"

    chunks = list(
        openai_client.chat.completions.create(
            model="flywheel",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            **CHEAP,
        )
    )
    assert len({chunk.id for chunk in chunks}) == 1
    streamed = Interaction.objects.get(pk=_interaction_id(chunks[0].id))
    assert chunks[-1].usage.completion_tokens == streamed.completion_tokens > 0


# ---------------------------------------------------------------------------------------------
# Parameters Flywheel does not honour

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.mark.parametrize(
    "parameters, refused",
    [
        ({"tools": [WEATHER_TOOL]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": {"type": "object"}},
                }
            },
            "response_format",
        ),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_an_unsupported_parameter_is_refused_by_name(openai_client, parameters, refused):
    with pytest.raises(openai.BadRequestError) as bad_request:
        openai_client.chat.completions.create(
            model="flywheel",
            messages=[{"role": "user", "content": QUESTION}],
            **parameters,
            **CHEAP,
        )

    error = bad_request.value.body
    assert (error["code"], error["param"]) == ("unsupported_parameter", refused)
    assert f"'{refused}' is not supported" in error["message"]
    assert not Interaction.objects.exists()


def test_the_values_that_ask_for_nothing_unsupported_are_accepted(openai_client):
    completion = openai_client.chat.completions.create(
        model="flywheel",
        messages=[{"role": "user", "content": QUESTION}],
        n=1,
        tool_choice="none",
        response_format={"type": "text"},
        logprobs=False,
        seed=7,  # accepted and ignored, as the README says
        **CHEAP,
    )

    assert Interaction.objects.filter(pk=_interaction_id(completion.id)).exists()


# ---------------------------------------------------------------------------------------------
# Unknown paths


def test_every_unknown_path_under_v1_is_a_json_404_in_openais_shape(
    openai_client, base_url, app_key
):
    with pytest.raises(openai.NotFoundError) as legacy:
        openai_client.completions.create(model="flywheel", prompt="Hello", max_tokens=4)
    assert legacy.value.body["code"] == "unknown_url"

    headers = {"Authorization": f"Bearer {app_key}"}
    for method, path in [
        ("get", "/nope"),
        ("post", "/responses"),
        ("post", "/chat/completions/extra"),
        ("put", "/files/file-abc/content"),
        ("get", ""),
    ]:
        response = requests.request(method, f"{base_url}{path}", headers=headers, json={})

        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code", "param"}
        assert (error["code"], error["type"]) == ("unknown_url", "not_found_error")
        assert f"/v1{path}" in error["message"]


# ---------------------------------------------------------------------------------------------
# POST /v1/embeddings


def test_embeddings_come_from_the_retriever_of_the_active_index_as_floats_and_base64(
    openai_client, served_project
):
    texts = [QUESTION, "The team plan costs 8 euros per user per month."]
    retriever = retriever_for(project=served_project)
    index_version = IndexVersion.objects.get(project=served_project)

    as_floats = openai_client.embeddings.create(
        model="flywheel:embedding", input=texts, encoding_format="float"
    )
    # The client asks for base64 unless told otherwise, and decodes it itself.
    by_default = openai_client.embeddings.create(model=retriever.name, input=texts)

    expected = embed_texts(texts, path=Path(index_version.embedding_model))
    for response in (as_floats, by_default):
        assert response.model == retriever.name
        assert [item.index for item in response.data] == [0, 1]
        vectors = np.array([item.embedding for item in response.data])
        assert vectors.shape == (2, 384)
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
    tokenizer = load_embedder().tokenizer
    read = sum(len(tokenizer(text)["input_ids"]) for text in texts)
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens == read


def test_embeddings_follow_the_retriever_that_built_the_active_index(
    openai_client, served_project, tmp_path
):
    bundled = retriever_for(project=served_project).name
    # A retriever trained on feedback, as far as serving can tell: its own folder and version.
    trained_path = tmp_path / "retriever-feedback"
    shutil.copytree(embedding_model_path(), trained_path)
    trained = EmbeddingModelVersion.objects.create(
        project=served_project,
        name="retriever-feedback-1",
        path=str(trained_path),
        status=EmbeddingModelVersion.Status.PRODUCTION,
    )
    rebuilt = IndexVersion.objects.create(
        project=served_project,
        number=2,
        status=IndexVersion.Status.READY,
        embedding_model=str(trained_path),
        embedding_model_version=trained,
    )
    index_version_activate(version=rebuilt)

    embedded = openai_client.embeddings.create(
        model="flywheel:embedding", input=QUESTION, encoding_format="float"
    )

    assert embedded.model == trained.name
    served = {model.id: model for model in openai_client.models.list()}
    assert served["flywheel:embedding"].model_extra["flywheel"]["resolves_to"] == trained.name
    assert trained.name in served and bundled not in served
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model=bundled, input=QUESTION)


def test_base64_is_little_endian_float32_as_openai_sends_it(base_url, app_key):
    def embed(encoding_format: str) -> dict:
        response = requests.post(
            f"{base_url}/embeddings",
            headers={"Authorization": f"Bearer {app_key}"},
            json={
                "model": "flywheel:embedding",
                "input": QUESTION,
                "encoding_format": encoding_format,
            },
        )
        assert response.status_code == 200, response.text
        return response.json()

    floats, encoded = embed("float"), embed("base64")

    assert floats["object"] == "list" and floats["data"][0]["object"] == "embedding"
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.array(floats["data"][0]["embedding"], "<f4"))
    assert encoded["usage"] == floats["usage"] and encoded["model"] == floats["model"]


def test_a_question_embeds_nearest_to_the_passage_that_answers_it(openai_client):
    question, *passages = openai_client.embeddings.create(
        model="flywheel:embedding", input=[QUESTION, BIN_PAGE, PLANS_PAGE], encoding_format="float"
    ).data

    bin_similarity, plans_similarity = (
        float(np.dot(question.embedding, passage.embedding)) for passage in passages
    )
    assert bin_similarity > plans_similarity


@pytest.mark.parametrize(
    "body, status, code, param",
    [
        ({"model": "gpt-embedding", "input": "hi"}, 404, "model_not_found", "model"),
        ({"model": "flywheel", "input": "hi"}, 404, "model_not_found", "model"),
        ({"model": "flywheel:embedding", "input": [17, 42]}, 400, "invalid_request", "input"),
        ({"model": "flywheel:embedding", "input": [[17, 42]]}, 400, "invalid_request", "input"),
        ({"model": "flywheel:embedding", "input": []}, 400, "invalid_request", "input"),
        ({"model": "flywheel:embedding", "input": ""}, 400, "invalid_request", "input"),
        ({"model": "flywheel:embedding", "input": ["x"] * 2049}, 400, "invalid_request", "input"),
        ({"model": "flywheel:embedding", "input": "x" * 32_769}, 400, "invalid_request", "input"),
        (
            {"model": "flywheel:embedding", "input": "hi", "encoding_format": "int8"},
            400,
            "invalid_request",
            "encoding_format",
        ),
        (
            {"model": "flywheel:embedding", "input": "hi", "dimensions": 128},
            400,
            "unsupported_parameter",
            "dimensions",
        ),
    ],
)
def test_embedding_requests_outside_the_rules_get_a_clear_error(
    base_url, app_key, body, status, code, param
):
    response = requests.post(
        f"{base_url}/embeddings", headers={"Authorization": f"Bearer {app_key}"}, json=body
    )

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


def test_the_full_dimensions_are_accepted(openai_client):
    response = openai_client.embeddings.create(
        model="flywheel:embedding", input="hi", dimensions=384, encoding_format="float"
    )

    assert len(response.data[0].embedding) == 384


# ---------------------------------------------------------------------------------------------
# LangChain


def test_langchain_chats_streams_and_embeds_through_flywheel(base_url, app_key, served_project):
    chat = ChatOpenAI(
        base_url=base_url,
        api_key=app_key,
        model="flywheel",
        max_tokens=4,
        max_retries=0,
        extra_body={"flywheel": {"rag": False}},
    )

    message = chat.invoke(QUESTION)
    logged = Interaction.objects.get(pk=_interaction_id(message.response_metadata["id"]))
    assert logged.response == message.content
    assert message.response_metadata["model_name"] == logged.model_version.name
    assert message.usage_metadata["output_tokens"] == logged.completion_tokens
    streamed = "".join(chunk.content for chunk in chat.stream(QUESTION))
    assert Interaction.objects.latest("created_at").response == streamed.strip()

    # LangChain counts tokens with OpenAI's tokenizer unless told not to; it has no files here.
    embeddings = OpenAIEmbeddings(
        base_url=base_url,
        api_key=app_key,
        model="flywheel:embedding",
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    documents = embeddings.embed_documents([BIN_PAGE, PLANS_PAGE])
    query = embeddings.embed_query(QUESTION)
    assert np.dot(query, documents[0]) > np.dot(query, documents[1])

    with pytest.raises(openai.NotFoundError):
        ChatOpenAI(base_url=base_url, api_key=app_key, model="gpt-4o", max_retries=0).invoke("hi")


def test_a_known_path_called_with_the_wrong_method_is_a_json_405(base_url, app_key):
    headers = {"Authorization": f"Bearer {app_key}"}
    for method, path in [
        ("get", "/chat/completions"),
        ("delete", "/models"),
        ("put", "/embeddings"),
    ]:
        response = requests.request(method, f"{base_url}{path}", headers=headers, json={})

        assert response.status_code == 405, path
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "method_not_allowed"
        assert method.upper() in error["message"] and f"/v1{path}" in error["message"]
        assert response.headers["Allow"] in error["message"]
