"""The API documentation renders in a real browser from the server alone: Swagger UI at
/api/docs and ReDoc at /api/redoc load django-ninja's bundled scripts, and every request that
would leave the machine is aborted and counted."""

from urllib.parse import urlsplit

import pytest

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


@pytest.fixture
def offline_page(page):
    """The page with every non-loopback request aborted; `page.left_the_machine` lists them
    and `page.problems` the script errors."""
    page.left_the_machine = []
    page.problems = []

    def only_loopback(route):
        if urlsplit(route.request.url).hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            page.left_the_machine.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda message: message.type == "error" and page.problems.append(message.text),
    )
    return page


def test_swagger_ui_renders_every_operation_without_leaving_the_machine(
    offline_page, live_server, transactional_db
):
    offline_page.goto(f"{live_server.url}/api/docs")

    operations = offline_page.locator(".opblock-summary-path")
    operations.first.wait_for()
    paths = {text.strip().replace("\u200b", "") for text in operations.all_inner_texts()}
    assert {"/v1/chat/completions", "/v1/models", "/v1/embeddings", "/api/v1/ratings"} <= paths
    assert offline_page.get_by_text("Flywheel API").first.is_visible()
    assert offline_page.left_the_machine == []
    assert offline_page.problems == []


def test_redoc_renders_the_reference_without_leaving_the_machine(
    offline_page, live_server, transactional_db
):
    offline_page.goto(f"{live_server.url}/api/redoc")

    offline_page.get_by_role("heading", name="Create embeddings (OpenAI-compatible)").wait_for()
    operations = set(offline_page.locator("h2").all_inner_texts())
    assert {
        "Create a chat completion (OpenAI-compatible, with RAG)",
        "List the models the project serves (OpenAI-compatible)",
    } <= operations
    assert offline_page.left_the_machine == []
    # The only thing refused: Redocly's logo, which the page's policy keeps from loading.
    assert [problem for problem in offline_page.problems if "cdn.redoc.ly" not in problem] == []
