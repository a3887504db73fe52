"""Fuzzing: schemathesis generates requests from the OpenAPI document for every operation and
sends each with a secret key holding every scope and with a public key; no answer may be a
server error, and every answer must match the schema documented for its status. Then the
statements the validators rely on are checked in the document itself."""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from flywheel.models import ApiKey
from flywheel.services import api_key_create
from flywheel.services.verified_answers import serving_policy_update
from tests.conftest import index_folder

# Examples per operation: enough for every operation to meet its bounds and its hostile
# values (NUL, lone surrogates, huge numbers) while the whole run stays under two minutes.
EXAMPLES_PER_OPERATION = 10
WIDGET_ORIGIN = "https://app.example"
CHAT_PATH = "/v1/chat/completions"


@pytest.fixture
def fuzzed_project(project, tmp_path):
    """A project that answers chat by quoting a one-page knowledge base, so that no
    generated request makes the model write at length."""
    (tmp_path / "bin.md").write_text("# Bin\n\nDeleted notes stay in the bin for 30 days.\n")
    index_folder(project, tmp_path)
    serving_policy_update(project=project, answer_mode="quote")
    return project


@pytest.fixture
def api_keys(fuzzed_project) -> dict[str, dict[str, str]]:
    """Headers per key: a secret key with every scope, and the widget's public key."""
    secret = api_key_create(
        project=fuzzed_project, kind="secret", name="fuzz", scopes=ApiKey.Scope.values
    ).raw_key
    public = api_key_create(
        project=fuzzed_project,
        kind="public",
        name="fuzz-widget",
        allowed_origins=[WIDGET_ORIGIN],
        scopes=ApiKey.PUBLIC_SCOPES,
    ).raw_key
    return {
        "secret": {"Authorization": f"Bearer {secret}"},
        "public": {"Authorization": f"Bearer {public}", "Origin": WIDGET_ORIGIN},
    }


@pytest.fixture(autouse=True)
def connection_kept_across_requests():
    """The WSGI handler runs inside the test's transaction: like Django's test client, its
    requests must not close the connection that holds it."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _loaded_schema():
    """The document as the application serves it."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", WSGIHandler())
    schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, database="none")
    return schema


# Every operation but chat also gets schemathesis' coverage phase: the boundary values of each
# field, inside and just outside its bounds.
fuzzed = _loaded_schema().exclude(path=CHAT_PATH)
# Chat without it: each accepted chat request runs the model, and the coverage phase sends a
# hundred of them.
fuzzed_chat = _loaded_schema()
fuzzed_chat.config.phases.coverage.enabled = False
fuzzed_chat = fuzzed_chat.include(path=CHAT_PATH)


# Chat bodies are cut down to this: the model's time grows with the prompt, and long texts are
# the regression tests' business (tests/flywheel/test_validation.py).
CHAT_TEXT_CHARS = 80
CHAT_MESSAGES = 4


def _cheap(case) -> None:
    """Chat requests answer in a token or two, from a short prompt, without the extra
    generations of RAG-Fusion and HyDE: the fuzz run tests the request handling, not the
    model."""
    if case.operation.path != CHAT_PATH or not isinstance(case.body, dict):
        return
    body = case.body
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int):
            body[name] = min(body[name], 2)
    body.setdefault("max_tokens", 2)
    if isinstance(body.get("messages"), list):
        body["messages"] = body["messages"][-CHAT_MESSAGES:]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            message["content"] = content[:CHAT_TEXT_CHARS]
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = part["text"][:CHAT_TEXT_CHARS]
    options = body.get("flywheel")
    if isinstance(options, dict):
        options.update(query_variants=0, hyde=False, top_k=1)


def _call_with_each_key(case, api_keys) -> None:
    for headers in api_keys.values():
        case.call_and_validate(
            headers=headers, checks=[not_a_server_error, response_schema_conformance]
        )


FUZZ_SETTINGS = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.django_db
@fuzzed.parametrize()
@FUZZ_SETTINGS
def test_no_request_to_any_operation_is_a_server_error_or_off_its_schema(case, api_keys):
    _call_with_each_key(case, api_keys)


@pytest.mark.django_db
@fuzzed_chat.parametrize()
@FUZZ_SETTINGS
def test_no_chat_request_is_a_server_error_or_off_its_schema(case, api_keys):
    _cheap(case)
    _call_with_each_key(case, api_keys)


# ---------------------------------------------------------------------------------------------
# What the document states


@pytest.fixture
def openapi(client) -> dict:
    return client.get("/api/openapi.json").json()


def _operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_documents_its_errors_with_the_error_schema(openapi):
    error_schema = {"$ref": "#/components/schemas/ErrorOut"}
    for name, operation in _operations(openapi):
        responses = operation["responses"]
        expected = {"503"} | ({"401", "403"} if "security" in operation else set())
        if "requestBody" in operation:
            expected |= {"400", "413"}
        if any(parameter["in"] == "path" for parameter in operation.get("parameters", [])):
            expected |= {"404"}
        assert expected <= set(responses), (name, sorted(responses))
        for status in expected:
            content = responses[status]["content"]["application/json"]["schema"]
            assert content == error_schema, (name, status)


def test_the_document_states_the_rules_the_validators_enforce(openapi):
    schemas = openapi["components"]["schemas"]
    chat_messages = schemas["ChatCompletionIn"]["properties"]["messages"]
    assert chat_messages["contains"]["properties"]["role"] == {"const": "user"}
    assert {"role", "content"} <= set(chat_messages["contains"]["required"])
    rating_signals = schemas["RatingIn"]["anyOf"]
    assert [signal["required"] for signal in rating_signals] == [
        ["thumb"],
        ["score"],
        ["comment"],
        ["correction"],
    ]
    assert set(schemas["JobIn"]["properties"]["kind"]["enum"]) >= {
        "index_refresh",
        "lora_training",
        "evaluation",
        "dataset_snapshot",
        "retriever_training",
    }
    interaction = schemas["InteractionIn"]["properties"]
    token_bound = interaction["prompt_tokens"]["anyOf"][0]
    assert (token_bound["minimum"], token_bound["maximum"]) == (0, 2_147_483_647)
    assert "10 levels" in interaction["metadata"]["description"]
    assert "2000-01-01" in interaction["created_at"]["anyOf"][0]["description"]
