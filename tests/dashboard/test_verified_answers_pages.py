"""The verified answers page (the list with the questions each answer served, its filters and
pages), the serving policy on it (who may change it, validation, calibration), how an
interaction's page shows a verified answer, the admin's pages, and the page in a browser."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dashboard.selectors.verified_answers import SERVED_LISTED, VERIFIED_ANSWERS_PAGE_SIZE
from feedback.models import ProjectMembership
from flywheel.models import Interaction, ServingPolicy, VerifiedAnswer
from flywheel.services.interactions import interaction_record
from flywheel.services.verified_answers import (
    DEFAULT_MATCH_THRESHOLD,
    ServingPolicyInvalid,
    serving_policy_get,
    serving_policy_update,
)
from tests.conftest import SCREENSHOTS, user_with_role
from tests.factories import FACTS, ProjectFactory, served

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
QUESTION_VECTOR = [0.0] * 383 + [1.0]


def _url(name: str, project, *args) -> str:
    return reverse(f"dashboard:{name}", args=[project.slug, *args])


def _login(client, project, role: str):
    user = user_with_role(project, role)
    client.force_login(user)
    return user


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _verified(
    project,
    question: str,
    answer: str = "Refunds take 14 days.",
    *,
    status=VerifiedAnswer.Status.ACTIVE,
    status_reason="",
    days_ago: float = 0,
    evidence=None,
) -> VerifiedAnswer:
    """A verified answer made from a corrected interaction of its own."""
    corrected = served(project, question)
    return VerifiedAnswer.objects.create(
        project=project,
        interaction=corrected,
        review_id=corrected.pk.int % 10**9,
        question=question,
        answer=answer,
        evidence=evidence or [],
        status=status,
        status_reason=status_reason,
        question_embedding=QUESTION_VECTOR,
        embedding_model="test",
        approved_at=timezone.now() - timedelta(days=days_ago),
    )


def _served_by(
    verified: VerifiedAnswer, question: str, *, similarity=0.91, answered_from="verified_answer"
) -> Interaction:
    match = {} if similarity is None else {"similarity": similarity, "threshold": 0.8}
    return interaction_record(
        project=verified.project,
        source=Interaction.Source.CHAT,
        messages=[{"role": "user", "content": question}],
        query_text=question,
        response=verified.answer,
        answered_from=answered_from,
        verified_answer=verified,
        metadata={"flywheel": {"verified_match": match}},
    )


def _rows(response) -> list:
    return response.context["listing"].rows


# ---------------------------------------------------------------------------------------------
# Who may see and do what

ACTIONS = ["serving_policy", "verified_answers_calibrate"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["verified_answers", *ACTIONS])
def test_anonymous_visitors_are_sent_to_sign_in(client, project, name):
    send = client.post if name in ACTIONS else client.get

    response = send(_url(name, project))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["verified_answers", *ACTIONS])
def test_users_of_other_projects_do_not_learn_the_project_exists(client, project, name):
    _login(client, ProjectFactory(), "admin")
    send = client.post if name in ACTIONS else client.get

    assert send(_url(name, project)).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
def test_every_role_reads_the_page_and_finds_it_in_the_navigation(client, project, role):
    _login(client, project, role)

    response = client.get(_url("verified_answers", project))

    assert response.status_code == 200
    assert f'href="{_url("verified_answers", project)}" aria-current="page"' in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_the_page_accepts_no_writes_and_the_actions_only_posts(client, project):
    _login(client, project, "admin")

    assert client.post(_url("verified_answers", project)).status_code == 405
    for name in ACTIONS:
        assert client.get(_url(name, project)).status_code == 405


# ---------------------------------------------------------------------------------------------
# The list


@pytest.mark.django_db
def test_the_list_shows_each_answer_with_the_questions_it_served_and_how_many(client, project):
    refunds = _verified(project, "How do I get a refund?", "Ask within 14 days.", days_ago=2)
    plans = _verified(project, "Which plans are there?", "Free and Pro.", days_ago=1)
    paraphrase = _served_by(refunds, "How can I get my money back?", similarity=0.91)
    false_match = _served_by(refunds, "How do I get an invoice?", similarity=0.873)
    first_passage = _served_by(refunds, "refund please", similarity=0.95, answered_from="generated")
    _login(client, project, "viewer")

    response = client.get(_url("verified_answers", project))

    rows = _rows(response)
    assert [row.verified_answer for row in rows] == [plans, refunds]  # newest approval first
    assert [row.served_count for row in rows] == [0, 3]
    served_questions = rows[1].served_latest
    assert [question.interaction_id for question in served_questions] == [
        first_passage.id,
        false_match.id,
        paraphrase.id,
    ]
    assert [question.similarity for question in served_questions] == [0.95, 0.873, 0.91]
    assert [question.served_verbatim for question in served_questions] == [False, True, True]
    page = response.content.decode()
    for question in ("How can I get my money back?", "How do I get an invoice?", "refund please"):
        assert question in page
    assert "<td>0.873</td>" in page
    assert "as the first passage" in page
    assert "Questions it answered (3)" in page
    assert _url("interaction_detail", project, false_match.id) in page
    assert _url("interaction_detail", project, refunds.interaction_id) in page


@pytest.mark.django_db
def test_a_served_question_without_a_recorded_similarity_says_so(client, project):
    verified = _verified(project, "How do I get a refund?")
    _served_by(verified, "Refund?", similarity=None)
    _served_by(verified, "Money back?", similarity="high")
    _login(client, project, "viewer")

    response = client.get(_url("verified_answers", project))

    assert [q.similarity for q in _rows(response)[0].served_latest] == [None, None]
    assert response.content.decode().count("not recorded") == 2


@pytest.mark.django_db
def test_many_served_questions_are_counted_in_full_and_the_latest_are_listed(client, project):
    verified = _verified(project, "How do I get a refund?")
    for number in range(SERVED_LISTED + 2):
        _served_by(verified, f"Refund question {number}")
    _login(client, project, "viewer")

    response = client.get(_url("verified_answers", project))

    row = _rows(response)[0]
    assert row.served_count == SERVED_LISTED + 2
    assert len(row.served_latest) == SERVED_LISTED
    assert row.served_latest[0].question == f"Refund question {SERVED_LISTED + 1}"
    assert f"The latest {SERVED_LISTED} are listed." in response.content.decode()


def _page_queries(client, project) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(_url("verified_answers", project)).status_code == 200
    return len(queries)


@pytest.mark.django_db
def test_the_number_of_queries_does_not_grow_with_the_rows(client, project):
    _login(client, project, "viewer")
    first = _verified(project, "Question 0")
    _served_by(first, "Served 0")
    _page_queries(client, project)  # the serving policy is made on the first visit
    one_row = _page_queries(client, project)

    for number in range(1, 6):
        verified = _verified(project, f"Question {number}")
        _served_by(verified, f"Served {number}a")
        _served_by(verified, f"Served {number}b")
    many_rows = _page_queries(client, project)

    assert many_rows == one_row


@pytest.mark.django_db
def test_the_status_filter_narrows_the_list_and_shows_counts_and_reasons(client, project):
    active = _verified(project, "Active question")
    stale = _verified(
        project,
        "Stale question",
        status=VerifiedAnswer.Status.STALE,
        status_reason="document 4 (docs/billing.md) changed",
    )
    withdrawn = _verified(
        project,
        "Withdrawn question",
        status=VerifiedAnswer.Status.WITHDRAWN,
        status_reason="review 9: rejected",
    )
    _login(client, project, "viewer")

    by_status = {
        status: [
            row.verified_answer
            for row in _rows(client.get(_url("verified_answers", project), {"status": status}))
        ]
        for status in ("", "active", "stale", "withdrawn")
    }
    page = client.get(_url("verified_answers", project), {"status": "stale"}).content.decode()

    assert set(by_status[""]) == {active, stale, withdrawn}
    assert by_status["active"] == [active]
    assert by_status["stale"] == [stale]
    assert by_status["withdrawn"] == [withdrawn]
    assert "document 4 (docs/billing.md) changed" in page
    assert "Active question" not in page
    assert ">Any (3)<" in page and ">Stale (1)<" in page


@pytest.mark.django_db
@pytest.mark.parametrize("query", [{"status": "deleted"}, {"answer": "x"}, {"answer": "-3"}])
def test_a_bad_filter_is_refused_with_a_message(client, project, query):
    _verified(project, "How do I get a refund?")
    _login(client, project, "viewer")

    response = client.get(_url("verified_answers", project), query)

    assert response.status_code == 200
    assert response.context["listing"] is None
    assert 'role="alert"' in response.content.decode()


@pytest.mark.django_db
def test_one_verified_answer_can_be_shown_alone(client, project):
    wanted = _verified(project, "How do I get a refund?")
    _verified(project, "Which plans are there?")
    _login(client, project, "viewer")

    response = client.get(_url("verified_answers", project), {"answer": wanted.pk})

    assert [row.verified_answer for row in _rows(response)] == [wanted]
    assert f"Showing verified answer #{wanted.pk} only" in response.content.decode()


@pytest.mark.django_db
def test_the_list_pages_by_fifty_keeping_the_filter(client, project):
    for number in range(VERIFIED_ANSWERS_PAGE_SIZE + 1):
        _verified(project, f"Question {number}", days_ago=number)
    _login(client, project, "viewer")

    first = client.get(_url("verified_answers", project), {"status": "active"})
    second = client.get(_url("verified_answers", project), {"status": "active", "page": "2"})

    assert len(_rows(first)) == VERIFIED_ANSWERS_PAGE_SIZE
    assert [row.verified_answer.question for row in _rows(second)] == [
        f"Question {VERIFIED_ANSWERS_PAGE_SIZE}"
    ]
    assert 'href="?status=active&amp;page=2"' in first.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("role, links_to_queue", [("viewer", False), ("reviewer", True)])
def test_with_no_verified_answers_the_page_says_where_they_come_from(
    client, project, role, links_to_queue
):
    _login(client, project, role)

    page = client.get(_url("verified_answers", project)).content.decode()

    assert "No verified answers yet" in page
    assert "review queue" in page
    assert (f'href="{_url("queue", project)}"' in page.split("<main>")[1]) is links_to_queue


@pytest.mark.django_db
def test_user_text_is_shown_as_text(client, project):
    verified = _verified(
        project,
        XSS,
        XSS,
        status=VerifiedAnswer.Status.STALE,
        status_reason=XSS,
        evidence=[{"title": XSS, "text": XSS}],
    )
    _served_by(verified, XSS)
    _login(client, project, "viewer")

    page = client.get(_url("verified_answers", project)).content.decode()

    assert "<script>window.__xss" not in page
    assert '<img src=x onerror="window.__xss=1">' not in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page


# ---------------------------------------------------------------------------------------------
# The serving policy


def _policy_data(**changes) -> dict:
    data = {
        "verified_answers": "verbatim",
        "verified_match_threshold": "",
        "verified_match_evidence_depth": "5",
        "calibration_false_match_rate": "0.02",
        "answer_mode": "generate",
        "groundedness_threshold": "0.6",
    }
    return data | changes


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_only_admins_change_the_policy_or_calibrate(client, project, role):
    _login(client, project, role)
    stored = ServingPolicy.objects.values().get(pk=serving_policy_get(project=project).pk)

    page = client.get(_url("verified_answers", project)).content.decode()
    data = _policy_data(verified_match_threshold="0.9", answer_mode="quote")
    saved = client.post(_url("serving_policy", project), data)
    calibrated = client.post(_url("verified_answers_calibrate", project))

    assert saved.status_code == calibrated.status_code == 403
    assert ServingPolicy.objects.values().get(project=project) == stored
    assert 'name="verified_match_threshold"' not in page
    assert _url("verified_answers_calibrate", project) not in page
    assert "Only admins change the serving policy." in page
    assert "Serve the verified answer as it was approved" in page  # the settings, read-only


@pytest.mark.django_db
def test_an_admin_changes_the_policy_and_the_threshold_set_by_hand_is_in_use(client, project):
    _login(client, project, "admin")

    response = client.post(
        _url("serving_policy", project),
        _policy_data(
            verified_answers="first_passage",
            verified_match_threshold="0.9",
            verified_match_evidence_depth="0",
            calibration_false_match_rate="0.5",
            answer_mode="grounded",
            groundedness_threshold="1",
        ),
        follow=True,
    )

    policy = serving_policy_get(project=project)
    assert response.redirect_chain == [(_url("verified_answers", project) + "#serving-policy", 302)]
    assert any("Serving policy saved" in message for message in _messages(response))
    assert (policy.verified_answers, policy.answer_mode) == ("first_passage", "grounded")
    assert policy.verified_match_threshold == 0.9
    assert policy.verified_match_evidence_depth == 0
    assert (policy.calibration_false_match_rate, policy.groundedness_threshold) == (0.5, 1.0)
    assert response.context["summary"].threshold == 0.9
    assert "set by hand" in response.content.decode()


@pytest.mark.django_db
def test_an_empty_threshold_goes_back_to_the_default_until_calibrated(client, project):
    serving_policy_update(project=project, verified_match_threshold=0.7)
    _login(client, project, "admin")

    response = client.post(_url("serving_policy", project), _policy_data(), follow=True)

    assert serving_policy_get(project=project).verified_match_threshold is None
    summary = response.context["summary"]
    assert (summary.threshold, summary.threshold_source) == (DEFAULT_MATCH_THRESHOLD, "default")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes, field, message",
    [
        (
            {"verified_match_threshold": "1.5"},
            "verified_match_threshold",
            "less than or equal to 1",
        ),
        (
            {"verified_match_threshold": "-0.1"},
            "verified_match_threshold",
            "greater than or equal to 0",
        ),
        ({"groundedness_threshold": "2"}, "groundedness_threshold", "less than or equal to 1"),
        (
            {"verified_match_evidence_depth": "21"},
            "verified_match_evidence_depth",
            "less than or equal to 20",
        ),
        (
            {"verified_match_evidence_depth": "-1"},
            "verified_match_evidence_depth",
            "greater than or equal to 0",
        ),
        ({"calibration_false_match_rate": "0"}, "calibration_false_match_rate", "Must be above 0"),
        (
            {"calibration_false_match_rate": "0.6"},
            "calibration_false_match_rate",
            "less than or equal to 0.5",
        ),
        ({"verified_match_threshold": "nan"}, "verified_match_threshold", "Enter a number"),
        ({"groundedness_threshold": "inf"}, "groundedness_threshold", "Enter a number"),
        (
            {"calibration_false_match_rate": "-Infinity"},
            "calibration_false_match_rate",
            "Enter a number",
        ),
        (
            {"verified_match_evidence_depth": "99999999999999999999"},
            "verified_match_evidence_depth",
            "less than or equal to 20",
        ),
        ({"answer_mode": "quote\x00"}, "answer_mode", "Select a valid choice"),
        ({"answer_mode": "guess"}, "answer_mode", "Select a valid choice"),
    ],
)
def test_bad_policy_values_are_refused_with_a_message_and_nothing_is_saved(
    client, project, changes, field, message
):
    _login(client, project, "admin")
    stored = ServingPolicy.objects.values().get(pk=serving_policy_get(project=project).pk)
    # A valid change alongside the bad one: it must not be saved either.
    data = _policy_data(verified_answers="off", **changes)

    response = client.post(_url("serving_policy", project), data)

    assert response.status_code == 200
    assert message in " ".join(response.context["policy_form"].errors[field])
    assert "Nothing was saved" in response.content.decode()
    assert ServingPolicy.objects.values().get(project=project) == stored


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {"verified_match_threshold": 1.01},
        {"groundedness_threshold": float("nan")},
        {"verified_match_evidence_depth": 2.5},
        {"verified_match_evidence_depth": True},
        {"calibration_false_match_rate": 0},
        {"answer_mode": "guess"},
        {"calibrated_threshold": 0.5},
    ],
)
def test_the_service_refuses_what_the_form_refuses(project, fields):
    stored = ServingPolicy.objects.values().get(pk=serving_policy_get(project=project).pk)

    with pytest.raises(ServingPolicyInvalid) as refused:
        serving_policy_update(project=project, verified_answers="off", **fields)

    assert set(refused.value.errors) == set(fields)
    assert ServingPolicy.objects.values().get(project=project) == stored


@pytest.mark.django_db
def test_calibrating_records_the_figures_and_the_page_shows_them(client, project):
    for question, answer in FACTS:
        _verified(project, question, answer)
    _login(client, project, "admin")

    response = client.post(_url("verified_answers_calibrate", project), follow=True)

    policy = serving_policy_get(project=project)
    calibration = policy.calibration
    assert calibration["questions"] == len(FACTS)
    assert set(calibration["closest_other_similarity"]) == {"p50", "p90", "max"}
    assert policy.calibrated_threshold == pytest.approx(calibration["threshold"], abs=1e-4)
    assert any("Calibrated on 8 active verified answers" in m for m in _messages(response))
    summary = response.context["summary"]
    assert (summary.threshold_source, summary.calibration_outdated) == ("calibrated", [])
    page = response.content.decode()
    assert f"{policy.calibrated_threshold:.3f}" in page
    assert "calibrated on the project&#x27;s verified questions" in page
    assert re.search(r"p50 0\.\d{3} · p90 0\.\d{3} · max 0\.\d{3}", page)
    # The verified questions were embedded again with the retriever serving uses.
    assert not VerifiedAnswer.objects.filter(embedding_model="test").exists()


@pytest.mark.django_db
def test_a_calibration_on_too_few_answers_says_the_default_applies(client, project):
    _verified(project, "How do I get a refund?")
    _login(client, project, "admin")

    response = client.post(_url("verified_answers_calibrate", project), follow=True)

    assert serving_policy_get(project=project).calibration["questions"] == 1
    assert any("fewer than 8 verified answers" in m for m in _messages(response))
    assert response.context["summary"].threshold == DEFAULT_MATCH_THRESHOLD


@pytest.mark.django_db
def test_a_calibration_made_for_another_false_match_rate_is_flagged(client, project):
    policy = serving_policy_get(project=project)
    policy.calibrated_threshold = 0.83
    policy.calibration = {
        "questions": 9,
        "false_match_rate": 0.02,
        "threshold": 0.83,
        "measured_at": timezone.now().isoformat(),
    }
    policy.save()
    serving_policy_update(project=project, calibration_false_match_rate=0.1)
    _login(client, project, "viewer")

    page = client.get(_url("verified_answers", project)).content.decode()

    assert "The calibration no longer fits" in page
    assert "false-match rate of 0.02; the policy now asks for 0.1" in page


# ---------------------------------------------------------------------------------------------
# An interaction's page


@pytest.mark.django_db
def test_an_interaction_answered_by_a_verified_answer_links_to_it(client, project):
    verified = _verified(project, "How do I get a refund?")
    interaction = _served_by(verified, "How can I get my money back?", similarity=0.91)
    _login(client, project, "viewer")

    page = client.get(_url("interaction_detail", project, interaction.id)).content.decode()

    assert "A verified answer" in page
    assert f'href="{_url("verified_answers", project)}?answer={verified.pk}"' in page
    assert f"verified answer #{verified.pk}" in page
    assert "Similarity 0.910" in page
    assert "(threshold 0.800)" in page


@pytest.mark.django_db
def test_a_generated_answer_says_so(client, project):
    interaction = interaction_record(
        project=project,
        source=Interaction.Source.CHAT,
        messages=[{"role": "user", "content": "Hi"}],
        query_text="Hi",
        response="Hello.",
        answered_from=Interaction.AnsweredFrom.GENERATED,
    )
    _login(client, project, "viewer")

    page = client.get(_url("interaction_detail", project, interaction.id)).content.decode()

    assert "Generated by the model" in page
    assert "verified answer #" not in page


# ---------------------------------------------------------------------------------------------
# The admin


@pytest.mark.django_db
def test_the_admin_lists_and_shows_the_new_models(client, project):
    verified = _verified(project, "How do I get a refund?")
    policy = serving_policy_get(project=project)
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-root"))

    pages = [
        reverse("admin:flywheel_servingpolicy_changelist"),
        reverse("admin:flywheel_servingpolicy_change", args=[policy.pk]),
        reverse("admin:flywheel_verifiedanswer_changelist")
        + f"?status=active&project__id__exact={project.pk}",
        reverse("admin:flywheel_verifiedanswer_change", args=[verified.pk]),
        reverse("admin:flywheel_embeddingmodelversion_changelist"),
    ]

    for url in pages:
        assert client.get(url).status_code == 200, url
    assert client.get(reverse("admin:flywheel_verifiedanswer_add")).status_code == 403


@pytest.mark.django_db
def test_the_admin_refuses_a_bad_policy_and_saves_a_good_one(client, project):
    policy = serving_policy_get(project=project)
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-root"))
    url = reverse("admin:flywheel_servingpolicy_change", args=[policy.pk])

    refused = client.post(url, _policy_data(calibration_false_match_rate="0"))
    saved = client.post(url, _policy_data(verified_match_threshold="0.85"))

    assert refused.status_code == 200
    assert "must be above 0" in refused.content.decode()
    assert saved.status_code == 302
    policy.refresh_from_db()
    assert (policy.verified_match_threshold, policy.calibration_false_match_rate) == (0.85, 0.02)


# ---------------------------------------------------------------------------------------------
# In a browser


def test_the_page_in_a_browser(signed_in_page, live_server, project):
    passage = {
        "title": "Notes",
        "heading": "Notes > Bin",
        "source_uri": "docs/notes.md",
        "text": "Deleted notes stay in the bin for 45 days.",
    }
    verified = _verified(
        project,
        "How long are deleted notes kept in the bin?",
        "Deleted notes stay in the bin for 45 days, then they are gone for good.",
        evidence=[passage],
    )
    _served_by(verified, "How long do deleted notes stay in the bin?", similarity=0.912)
    _served_by(verified, "How long is a shared shelf kept?", similarity=0.81)
    _verified(
        project,
        XSS,
        XSS,
        status=VerifiedAnswer.Status.STALE,
        status_reason="document 3 (docs/billing.md) changed",
        days_ago=1,
    )
    _verified(
        project,
        "Which plans are there?",
        "Free and Pro.",
        days_ago=3,
        status=VerifiedAnswer.Status.WITHDRAWN,
        status_reason="review 12: rejected",
    )
    page = signed_in_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{live_server.url}{_url('verified_answers', project)}")
    served_list = page.locator(f"#verified-{verified.pk} details.verified-served")
    served_list.locator("summary").click()

    assert served_list.get_by_text("How long is a shared shelf kept?").is_visible()
    assert "0.810" in served_list.inner_text()
    assert page.locator("table.verified-answers > tbody > tr").count() == 3
    assert XSS in page.locator("main").inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.locator("input[name=verified_match_threshold]").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "verified_answers_viewer.png"), full_page=True)

    ProjectMembership.objects.filter(project=project).update(role="admin")
    ServingPolicy.objects.filter(project=project).update(
        calibrated_threshold=0.8312,
        calibration={
            "questions": 40,
            "false_match_rate": 0.02,
            "threshold": 0.8312,
            "closest_other_similarity": {"p50": 0.61, "p90": 0.77, "max": 0.83},
            "embedding_model": "/models/retriever-v2",
            "measured_at": timezone.now().isoformat(),
        },
    )
    page.reload()
    assert "The calibration no longer fits" in page.locator("#serving-policy").inner_text()
    page.select_option("select[name=status]", "stale")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/verified-answers/?status=stale")
    assert page.locator("table.verified-answers > tbody > tr").count() == 1
    page.goto(f"{live_server.url}{_url('verified_answers', project)}")
    page.fill("input[name=verified_match_threshold]", "0.88")
    page.click("text=Save serving policy")
    page.wait_for_url("**/verified-answers/#serving-policy")
    assert "Serving policy saved" in page.locator(".messages").inner_text()
    assert serving_policy_get(project=project).verified_match_threshold == 0.88
    page.screenshot(path=str(SCREENSHOTS / "verified_answers_admin.png"), full_page=True)
    assert page.problems == []
