"""Every dashboard page in a real browser, signed in as an admin through the sign-in form:
each answers 200, draws without a console error, and leaves a full-page screenshot in the
screenshots folder (FLYWHEEL_SCREENSHOTS_DIR, var/screenshots by default) for a human to look
over."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from feedback.services.ratings import rating_submit
from flywheel.management.welcome import ADMIN_USERNAME, welcome_lines
from flywheel.models import Interaction
from flywheel.services import demo_bootstrap
from flywheel.services.interactions import interactions_log_batch
from retrain.jobs.lifecycle import job_create
from tests.conftest import DEMO_KNOWLEDGE_BASE, SCREENSHOTS, user_with_role


@pytest.fixture
def lived_in_project(transactional_db, project):
    """A project with a short conversation, a rating and an index-refresh job."""
    started = timezone.now() - timedelta(minutes=5)
    logged = interactions_log_batch(
        project=project,
        interactions=[
            {
                "messages": [{"role": "user", "content": question}],
                "response": f"Here is how: {question.lower()}",
                "model": "support-bot-gpt-4o-mini-2024-07-18",
                "session_id": "conversation-1",
                "created_at": started + timedelta(minutes=turn),
            }
            for turn, question in enumerate(
                ("How do I reset my password?", "Where do I find the reset link?")
            )
        ],
    )
    first = Interaction.objects.get(pk=logged[0].id)
    rating_submit(interaction=first, rater_id="user-1", source="api", thumb="up", score=5)
    job = job_create(project=project, kind="index_refresh", trigger="manual")
    return {"interaction": first, "job": job}


def test_every_dashboard_page_renders_for_an_admin(page, live_server, project, lived_in_project):
    admin = user_with_role(project, "admin")
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", f"pw-{admin.username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/{project.slug}/")
    slug = project.slug
    pages = {
        "overview": reverse("dashboard:overview", args=[slug]),
        "interactions": reverse("dashboard:interactions", args=[slug]),
        "interaction": reverse(
            "dashboard:interaction_detail", args=[slug, lived_in_project["interaction"].pk]
        ),
        "session": reverse("dashboard:session", args=[slug, "conversation-1"]),
        "queue": reverse("dashboard:queue", args=[slug]),
        "datasets": reverse("dashboard:datasets", args=[slug]),
        "policy": reverse("dashboard:policy", args=[slug]),
        "verified_answers": reverse("dashboard:verified_answers", args=[slug]),
        "jobs": reverse("dashboard:jobs", args=[slug]),
        "job": reverse("dashboard:job_detail", args=[slug, lived_in_project["job"].pk]),
        "versions": reverse("dashboard:versions", args=[slug]),
        "keys": reverse("dashboard:keys", args=[slug]),
        "experiments": reverse("dashboard:experiments", args=[slug]),
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    statuses = {}
    for name, path in pages.items():
        response = page.goto(f"{live_server.url}{path}")
        statuses[name] = response.status if response else None
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SCREENSHOTS / f"page_{name}.png"), full_page=True)

    assert statuses == dict.fromkeys(pages, 200)
    assert problems == []
    page.goto(f"{live_server.url}{pages['session']}")
    turns = page.locator("ol.conversation > li")
    assert turns.count() == 2
    assert "reset my password" in turns.first.inner_text()
    # Long model names stay on one line in the interaction list.
    page.goto(f"{live_server.url}{pages['interactions']}")
    model_cell = page.locator("table.interactions tbody td.nowrap").first
    assert model_cell.evaluate("cell => getComputedStyle(cell).whiteSpace") == "nowrap"


def test_a_new_key_is_copied_to_the_clipboard_with_one_click(page, live_server, project):
    admin = user_with_role(project, "admin")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", f"pw-{admin.username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/{project.slug}/")
    page.goto(f"{live_server.url}{reverse('dashboard:keys', args=[project.slug])}")
    page.fill("input[name=name]", "support site")
    page.get_by_role("button", name="Create").click()
    raw_key = page.locator("#raw-key").inner_text().strip()
    # The Clipboard API writes only from a focused document: other tests' pages in the same
    # browser may hold the focus.
    page.bring_to_front()

    page.get_by_role("button", name="Copy").click()

    page.get_by_role("button", name="Copied").wait_for()
    assert raw_key.startswith("fw_sk_")
    assert page.evaluate("navigator.clipboard.readText()") == raw_key
    assert page.locator("#raw-key-copied").inner_text() == "Copied to the clipboard."
    page.screenshot(path=str(SCREENSHOTS / "key_created.png"), full_page=True)


def test_the_login_make_run_prints_leads_to_the_demo_dashboard(page, live_server, transactional_db):
    outcome = demo_bootstrap(admin_username=ADMIN_USERNAME, knowledge_base=DEMO_KNOWLEDGE_BASE)
    printed = "\n".join(welcome_lines(outcome=outcome, base_url=f"{live_server.url}/"))
    dashboard_url = re.search(r"Dashboard +(\S+)", printed).group(1)
    username, password = re.search(r"Sign in +(\S+), password (\S+)", printed).groups()

    page.goto(f"{live_server.url}/")
    page.wait_for_url("**/accounts/login/**")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")

    page.wait_for_url(f"{live_server.url}/dashboard/**")
    page.goto(dashboard_url)
    assert outcome.project.name in page.locator("body").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "first_login.png"), full_page=True)
