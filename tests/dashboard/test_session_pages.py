"""The session view: interactions that share a session id, shown as one conversation."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback.services.ratings import rating_submit
from flywheel.models import Interaction
from flywheel.services.interactions import interactions_log_batch
from tests.conftest import user_with_role
from tests.factories import ProjectFactory


def _log_turns(project, session_id: str, questions: list[str]):
    start = timezone.now() - timedelta(minutes=len(questions))
    results = interactions_log_batch(
        project=project,
        interactions=[
            {
                "messages": [{"role": "user", "content": question}],
                "response": f"Answer to {question}",
                "model": "gpt-app",
                "session_id": session_id,
                "created_at": start + timedelta(minutes=turn),
            }
            for turn, question in enumerate(questions)
        ],
    )
    return [Interaction.objects.get(pk=result.id) for result in results]


def _viewer_client(project) -> Client:
    client = Client()
    client.force_login(user_with_role(project, "viewer"))
    return client


@pytest.mark.django_db
def test_a_session_shows_its_turns_in_order_with_their_feedback():
    project = ProjectFactory()
    first, second, third = _log_turns(
        project, "chat/42", ["How do I reset?", "And then?", "Thanks, where is the log?"]
    )
    _log_turns(project, "another-session", ["Unrelated question?"])
    rating_submit(interaction=second, rater_id="user-1", source="api", thumb="down")
    client = _viewer_client(project)

    detail = client.get(
        reverse("dashboard:interaction_detail", args=[project.slug, second.pk])
    ).content.decode()
    session_url = reverse("dashboard:session", args=[project.slug, "chat/42"])
    assert f'href="{session_url}"' in detail

    page = client.get(session_url)

    assert page.status_code == 200
    html = page.content.decode()
    positions = [html.index(question) for question in ("How do I reset?", "And then?", "Thanks")]
    assert positions == sorted(positions)
    assert "Unrelated question?" not in html
    assert "3 turns" in html
    assert [turn.pk for turn in page.context["session"].turns] == [first.pk, second.pk, third.pk]
    assert page.context["session"].turns[1].thumbs_down == 1


@pytest.mark.django_db
def test_an_unknown_or_foreign_session_is_a_404():
    project, other = ProjectFactory(), ProjectFactory()
    _log_turns(other, "theirs", ["Their question?"])
    client = _viewer_client(project)

    for session_id in ("theirs", "never-logged"):
        response = client.get(reverse("dashboard:session", args=[project.slug, session_id]))
        assert response.status_code == 404
