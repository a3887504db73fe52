"""Verified answers: an approved correction is served for its question and for a question that
asks the same thing, is withdrawn by a revised or rejected review, goes stale (and back to the
review queue) when a document it rests on changes; and the quote answer mode."""

import json

import pytest
from django.contrib.auth import get_user_model

from feedback.models import Review
from feedback.services.ratings import rating_submit
from feedback.services.review_queue import QueuePriority, review_queue_candidates
from feedback.services.reviews import review_submit
from flywheel.models import Interaction, ServingPolicy, VerifiedAnswer
from flywheel.selectors.retrieval import retrieve
from flywheel.services.chat import default_retrieval_options
from flywheel.services.documents import document_upsert
from flywheel.services.interactions import interaction_record
from flywheel.services.verified_answers import verified_answers_calibrate
from tests.conftest import DEMO_KNOWLEDGE_BASE, bearer, index_folder

pytestmark = pytest.mark.django_db

BIN_QUESTION = "How long does the bin keep deleted notes?"
BIN_ANSWER = "A deleted note stays in the shelf's bin for 30 days, then it is erased for good."
BIN_PARAPHRASE = "For how many days are deleted notes kept in the bin before being erased?"
# Same page, another fact: must not be answered with the bin's verified answer.
OTHER_FACT = "How long is the audit log kept?"


@pytest.fixture
def reviewer(db):
    return get_user_model().objects.create_user(username="reviewer", password="x")


@pytest.fixture
def indexed_project(project):
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    return project


def _served(project, question: str, answer: str = "I do not know.") -> Interaction:
    """An interaction as the chat endpoint logs it, with the passages really retrieved."""
    retrieval = retrieve(project=project, query=question, options=default_retrieval_options())
    return interaction_record(
        project=project,
        source=Interaction.Source.CHAT,
        messages=[{"role": "user", "content": question}],
        query_text=question,
        response=answer,
        retrieved=[
            chunk.as_log_entry(index_version_id=retrieval.index_version.pk)
            for chunk in retrieval.chunks
        ],
        index_version=retrieval.index_version,
        answered_from=Interaction.AnsweredFrom.GENERATED,
    )


def _corrected(project, reviewer, question=BIN_QUESTION, answer=BIN_ANSWER) -> Interaction:
    interaction = _served(project, question)
    review_submit(
        interaction=interaction, reviewer=reviewer, decision="corrected", ideal_answer=answer
    )
    return interaction


def _ask(client, key, question: str, **extra) -> dict:
    body = {
        "model": "flywheel",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        **extra,
    }
    response = client.post(
        "/v1/chat/completions", json.dumps(body), content_type="application/json", **bearer(key)
    )
    assert response.status_code == 200, response.content
    return response


def test_an_approved_correction_becomes_a_verified_answer_with_its_evidence(
    indexed_project, reviewer
):
    interaction = _corrected(indexed_project, reviewer)

    verified = VerifiedAnswer.objects.get(interaction=interaction)
    assert verified.status == VerifiedAnswer.Status.ACTIVE
    assert (verified.question, verified.answer) == (BIN_QUESTION, BIN_ANSWER)
    assert verified.review_id == Review.objects.get(interaction=interaction).pk
    assert any("30 days" in passage["text"] for passage in verified.evidence)
    assert all(passage["source_uri"].endswith("security.md") for passage in verified.evidence)
    assert len(verified.source_documents) == 1


def test_an_end_user_correction_counts_once_a_reviewer_approves_it(indexed_project, reviewer):
    interaction = _served(indexed_project, BIN_QUESTION)
    rating_submit(
        interaction=interaction, rater_id="u", source="api", thumb="down", correction=BIN_ANSWER
    )
    assert not VerifiedAnswer.objects.exists(), "an end user's word alone is not verified"

    review_submit(interaction=interaction, reviewer=reviewer, decision="approved")

    assert VerifiedAnswer.objects.get(interaction=interaction).answer == BIN_ANSWER


def test_the_question_and_its_paraphrase_are_served_the_verified_answer(
    client, indexed_project, secret_key, reviewer
):
    verified = VerifiedAnswer.objects.get(interaction=_corrected(indexed_project, reviewer))

    for question in (BIN_QUESTION, BIN_PARAPHRASE):
        body = _ask(client, secret_key, question).json()
        assert body["choices"][0]["message"]["content"] == BIN_ANSWER
        assert body["flywheel"]["answered_from"] == "verified_answer"
        assert body["flywheel"]["verified_answer"]["review_id"] == verified.review_id
        assert body["flywheel"]["verified_answer"]["evidence"][0]["source_uri"].endswith(
            "security.md"
        )
        served = Interaction.objects.get(pk=body["flywheel"]["interaction_id"])
        assert served.answered_from == Interaction.AnsweredFrom.VERIFIED_ANSWER
        assert served.verified_answer == verified
        match = served.metadata["flywheel"]["verified_match"]
        assert match["similarity"] >= match["threshold"]
    assert verified.served.count() == 2


def test_a_question_about_another_fact_is_not_served_the_verified_answer(
    client, indexed_project, secret_key, reviewer
):
    _corrected(indexed_project, reviewer)

    body = _ask(client, secret_key, OTHER_FACT).json()

    assert body["flywheel"]["answered_from"] == "generated"
    assert body["choices"][0]["message"]["content"] != BIN_ANSWER


def test_streaming_serves_the_verified_answer_too(client, indexed_project, secret_key, reviewer):
    _corrected(indexed_project, reviewer)

    response = _ask(client, secret_key, BIN_PARAPHRASE, stream=True)
    events = [
        json.loads(line[len("data: ") :])
        for line in b"".join(response.streaming_content).decode().splitlines()
        if line.startswith("data: {")
    ]

    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == BIN_ANSWER
    interaction = Interaction.objects.get(pk=response["X-Flywheel-Interaction-Id"])
    assert interaction.answered_from == Interaction.AnsweredFrom.VERIFIED_ANSWER


def test_as_first_passage_the_generator_reads_the_verified_answer_first(
    client, indexed_project, secret_key, reviewer
):
    _corrected(indexed_project, reviewer)
    ServingPolicy.objects.update_or_create(
        project=indexed_project,
        defaults={"verified_answers": ServingPolicy.VerifiedAnswersMode.FIRST_PASSAGE},
    )

    body = _ask(client, secret_key, BIN_QUESTION).json()

    served = Interaction.objects.get(pk=body["flywheel"]["interaction_id"])
    assert served.answered_from == Interaction.AnsweredFrom.GENERATED
    assert served.verified_answer is not None
    assert body["flywheel"]["answered_from"] == "generated"


def test_a_revised_or_rejected_review_withdraws_it_on_the_next_request(
    client, indexed_project, secret_key, reviewer
):
    interaction = _corrected(indexed_project, reviewer)
    revised = "Deleted notes wait 30 days in the bin (90 on Grove if an admin extends it)."

    review_submit(
        interaction=interaction, reviewer=reviewer, decision="corrected", ideal_answer=revised
    )
    assert (
        _ask(client, secret_key, BIN_QUESTION).json()["choices"][0]["message"]["content"] == revised
    )
    statuses = dict(VerifiedAnswer.objects.values_list("answer", "status"))
    assert statuses == {BIN_ANSWER: "withdrawn", revised: "active"}

    review_submit(interaction=interaction, reviewer=reviewer, decision="rejected")
    body = _ask(client, secret_key, BIN_QUESTION).json()
    assert body["flywheel"]["answered_from"] == "generated"
    assert not VerifiedAnswer.objects.filter(status="active").exists()


def test_a_changed_source_document_makes_it_stale_and_sends_it_back_to_the_queue(
    client, indexed_project, secret_key, reviewer
):
    interaction = _corrected(indexed_project, reviewer)
    verified = VerifiedAnswer.objects.get(interaction=interaction)
    document = indexed_project.documents.get(pk=int(next(iter(verified.source_documents))))

    document_upsert(
        project=indexed_project,
        source_uri=document.source_uri,
        title=document.title,
        content=document.content.replace("30 days", "60 days"),
        content_type=document.content_type,
    )

    verified.refresh_from_db()
    assert verified.status == VerifiedAnswer.Status.STALE
    assert _ask(client, secret_key, BIN_QUESTION).json()["flywheel"]["answered_from"] != (
        "verified_answer"
    )
    queued = list(review_queue_candidates(project=indexed_project, reviewer=reviewer))
    assert queued[0].pk == interaction.pk
    assert queued[0].priority == QueuePriority.STALE_VERIFIED_ANSWER

    review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="A deleted note stays in the bin for 60 days.",
    )
    assert interaction.pk not in {
        i.pk for i in review_queue_candidates(project=indexed_project, reviewer=reviewer)
    }
    assert _ask(client, secret_key, BIN_QUESTION).json()["flywheel"]["answered_from"] == (
        "verified_answer"
    )


def test_calibration_sets_the_threshold_from_the_projects_own_verified_questions(
    indexed_project, reviewer
):
    facts = [
        ("How long does the bin keep deleted notes?", "30 days in the bin."),
        ("How long is the audit log kept?", "The audit log is kept for 400 days."),
        ("When can I ask for a refund?", "Within 14 days of an invoice."),
        ("How large may one attachment be?", "At most 250 MB."),
        ("How much attachment storage does Sprout sync?", "At most 2 GB of attachments."),
        ("How do I fix a stalled sync?", "Help → Diagnostics, then Resync shelf."),
        ("What happens when two people edit one paragraph?", "Both versions are kept."),
        ("Can Grove admins extend the bin?", "Yes, to 90 days."),
    ]
    for question, answer in facts:
        _corrected(indexed_project, reviewer, question=question, answer=answer)

    policy = verified_answers_calibrate(project=indexed_project)

    assert policy.calibration["questions"] == len(facts)
    figures = policy.calibration["closest_other_similarity"]
    # The threshold clears all but the target share of distinct questions' closest neighbours.
    assert policy.calibrated_threshold > figures["p50"]
    assert 0.65 <= policy.calibrated_threshold <= 0.97


def test_quote_mode_answers_with_the_passage_sentence_that_holds_the_answer(
    client, indexed_project, secret_key
):
    ServingPolicy.objects.update_or_create(
        project=indexed_project, defaults={"answer_mode": ServingPolicy.AnswerMode.QUOTE}
    )

    body = _ask(client, secret_key, "What is the largest attachment I can sync?").json()

    assert "250 MB" in body["choices"][0]["message"]["content"]
    assert body["flywheel"]["answered_from"] == "quote"
    assert body["usage"]["completion_tokens"] == 0, "no model wrote it"
