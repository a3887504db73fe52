"""The dashboard's overview, interactions list, detail, exports and API key pages: who may see
them, what the filters and pages return, what the exports hold, and bad input."""

import csv
import io
import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.selectors.interactions import InteractionCursor
from dashboard.selectors.overview import NO_INDEX_LABEL
from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from feedback.services.rollups import rollups_refresh
from flywheel.models import ApiKey, Interaction
from flywheel.services import api_key_create, index_version_ensure_active
from flywheel.services.interactions import interaction_record, interactions_log_batch
from flywheel.services.model_versions import model_version_production_ensure
from tests.conftest import bearer, user_with_role
from tests.factories import ProjectFactory

XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def _at(days_ago: int, hour: int = 12) -> datetime:
    day = timezone.localdate() - timedelta(days=days_ago)
    return timezone.make_aware(datetime(day.year, day.month, day.day, hour))


def _logged(*, question: str, answer: str = "An answer.", **fields) -> dict:
    return {
        "messages": [{"role": "user", "content": question}],
        "response": answer,
        "model": "gpt-app",
        **fields,
    }


def _log(project, *items: dict) -> list[Interaction]:
    """Log interactions as an app would: each item has a question and any other field."""
    logged = interactions_log_batch(
        project=project, interactions=[_logged(**item) for item in items]
    )
    stored = Interaction.objects.in_bulk([entry.id for entry in logged])
    return [stored[entry.id] for entry in logged]


def _rate(interaction, rater_id="rater-1", **fields):
    return rating_submit(interaction=interaction, rater_id=rater_id, source="api", **fields)


def _login(client, project, role: str):
    user = user_with_role(project, role)
    client.force_login(user)
    return user


def _url(name: str, project, *args) -> str:
    return reverse(f"dashboard:{name}", args=[project.slug, *args])


def _listed_ids(response) -> list[uuid.UUID]:
    return [interaction.id for interaction in response.context["page"].interactions]


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


# ---------------------------------------------------------------------------------------------
# Who may see what


@pytest.fixture
def interaction(project):
    return _log(project, {"question": "How long is the bin kept?"})[0]


@pytest.fixture
def stored_key(project):
    return api_key_create(project=project, kind="secret", name="server").api_key


READ_PAGES = [
    "overview",
    "interactions",
    "interaction_detail",
    "interactions_export_csv",
    "interactions_export_jsonl",
]
ADMIN_PAGES = ["keys", "key_revoke"]


def _page_url(name, project, interaction, stored_key) -> str:
    if name == "interaction_detail":
        return _url(name, project, interaction.id)
    if name == "key_revoke":
        return _url(name, project, stored_key.pk)
    return _url(name, project)


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_PAGES + ADMIN_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client, project, interaction, stored_key, name):
    url = _page_url(name, project, interaction, stored_key)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_PAGES + ADMIN_PAGES)
def test_users_of_other_projects_do_not_learn_the_project_exists(
    client, project, interaction, stored_key, name
):
    _login(client, ProjectFactory(), "admin")

    response = client.get(_page_url(name, project, interaction, stored_key))

    assert response.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
@pytest.mark.parametrize("name", READ_PAGES + ADMIN_PAGES)
def test_each_role_reads_what_it_may_and_only_admins_manage_keys(
    client, project, interaction, stored_key, role, name
):
    _login(client, project, role)

    response = client.get(_page_url(name, project, interaction, stored_key))

    allowed = role == "admin" or name in READ_PAGES
    assert response.status_code == (200 if allowed else 403)


@pytest.mark.django_db
def test_superusers_act_as_admins_of_every_project(client, project, stored_key):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-root"))

    assert client.get(_url("keys", project)).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "role, sees_keys", [("viewer", False), ("reviewer", False), ("admin", True)]
)
def test_only_admins_see_the_api_keys_link(client, project, role, sees_keys):
    _login(client, project, role)

    page = client.get(_url("overview", project)).content.decode()

    assert (_url("keys", project) in page) is sees_keys


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_PAGES)
def test_read_pages_accept_no_writes(client, project, interaction, stored_key, name):
    _login(client, project, "admin")

    response = client.post(_page_url(name, project, interaction, stored_key))

    assert response.status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_viewers_and_reviewers_can_neither_create_nor_revoke_keys(
    client, project, stored_key, role
):
    _login(client, project, role)

    created = client.post(_url("keys", project), {"name": "sneaky", "kind": "secret"})
    revoked = client.post(_url("key_revoke", project, stored_key.pk))

    assert created.status_code == revoked.status_code == 403
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["server"]
    stored_key.refresh_from_db()
    assert stored_key.is_active


@pytest.mark.django_db
def test_an_interaction_or_key_of_another_project_is_not_found(client, project):
    other = ProjectFactory()
    foreign_interaction = _log(other, {"question": "Elsewhere?"})[0]
    foreign_key = api_key_create(project=other, kind="secret", name="theirs").api_key
    _login(client, project, "admin")

    detail = client.get(_url("interaction_detail", project, foreign_interaction.id))
    revoke = client.post(_url("key_revoke", project, foreign_key.pk))
    out_of_range = client.get(_url("key_revoke", project, 10**30))

    assert detail.status_code == revoke.status_code == out_of_range.status_code == 404
    foreign_key.refresh_from_db()
    assert foreign_key.is_active


# ---------------------------------------------------------------------------------------------
# Overview


@pytest.fixture
def known_feedback(project):
    """Two days ago: one interaction rated up (score 5) by one rater and down (score 2, with a
    correction) by another, one corrected by a reviewer. Yesterday: one whose rater changed
    up to down, and whose corrected review was then approved. Today: one served by the base
    model version, rated up with score 4. Outside the range or the project: ignored."""
    reviewer = user_with_role(project, "reviewer")
    mixed, reviewed, changed, too_old = _log(
        project,
        {"question": "Mixed?", "created_at": _at(2)},
        {"question": "Reviewed?", "created_at": _at(2, hour=18)},
        {"question": "Changed?", "created_at": _at(1)},
        {"question": "Old?", "created_at": _at(40)},
    )
    _rate(mixed, "rater-1", thumb="up", score=5)
    _rate(mixed, "rater-2", thumb="down", score=2, correction="Better answer.")
    review_submit(
        interaction=reviewed,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="The ideal answer.",
    )
    _rate(changed, "rater-1", thumb="up")
    _rate(changed, "rater-1", thumb="down")
    review_submit(interaction=changed, reviewer=reviewer, decision="corrected", ideal_answer="x")
    review_submit(interaction=changed, reviewer=reviewer, decision="approved")
    served = interaction_record(
        project=project,
        source="chat",
        messages=[{"role": "user", "content": "Served?"}],
        query_text="Served?",
        response="Yes.",
        model_version=model_version_production_ensure(project=project),
    )
    _rate(served, "rater-1", thumb="up", score=4)
    _rate(too_old, "rater-1", thumb="up", correction="Old correction.")
    _rate(_log(ProjectFactory(), {"question": "Other project?"})[0], thumb="down")


@pytest.mark.django_db
def test_the_overview_counts_a_known_data_set_per_day_and_per_model(
    client, project, known_feedback
):
    _login(client, project, "viewer")
    today = timezone.localdate()
    rollups_refresh()

    response = client.get(
        _url("overview", project),
        {"from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()},
    )

    data = response.context["chart_data"]
    assert data["days"] == [(today - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    overall = data["overall"]
    assert overall["interactions"] == [2, 1, 1]
    assert overall["satisfaction_percent"] == [50.0, 0.0, 100.0]
    assert overall["mean_score"] == [3.5, None, 4.0]
    assert overall["corrections"] == [2, 0, 0]
    by_model = {series["label"]: series for series in data["per_model"]}
    assert list(by_model) == ["gpt-app", "base"]
    assert by_model["gpt-app"]["interactions"] == [2, 1, 0]
    assert by_model["base"]["interactions"] == [0, 0, 1]
    assert by_model["base"]["satisfaction_percent"] == [None, None, 100.0]

    totals = response.context["overview"].overall.totals
    assert (totals.interactions, totals.thumbs_up, totals.thumbs_down) == (4, 2, 2)
    assert totals.satisfaction_percent == 50.0
    assert totals.mean_score_rounded == pytest.approx(3.67)
    assert (totals.rating_corrections, totals.review_corrections) == (1, 1)
    page = response.content.decode()
    assert 'id="overview-data"' in page
    assert page.count("<canvas") == 4


@pytest.mark.django_db
def test_the_overview_breaks_feedback_down_per_index_version(client, project):
    _login(client, project, "viewer")
    index = index_version_ensure_active(project=project)
    retrieved, logged = _log(project, {"question": "Retrieved?"}, {"question": "Logged?"})
    Interaction.objects.filter(pk=retrieved.pk).update(index_version=index)
    _rate(retrieved, thumb="up")
    _rate(logged, thumb="down")
    rollups_refresh()

    response = client.get(_url("overview", project))

    per_index = {series.label: series.totals for series in response.context["overview"].per_index}
    assert set(per_index) == {f"index v{index.number}", NO_INDEX_LABEL}
    assert (
        per_index[f"index v{index.number}"].interactions,
        per_index[NO_INDEX_LABEL].interactions,
    ) == (1, 1)
    assert per_index[f"index v{index.number}"].satisfaction_percent == 100.0
    assert per_index[NO_INDEX_LABEL].satisfaction_percent == 0.0
    page = response.content.decode()
    assert "Per index version" in page and f"index v{index.number}" in page


@pytest.mark.django_db
def test_the_overview_shows_the_last_30_days_by_default(client, project):
    _login(client, project, "viewer")
    today = timezone.localdate()

    response = client.get(_url("overview", project))

    days = response.context["chart_data"]["days"]
    assert (days[0], days[-1], len(days)) == (
        (today - timedelta(days=29)).isoformat(),
        today.isoformat(),
        30,
    )
    assert f'value="{today.isoformat()}"' in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, message",
    [
        ({"from": "yesterday"}, "Enter a valid date."),
        ({"to": "2025-02-30"}, "Enter a valid date."),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "The start date is after the end date."),
        ({"from": "2020-01-01", "to": "2025-01-01"}, "Choose at most 366 days."),
        ({"from": "9999-12-01", "to": "9999-12-31"}, "less than or equal to 9998-12-31"),
    ],
)
def test_bad_dates_on_the_overview_are_form_errors(client, project, query, message):
    _login(client, project, "viewer")

    response = client.get(_url("overview", project), query)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["overview"] is None


# ---------------------------------------------------------------------------------------------
# Interactions list: filters, search, pages


@pytest.fixture
def varied(project):
    """One interaction per filter to tell apart."""
    reviewer = user_with_role(project, "reviewer")
    liked, disliked, unrated, scored, reviewed = _log(
        project,
        {"question": "How do refunds work for the annual plan?", "created_at": _at(5)},
        {"question": "Which keyboard shortcuts exist?", "created_at": _at(4)},
        {"question": "Does sync work offline?", "created_at": _at(3)},
        {"question": "Can I share a notebook?", "created_at": _at(2)},
        {
            "question": "What is a refund?",
            "answer": "Money back for the monthly plan.",
            "created_at": _at(1),
        },
    )
    _rate(liked, thumb="up")
    _rate(disliked, thumb="down", correction="Press Ctrl+K.")
    _rate(scored, score=3)
    review_submit(
        interaction=reviewed,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="A refund returns your money.",
    )
    served = interaction_record(
        project=project,
        source="chat",
        messages=[{"role": "user", "content": "Served?"}],
        query_text="Served?",
        response="Served answer.",
        model_version=model_version_production_ensure(project=project),
        index_version=index_version_ensure_active(project=project),
    )
    return {
        "liked": liked,
        "disliked": disliked,
        "unrated": unrated,
        "scored": scored,
        "reviewed": reviewed,
        "served": served,
    }


@pytest.mark.django_db
def test_each_filter_narrows_the_list(client, project, varied):
    _login(client, project, "viewer")

    def listed(**query) -> set[str]:
        response = client.get(_url("interactions", project), query)
        assert response.status_code == 200
        names = {interaction.id: name for name, interaction in varied.items()}
        return {names[interaction_id] for interaction_id in _listed_ids(response)}

    everything = set(varied)
    served = varied["served"]
    assert listed() == listed(rating="") == everything
    assert listed(rating="up") == {"liked"}
    assert listed(rating="down") == {"disliked"}
    assert listed(rating="unrated") == {"unrated", "reviewed", "served"}
    assert listed(has_correction="on") == {"disliked", "reviewed"}
    assert listed(model_version=served.model_version_id) == {"served"}
    assert listed(index_version=served.index_version_id) == {"served"}
    assert listed(**{"from": _at(3).date().isoformat()}) == everything - {"liked", "disliked"}
    assert listed(**{"to": _at(4).date().isoformat()}) == {"liked", "disliked"}
    assert listed(rating="unrated", has_correction="on") == {"reviewed"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "q, expected",
    [
        ("refunds", {"liked", "reviewed"}),  # English stemming: refund(s)
        ("refund -annual", {"reviewed"}),
        ('"annual plan"', {"liked"}),
        ("monthly", {"reviewed"}),  # answers are searched too
        ("keyboard or offline", {"disliked", "unrated"}),
        ("zebra", set()),
    ],
)
def test_full_text_search_takes_web_search_syntax(client, project, varied, q, expected):
    _login(client, project, "viewer")
    names = {interaction.id: name for name, interaction in varied.items()}

    response = client.get(_url("interactions", project), {"q": q})

    assert {names[interaction_id] for interaction_id in _listed_ids(response)} == expected


@pytest.mark.django_db
def test_pages_follow_each_other_without_overlap_or_gaps_across_equal_timestamps(client, project):
    # Seven interactions share each minute, so both page boundaries fall inside a group of
    # equal timestamps.
    start = _at(1)
    _log(
        project,
        *(
            {"question": f"Question {n}", "created_at": start - timedelta(minutes=n // 7)}
            for n in range(120)
        ),
    )
    expected = list(
        Interaction.objects.filter(project=project)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )
    _login(client, project, "viewer")

    seen, page_sizes, query = [], [], ""
    while True:
        response = client.get(f"{_url('interactions', project)}?{query}")
        page_sizes.append(len(_listed_ids(response)))
        seen += _listed_ids(response)
        query = response.context["next_page_query"]
        if not query:
            break
        assert 'rel="next"' in response.content.decode()

    assert page_sizes == [50, 50, 20]
    assert seen == expected


@pytest.mark.django_db
def test_the_next_page_keeps_the_filters(client, project):
    _log(
        project,
        *({"question": f"refund {n}", "created_at": _at(1)} for n in range(55)),
        *({"question": f"other {n}", "created_at": _at(1)} for n in range(10)),
    )
    _login(client, project, "viewer")

    first = client.get(_url("interactions", project), {"q": "refund"})
    second = client.get(f"{_url('interactions', project)}?{first.context['next_page_query']}")

    assert len(_listed_ids(first)) == 50
    assert len(_listed_ids(second)) == 5
    assert "q=refund" in first.context["next_page_query"]


@pytest.mark.django_db
def test_htmx_requests_get_only_the_results(client, project, interaction):
    _login(client, project, "viewer")

    fragment = client.get(_url("interactions", project), HTTP_HX_REQUEST="true")
    restored = client.get(
        _url("interactions", project),
        HTTP_HX_REQUEST="true",
        HTTP_HX_HISTORY_RESTORE_REQUEST="true",
    )

    assert "<html" not in fragment.content.decode()
    assert "How long is the bin kept?" in fragment.content.decode()
    assert "<html" in restored.content.decode()
    assert "HX-Request" in fragment["Vary"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, message",
    [
        ({"cursor": "not-a-cursor"}, "This page link is broken"),
        ({"cursor": "MjAyNS0wMS0wMXxub3BlIQ"}, "This page link is broken"),
        ({"from": "2025-13-01"}, "Enter a valid date."),
        ({"to": "9999-12-31"}, "less than or equal to 9998-12-31"),
        ({"q": "refund\x00"}, "Null characters are not allowed."),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "The start date is after the end date."),
        ({"model_version": "abc"}, "Select a valid choice."),
        ({"index_version": "999999"}, "Select a valid choice."),
        ({"model_version": "99999999999999999999999"}, "Select a valid choice."),
        ({"rating": "sideways"}, "Select a valid choice."),
    ],
)
def test_bad_list_parameters_are_form_errors(client, project, interaction, query, message):
    _login(client, project, "viewer")

    response = client.get(_url("interactions", project), query)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["page"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_well_formed_cursor_at_the_ends_of_time_reads_a_page(client, project, moment):
    cursor = InteractionCursor(datetime.fromisoformat(moment), uuid.uuid4()).encode()
    _login(client, project, "viewer")

    response = client.get(_url("interactions", project), {"cursor": cursor})

    assert response.status_code == 200
    assert response.context["page"] is not None


@pytest.mark.django_db
def test_a_malformed_or_unknown_interaction_id_is_not_found(client, project):
    _login(client, project, "viewer")

    malformed = client.get(f"/dashboard/{project.slug}/interactions/not-a-uuid/")
    unknown = client.get(_url("interaction_detail", project, uuid.uuid4()))

    assert malformed.status_code == unknown.status_code == 404


# ---------------------------------------------------------------------------------------------
# Detail


@pytest.mark.django_db
def test_the_detail_shows_everything_logged_with_ratings_history_and_reviews(client, project):
    retrieved = [
        {
            "title": "Retention",
            "source_uri": "kb/retention.md",
            "heading": "The bin",
            "text": "Deleted notes stay 30 days.",
            "score": 0.0328,
            "rank": 1,
            "vector_similarity": 0.8123,
            "keyword_score": 0.41,
        }
    ]
    model_version = model_version_production_ensure(project=project)
    index_version = index_version_ensure_active(project=project)
    interaction = interaction_record(
        project=project,
        source="chat",
        query_text="How long is the bin kept?",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How long is the bin kept?"},
        ],
        response="Thirty days.",
        retrieved=retrieved,
        model_version=model_version,
        index_version=index_version,
        latency_ms=812,
        prompt_tokens=301,
        completion_tokens=7,
        metadata={"channel": "web-42"},
    )
    _rate(interaction, "rater-1", thumb="up", comment="first thoughts")
    _rate(interaction, "rater-1", thumb="down", correction="Thirty days, then purged.")
    reviewer = user_with_role(project, "reviewer")
    review_submit(interaction=interaction, reviewer=reviewer, decision="approved", note="ok")
    review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Thirty days in the bin.",
    )
    _login(client, project, "viewer")

    page = client.get(_url("interaction_detail", project, interaction.id)).content.decode()

    for expected in [
        "Be brief.",
        "Thirty days.",
        "Retention",
        "kb/retention.md",
        "The bin",
        "Deleted notes stay 30 days.",
        "0.8123",
        "0.41",
        "0.0328",
        "812 ms",
        "301 prompt",
        "7 completion",
        "web-42",
        model_version.name,
        f"v{index_version.number}",
        "first thoughts",
        "Thirty days, then purged.",
        "History (2 submissions)",
        "Thirty days in the bin.",
        "ok",
    ]:
        assert expected in page, expected
    assert page.index("Corrected: the ideal answer") < page.index("Approved: the answer")


@pytest.mark.django_db
def test_user_text_is_shown_as_text_everywhere(client, project):
    interaction = _log(
        project,
        {
            "question": XSS,
            "answer": XSS,
            "metadata": {"note": XSS},
            "retrieved": [{"title": XSS, "text": XSS, "source_uri": XSS, "rank": 1}],
        },
    )[0]
    _rate(interaction, XSS, thumb="down", comment=XSS, correction=XSS, tags=[XSS])
    review_submit(
        interaction=interaction,
        reviewer=user_with_role(project, "reviewer"),
        decision="corrected",
        ideal_answer=XSS,
        note=XSS,
    )
    _login(client, project, "viewer")

    for url in [_url("interactions", project), _url("interaction_detail", project, interaction.id)]:
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ---------------------------------------------------------------------------------------------
# Exports


@pytest.mark.django_db
def test_the_csv_export_streams_the_filtered_list_with_formulas_neutralised(client, project):
    equals_plus, minus_at, multiline, _ = _log(
        project,
        {"question": '=HYPERLINK("http://evil")', "answer": "+1+1", "created_at": _at(3)},
        {"question": "-2+3", "answer": "@SUM(A1)", "created_at": _at(2)},
        {"question": 'Plain, with "quotes"\nand a newline', "created_at": _at(1)},
        {"question": "Not rated", "created_at": _at(1, hour=13)},
    )
    _rate(equals_plus, thumb="down", score=2, correction="=cmd|' /C calc'!A0")
    _rate(minus_at, thumb="down")
    _rate(multiline, thumb="up")
    _login(client, project, "viewer")

    response = client.get(_url("interactions_export_csv", project), {"rating": "down"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert re.fullmatch(
        rf'attachment; filename="{project.slug}-interactions-\d{{8}}-\d{{6}}\.csv"',
        response["Content-Disposition"],
    )
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert [row["id"] for row in rows] == [str(minus_at.id), str(equals_plus.id)]
    assert (rows[0]["query"], rows[0]["response"]) == ("'-2+3", "'@SUM(A1)")
    assert (rows[1]["query"], rows[1]["response"]) == ('\'=HYPERLINK("http://evil")', "'+1+1")
    assert (rows[1]["thumbs_down"], rows[1]["mean_score"], rows[1]["rating_corrections"]) == (
        "1",
        "2.0",
        "1",
    )
    assert rows[1]["model_name"] == "gpt-app"

    everything = list(
        csv.DictReader(
            io.StringIO(_body(client.get(_url("interactions_export_csv", project))).decode())
        )
    )
    assert len(everything) == 4
    assert everything[1]["query"] == 'Plain, with "quotes"\nand a newline'


@pytest.mark.django_db
def test_the_jsonl_export_holds_each_filtered_interaction_in_full(client, project, varied):
    _login(client, project, "viewer")

    response = client.get(_url("interactions_export_jsonl", project), {"has_correction": "on"})

    assert response.streaming
    assert response["Content-Disposition"].endswith('.jsonl"')
    records = [json.loads(line) for line in _body(response).decode().splitlines()]
    assert [record["id"] for record in records] == [
        str(varied["reviewed"].id),
        str(varied["disliked"].id),
    ]
    reviewed, disliked = records
    assert reviewed["reviews"][0]["decision"] == "corrected"
    assert reviewed["reviews"][0]["ideal_answer"] == "A refund returns your money."
    assert reviewed["messages"] == [{"role": "user", "content": "What is a refund?"}]
    assert disliked["ratings"][0]["thumb"] == "down"
    assert disliked["ratings"][0]["correction"] == "Press Ctrl+K."
    assert disliked["model_name"] == "gpt-app"


@pytest.mark.django_db
def test_the_list_links_to_exports_of_the_same_filters(client, project, varied):
    _login(client, project, "viewer")

    page = client.get(_url("interactions", project), {"rating": "down", "q": "keyboard"})

    html = page.content.decode()
    assert f"{_url('interactions_export_csv', project)}?rating=down&amp;q=keyboard" in html
    assert f"{_url('interactions_export_jsonl', project)}?rating=down&amp;q=keyboard" in html


@pytest.mark.django_db
def test_an_export_with_bad_filters_is_refused_clearly(client, project):
    _login(client, project, "viewer")

    response = client.get(_url("interactions_export_csv", project), {"from": "someday"})

    assert response.status_code == 400
    assert "Enter a valid date." in response.content.decode()


# ---------------------------------------------------------------------------------------------
# API keys


RAW_KEY = re.compile(r"fw_(?:sk|pk)_[A-Za-z0-9_-]{20,}")
LOG_ONE = {"interactions": [{"messages": [{"role": "user", "content": "q"}], "response": "a"}]}


def _log_through_api(client, raw_key):
    return client.post(
        "/api/v1/interactions",
        data=json.dumps(LOG_ONE),
        content_type="application/json",
        **bearer(raw_key),
    )


@pytest.mark.django_db
def test_an_admin_creates_a_key_sees_it_once_and_revoking_it_locks_it_out(project):
    browser = Client(enforce_csrf_checks=True)
    _login(browser, project, "admin")
    browser.get(_url("keys", project))
    csrf = {"csrfmiddlewaretoken": browser.cookies["csrftoken"].value}

    created = browser.post(_url("keys", project), {"name": "backend", "kind": "secret", **csrf})

    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"]
    raw_key = RAW_KEY.search(created.content.decode()).group()
    assert _log_through_api(Client(), raw_key).status_code == 201
    listing = browser.get(_url("keys", project)).content.decode()
    assert raw_key not in listing
    assert raw_key[:12] in listing and "backend" in listing

    api_key = ApiKey.objects.get(name="backend")
    confirmation = browser.get(_url("key_revoke", project, api_key.pk))
    assert "Revoke the key" in confirmation.content.decode()
    api_key.refresh_from_db()
    assert api_key.is_active  # asking is not revoking

    revoked = browser.post(_url("key_revoke", project, api_key.pk), csrf, follow=True)

    assert revoked.redirect_chain == [(_url("keys", project), 302)]
    assert "no longer works" in revoked.content.decode()
    assert _log_through_api(Client(), raw_key).status_code == 401


@pytest.mark.django_db
def test_key_forms_without_the_csrf_token_are_refused(project, stored_key):
    browser = Client(enforce_csrf_checks=True)
    _login(browser, project, "admin")

    created = browser.post(_url("keys", project), {"name": "forged", "kind": "secret"})
    revoked = browser.post(_url("key_revoke", project, stored_key.pk))

    assert created.status_code == revoked.status_code == 403
    assert not ApiKey.objects.filter(name="forged").exists()
    stored_key.refresh_from_db()
    assert stored_key.is_active


@pytest.mark.django_db
def test_a_public_key_keeps_its_normalised_origins(client, project):
    _login(client, project, "admin")

    response = client.post(
        _url("keys", project),
        {
            "name": "widget",
            "kind": "public",
            "allowed_origins": "https://App.example/\n\n  http://localhost:3000  \n",
        },
    )

    assert RAW_KEY.search(response.content.decode()).group().startswith("fw_pk_")
    api_key = ApiKey.objects.get(name="widget")
    assert api_key.allowed_origins == ["https://app.example", "http://localhost:3000"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "", "kind": "secret"}, "This field is required."),
        ({"name": "w", "kind": "master"}, "Select a valid choice."),
        ({"name": "w", "kind": "public"}, "A public key needs at least one allowed origin"),
        (
            {"name": "w", "kind": "public", "allowed_origins": "app.example"},
            "Not an http(s) origin",
        ),
        (
            {"name": "w", "kind": "public", "allowed_origins": "ftp://app.example"},
            "Not an http(s) origin",
        ),
        (
            {"name": "w", "kind": "public", "allowed_origins": "https://app.example/widget"},
            "Not an http(s) origin",
        ),
        (
            {"name": "w", "kind": "public", "allowed_origins": "https://user@app.example"},
            "Not an http(s) origin",
        ),
        (
            {"name": "w", "kind": "secret", "allowed_origins": "https://app.example"},
            "Secret keys are used from servers and take no origins",
        ),
    ],
)
def test_invalid_key_forms_show_errors_and_create_nothing(client, project, fields, message):
    _login(client, project, "admin")

    response = client.post(_url("keys", project), fields)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not RAW_KEY.search(response.content.decode())
    assert not ApiKey.objects.exists()
