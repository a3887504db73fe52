"""The rating widget's script and its demo page (the browser tests are in test_widget_browser)."""

import gzip
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from flywheel.models import ApiKey, Interaction
from tests.conftest import user_with_role

WIDGET_SOURCE = (
    Path(__file__).resolve().parents[2] / "feedback" / "static" / "flywheel" / "widget.js"
)
WIDGET_GZIPPED_BUDGET_BYTES = 8192
DEMO_PAGE = reverse("widget_demo")
DEMO_KEY_NAME = "Widget demo page (http://testserver)"


def test_the_widget_script_is_served_as_javascript(client, settings):
    # What `collectstatic` gathers and WhiteNoise serves; the finders stand in for the former.
    settings.WHITENOISE_USE_FINDERS = True
    response = client.get("/static/flywheel/widget.js")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert b"".join(response.streaming_content) == WIDGET_SOURCE.read_bytes()


def test_the_widget_stays_within_its_size_budget():
    gzipped = gzip.compress(WIDGET_SOURCE.read_bytes(), compresslevel=9)
    assert len(gzipped) <= WIDGET_GZIPPED_BUDGET_BYTES


def test_the_widget_never_turns_text_into_markup_or_code():
    source = WIDGET_SOURCE.read_text()
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\b|new Function"
    )
    assert forbidden.findall(source) == []


def test_the_widget_source_is_ascii_so_no_page_encoding_can_garble_it():
    WIDGET_SOURCE.read_bytes().decode("ascii")


def active_demo_keys(project):
    return ApiKey.objects.filter(
        project=project, kind=ApiKey.Kind.PUBLIC, name=DEMO_KEY_NAME, revoked_at__isnull=True
    )


def page_public_key(response) -> str:
    script_tag = r'<script src="[^"]*/flywheel/widget\.js" data-key="(fw_pk_[^"]+)"'
    return re.search(script_tag, response.content.decode()).group(1)


def test_the_demo_page_is_for_signed_in_admins_only(client, project):
    response = client.get(DEMO_PAGE)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))

    for role in ("viewer", "reviewer"):
        client.force_login(user_with_role(project, role))
        assert client.get(DEMO_PAGE).status_code == 403
        assert client.get(DEMO_PAGE, {"project": project.slug}).status_code == 403

    outsider = get_user_model().objects.create_user(username="outsider")
    client.force_login(outsider)
    assert client.get(DEMO_PAGE, {"project": project.slug}).status_code == 404
    assert not ApiKey.objects.exists()


def test_the_demo_page_keeps_one_active_public_key_per_session(project):
    admin = user_with_role(project, "admin")
    first_session = Client()
    first_session.force_login(admin)

    first_page = first_session.get(DEMO_PAGE)
    again = first_session.get(DEMO_PAGE, {"project": project.slug})

    assert first_page.status_code == again.status_code == 200
    demo_key = active_demo_keys(project).get()
    assert demo_key.allowed_origins == ["http://testserver"]
    assert page_public_key(first_page) == page_public_key(again)
    assert ApiKey.hash_key(page_public_key(first_page)) == demo_key.key_hash

    # A new sign-in cannot read the old key back: it is revoked and replaced.
    second_session = Client()
    second_session.force_login(admin)
    replacement_page = second_session.get(DEMO_PAGE)

    replacement = active_demo_keys(project).get()
    assert replacement.pk != demo_key.pk
    assert ApiKey.hash_key(page_public_key(replacement_page)) == replacement.key_hash
    demo_key.refresh_from_db()
    assert demo_key.revoked_at is not None


def test_the_demo_page_answers_on_the_server_and_marks_the_answer_for_the_widget(project, settings):
    settings.FLYWHEEL_GENERATION_MAX_TOKENS = 16
    admin_session = Client(enforce_csrf_checks=True)
    admin_session.force_login(user_with_role(project, "admin"))
    question = "How long is a deleted note <b>kept</b>?"

    refused = admin_session.post(DEMO_PAGE, {"question": question})
    assert refused.status_code == 403  # no CSRF token
    form_page = admin_session.get(DEMO_PAGE)
    token = form_page.cookies[settings.CSRF_COOKIE_NAME].value
    asked = admin_session.post(DEMO_PAGE, {"question": question, "csrfmiddlewaretoken": token})

    assert asked.status_code == 302
    interaction = Interaction.objects.get(project=project)
    assert interaction.source == Interaction.Source.CHAT
    assert interaction.query_text == question and interaction.response
    answered_page = admin_session.get(asked["Location"])
    page = answered_page.content.decode()
    assert f'data-flywheel-interaction="{interaction.pk}"' in page
    assert escape(interaction.response) in page
    assert escape(question) in page and question not in page
    assert page_public_key(answered_page) and "fw_sk_" not in page


@pytest.mark.parametrize("blank", ["", "   "])
def test_the_demo_page_refuses_an_empty_question(project, client, blank):
    client.force_login(user_with_role(project, "admin"))
    response = client.post(DEMO_PAGE, {"question": blank})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not Interaction.objects.exists()
