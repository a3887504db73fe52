"""Retriever training as a job: (question, passage) pairs from feedback, a candidate trained
on a real worker with the bundled MiniLM, promoted, the index re-embedded by it, and rolled
back with the index that goes with the previous retriever."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from flywheel.artifacts import artifact_folder, artifact_key, artifact_store
from flywheel.ml.loading import embed_texts
from flywheel.models import (
    ApiKey,
    Chunk,
    EmbeddingModelVersion,
    IndexVersion,
    Interaction,
    VerifiedAnswer,
)
from flywheel.selectors.retrieval import RetrievalOptions, active_index_version, retrieve
from flywheel.services import api_key_create
from flywheel.services.indexing import embedding_model_name, passage_for_embedding
from flywheel.services.interactions import interaction_record
from retrain.jobs.lifecycle import InvalidJobParameters, job_create, job_run
from retrain.models import Job
from retrain.promotion import (
    NothingToRollBack,
    embedding_model_version_production,
    embedding_model_version_promote,
    embedding_model_version_rollback,
)
from retrain.training import retriever_job
from retrain.training.retriever_pairs import retriever_pairs_from_feedback
from tests.conftest import DEMO_KNOWLEDGE_BASE, bearer, index_folder, wait_for
from tests.factories import ProjectFactory

# (question, the right answer, the heading of the passage holding it)
FACTS = [
    (
        "How much does the Canopy plan cost?",
        "Canopy costs 9 euros per user per month and removes the shelf limit.",
        "Billing and plans",
    ),
    (
        "When are invoices sent out?",
        "Invoices are issued on the 3rd of every month.",
        "Billing and plans > Invoices",
    ),
    (
        "When does a downgrade take effect?",
        "A downgrade takes effect at the end of the current billing month.",
        "Billing and plans > Changing plans",
    ),
    (
        "How many collaborators can a shelf be shared with?",
        "A shelf can be shared with up to 40 collaborators.",
        "Getting started with Quillmate",
    ),
    (
        "Which operating systems can I install Quillmate on?",
        "Quillmate runs on Windows 11, macOS 14 or later and Ubuntu 24.04.",
        "Getting started with Quillmate > Installing",
    ),
    (
        "What is the keyboard shortcut for a new shelf?",
        "Press Ctrl+Shift+N to create a shelf.",
        "Getting started with Quillmate > Your first shelf",
    ),
    (
        "How are my notes encrypted?",
        "Notes are encrypted at rest with AES-256 and in transit with TLS 1.3.",
        "Security and data retention",
    ),
    (
        "How long do deleted notes stay in the bin?",
        "A deleted note stays in the shelf's bin for 30 days, then it is erased for good.",
        "Security and data retention > Deleted notes",
    ),
    (
        "How long is a workspace export link valid?",
        "The export link stays valid for 48 hours.",
        "Security and data retention > Data export",
    ),
    (
        "What happens when two people edit the same paragraph offline?",
        "Both versions are kept and the paragraph is marked with an amber bar.",
        "Sync and offline use",
    ),
    (
        "I am ana.lopez@example.com: how big can an attachment be?",
        "A single attachment may be at most 250 MB.",
        "Sync and offline use > Sync limits",
    ),
    (
        "What should I do when sync stalls?",
        "Open Help → Diagnostics and press Resync shelf to rebuild the local copy.",
        "Sync and offline use > Troubleshooting",
    ),
]
UNKNOWN = "I do not know."
PII_QUESTION = FACTS[10][0]


@pytest.fixture(scope="module", autouse=True)
def one_thread_everywhere(one_torch_thread):
    """Workers started by this module use one torch thread too (the cores are shared)."""
    before = os.environ.get("FLYWHEEL_TORCH_THREADS")
    os.environ["FLYWHEEL_TORCH_THREADS"] = "1"
    yield
    if before is None:
        os.environ.pop("FLYWHEEL_TORCH_THREADS", None)
    else:
        os.environ["FLYWHEEL_TORCH_THREADS"] = before


def _served(project, question: str, answer: str) -> Interaction:
    """An interaction as chat serves it: the passages really retrieved for the question."""
    found = retrieve(project=project, query=question, options=RetrievalOptions(top_k=4))
    assert found.index_version is not None
    return interaction_record(
        project=project,
        source=Interaction.Source.CHAT,
        messages=[{"role": "user", "content": question}],
        query_text=question,
        response=answer,
        retrieved=[c.as_log_entry(index_version_id=found.index_version.pk) for c in found.chunks],
        index_version=found.index_version,
        metadata={"flywheel": {"rag": True}},
    )


def _project_with_feedback():
    """The demo knowledge base and feedback of every kind: twelve interactions whose right
    answer is known (through each kind of signal) and six that teach nothing."""
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    reviewer = get_user_model().objects.create_user(username=f"reviewer-{project.slug}")
    for position, (question, answer, _) in enumerate(FACTS):
        if position < 4:  # the reviewer wrote the ideal answer
            interaction = _served(project, question, UNKNOWN)
            review_submit(
                interaction=interaction,
                reviewer=reviewer,
                decision="corrected",
                ideal_answer=answer,
            )
        elif position < 6:  # the reviewer approved the model's answer
            interaction = _served(project, question, answer)
            review_submit(interaction=interaction, reviewer=reviewer, decision="approved")
        elif position == 6:  # the reviewer approved the end user's correction
            interaction = _served(project, question, UNKNOWN)
            rating_submit(
                interaction=interaction,
                rater_id="u1",
                source="api",
                thumb="down",
                correction=answer,
            )
            review_submit(interaction=interaction, reviewer=reviewer, decision="approved")
        elif position < 10:  # liked by end users
            interaction = _served(project, question, answer)
            rating_submit(interaction=interaction, rater_id="u1", source="api", thumb="up")
        else:  # a high score
            interaction = _served(project, question, answer)
            rating_submit(interaction=interaction, rater_id="u1", source="api", score=5)
            if position == 11:
                rating_submit(interaction=interaction, rater_id="u2", source="api", score=4)

    # None of these yields a pair.
    disputed = _served(project, "Is Sprout free?", "Sprout is free for up to 3 shelves.")
    rating_submit(interaction=disputed, rater_id="u1", source="api", thumb="up")
    rating_submit(interaction=disputed, rater_id="u2", source="api", thumb="down")
    rejected = _served(project, "Are upgrades prorated?", "Upgrades are prorated by the day.")
    review_submit(interaction=rejected, reviewer=reviewer, decision="rejected")
    disliked = _served(project, "Where do I download Quillmate?", "From the app store.")
    rating_submit(interaction=disliked, rater_id="u1", source="api", thumb="down")
    unchecked = _served(project, "Can admins extend the bin?", UNKNOWN)
    rating_submit(
        interaction=unchecked,
        rater_id="u1",
        source="api",
        correction="Grove admins can extend the bin to 90 days.",
    )
    nowhere = _served(project, "Who founded Quillmate?", "Two pirates founded it in 1802.")
    review_submit(interaction=nowhere, reviewer=reviewer, decision="approved")
    _served(project, "Does Quillmate work offline?", "Yes, every shelf is kept on each device.")
    return project


def _passage(project, heading: str) -> str:
    index_version = active_index_version(project=project)
    chunk = Chunk.objects.select_related("document").get(
        index_version=index_version, kind=Chunk.Kind.DOCUMENT, heading=heading
    )
    return passage_for_embedding(title=chunk.document.title, heading=heading, text=chunk.text)


def _verified_models(project) -> list[str]:
    return list(
        VerifiedAnswer.objects.filter(
            project=project, status=VerifiedAnswer.Status.ACTIVE
        ).values_list("embedding_model", flat=True)
    )


def _finished(job_id: int) -> Job | None:
    job = Job.objects.get(pk=job_id)
    return job if job.is_finished else None


@pytest.mark.django_db
def test_pairs_come_from_vouched_answers_with_the_passage_holding_them_and_hard_negatives():
    project = _project_with_feedback()

    pairs = retriever_pairs_from_feedback(project=project)

    by_question = {pair.question: pair for pair in pairs}
    scrubbed = PII_QUESTION.replace("ana.lopez@example.com", "<EMAIL>")
    expected = [scrubbed if q == PII_QUESTION else q for q, _, _ in FACTS]
    assert sorted(by_question) == sorted(expected), "exactly the vouched, grounded answers"
    for question, _, heading in FACTS:
        pair = by_question[scrubbed if question == PII_QUESTION else question]
        positive = _passage(project, heading)
        assert pair.positive == positive, (question, pair.positive[:80])
        assert pair.positive.startswith(heading.split(" > ")[0]), "embedded with its title"
        assert len(pair.negatives) <= 3 and positive not in pair.negatives
        served = {
            passage_for_embedding(title=e["title"], heading=e["heading"], text=e["text"])
            for e in Interaction.objects.get(project=project, query_text=question).retrieved
        }
        assert set(pair.negatives) <= served, "hard negatives are passages that were served"
    # Served passages that share a few of a short answer's words ("shelf") are not negatives.
    assert sum(1 for pair in pairs if pair.negatives) >= len(FACTS) * 2 // 3
    assert len(by_question["How long is a workspace export link valid?"].negatives) == 3


@pytest.mark.django_db
def test_too_few_pairs_fails_the_job_with_a_clear_message():
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    reviewer = get_user_model().objects.create_user(username="reviewer")
    for question, answer, _ in FACTS[:3]:
        review_submit(
            interaction=_served(project, question, UNKNOWN),
            reviewer=reviewer,
            decision="corrected",
            ideal_answer=answer,
        )
    job = job_create(project=project, kind=Job.Kind.RETRIEVER_TRAINING, trigger=Job.Trigger.API)

    assert job_run(job_id=job.pk, handler=retriever_job.run) == Job.State.FAILED

    job.refresh_from_db()
    assert "Only 3 (question, passage) pairs came out of the feedback" in job.error
    assert "needs at least 8" in job.error
    assert job.metrics["pairs"] == {"total": 3, "questions": 3}
    assert not EmbeddingModelVersion.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_parameters_have_defaults_and_unknown_or_bad_ones_are_refused(client):
    parameters = retriever_job.validate_parameters({"max_steps": 5})
    assert parameters["eval_fraction"] == 0.25 and parameters["min_pairs"] == 8
    assert parameters["auto_promote"] is True and parameters["margin"] == 0.0
    assert parameters["learning_rate"] == 5e-5 and parameters["epochs"] == 4.0
    assert parameters["max_steps"] == 5
    for bad in (
        {"lr": 1e-4},
        {"eval_fraction": 0},
        {"eval_fraction": 1.0},
        {"min_pairs": 1},
        {"margin": -0.1},
        {"auto_promote": "yes"},
        {"batch_size": 1},
    ):
        with pytest.raises(InvalidJobParameters):
            retriever_job.validate_parameters(dict(bad))

    project = ProjectFactory()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    response = client.post(
        "/api/v1/jobs",
        content_type="application/json",
        **bearer(key),
        data=json.dumps({"kind": "retriever_training", "parameters": {"lr": 1}}),
    )
    assert response.status_code == 400
    assert "lr: unknown retriever training parameter" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_a_retriever_without_an_index_gets_a_refresh_and_rollback_needs_a_promoted_one(client):
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    first = IndexVersion.objects.get(project=project)
    with pytest.raises(NothingToRollBack):
        embedding_model_version_rollback(project=project)
    response = client.post("/api/v1/embedding-model-versions/rollback", **bearer(key))
    assert response.status_code == 409, response.content

    # A retriever no index was built with (its files: a copy of the bundled model's path).
    version = EmbeddingModelVersion.objects.create(
        project=project, name="retriever-1", path=embedding_model_name(), metrics={}
    )
    embedding_model_version_promote(version=version)

    refresh = Job.objects.get(project=project, kind=Job.Kind.INDEX_REFRESH)
    assert refresh.state == Job.State.QUEUED and refresh.trigger == Job.Trigger.API
    assert active_index_version(project=project) == first, "serving waits for the new index"

    assert embedding_model_version_rollback(project=project) is None, "the bundled model"
    version.refresh_from_db()
    assert version.status == "retired"
    assert embedding_model_version_production(project=project) is None
    assert active_index_version(project=project) == first, "it was built by the bundled model"
    assert Job.objects.filter(project=project, kind=Job.Kind.INDEX_REFRESH).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_retriever_trained_on_feedback_is_promoted_reembeds_the_index_and_rolls_back(
    client, celery_worker
):
    project = _project_with_feedback()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key
    first = active_index_version(project=project)
    assert first is not None and first.embedding_model_version is None

    started = client.post(
        "/api/v1/jobs",
        content_type="application/json",
        **bearer(key),
        data=json.dumps({"kind": "retriever_training", "parameters": {"max_steps": 4}}),
    )
    assert started.status_code == 202, started.content
    job = wait_for(
        lambda: _finished(started.json()["id"]),
        what="retriever training finishing",
        deadline_seconds=300,
    )
    candidate = EmbeddingModelVersion.objects.filter(training_job_id=job.pk).first()
    try:
        assert job.state == Job.State.SUCCEEDED, job.error
        assert candidate is not None and candidate.parent is None
        metrics = candidate.metrics
        held_out, production = metrics["held_out"], metrics["production"]
        assert held_out["n"] == production["n"] == metrics["pairs"]["held_out"] >= 1
        assert metrics["pairs"]["total"] == len(FACTS)
        assert metrics["training"]["steps"] == 4 and "output_dir" not in metrics["training"]
        print(
            f"\nretriever held-out ({held_out['n']} questions): "
            f"hit@1 {production['hit@1']:.2f} -> {held_out['hit@1']:.2f}, "
            f"hit@5 {production['hit@5']:.2f} -> {held_out['hit@5']:.2f}; "
            f"train pairs: hit@1 {metrics['train_pairs']['production']['hit@1']:.2f} -> "
            f"{metrics['train_pairs']['candidate']['hit@1']:.2f}, hit@5 "
            f"{metrics['train_pairs']['production']['hit@5']:.2f} -> "
            f"{metrics['train_pairs']['candidate']['hit@5']:.2f}; loss "
            f"{metrics['training']['first_loss']:.4f} -> {metrics['training']['last_loss']:.4f}"
        )
        assert (artifact_folder(candidate.path) / "config.json").exists()
        assert job.metrics["decision"]["promoted"] is True, job.metrics["decision"]
        assert candidate.status == "production" and candidate.metrics["decision"]["passed"]

        listed = client.get("/api/v1/embedding-model-versions", **bearer(key)).json()
        assert [v["name"] for v in listed] == [candidate.name]
        assert "path" not in listed[0] and candidate.path not in json.dumps(listed)
        assert candidate.path not in json.dumps(
            client.get(f"/api/v1/jobs/{job.pk}", **bearer(key)).json()
        )

        refresh = wait_for(
            lambda: _finished(job.metrics["decision"]["index_refresh_job_id"]),
            what="the index refresh finishing",
            deadline_seconds=180,
        )
        assert refresh.parent_id == job.pk and refresh.trigger == Job.Trigger.JOB
        assert refresh.state == Job.State.SUCCEEDED, refresh.error
        second = active_index_version(project=project)
        assert second is not None and second.pk == refresh.index_version_id
        assert second.embedding_model_version == candidate
        assert second.embedding_model == candidate.path
        assert second.stats["embeddings_computed"] == second.stats["chunks"], "all re-embedded"
        verified = refresh.metrics["verified_answers"]
        assert verified["retriever"] == candidate.name and verified["embedded_by_it"] == 5
        assert verified["calibration"]["questions"] == 5
        assert set(_verified_models(project)) == {candidate.path}

        question = "How long are deleted notes kept?"
        served = retrieve(project=project, query=question, options=RetrievalOptions(top_k=4))
        assert served.index_version == second
        by_candidate = embed_texts([question], path=Path(candidate.path))[0]
        by_bundled = embed_texts([question])[0]
        assert np.allclose(served.query_embedding, by_candidate, atol=1e-5)
        assert not np.allclose(served.query_embedding, by_bundled, atol=1e-3)

        # Rollback: the bundled model again, and the index it built.
        rolled = client.post("/api/v1/embedding-model-versions/rollback", **bearer(key))
        assert rolled.status_code == 200, rolled.content
        assert rolled.json() == {"restored": None, "active_index_version_id": first.pk}
        candidate.refresh_from_db()
        assert candidate.status == "retired"
        assert active_index_version(project=project) == first
        back = retrieve(project=project, query=question, options=RetrievalOptions(top_k=4))
        assert np.allclose(back.query_embedding, by_bundled, atol=1e-5)
        assert set(_verified_models(project)) == {first.embedding_model}, "re-embedded"

        # Promoting it again by hand brings back the index it built: no refresh needed.
        promoted = client.post(
            f"/api/v1/embedding-model-versions/{candidate.pk}/promote", **bearer(key)
        )
        assert promoted.status_code == 200, promoted.content
        assert promoted.json()["status"] == "production" and "path" not in promoted.json()
        assert active_index_version(project=project) == second
        assert Job.objects.filter(project=project, kind=Job.Kind.INDEX_REFRESH).count() == 1
    finally:
        if candidate is not None:
            artifact_store().delete(artifact_key(candidate.path))


@pytest.mark.django_db
def test_the_rollback_command_restores_the_previous_retriever_or_says_there_is_none():
    project = ProjectFactory()
    index_folder(project, DEMO_KNOWLEDGE_BASE)
    with pytest.raises(CommandError, match="No fine-tuned retriever"):
        call_command("rollback", "retriever", "--project", project.slug)

    version = EmbeddingModelVersion.objects.create(
        project=project, name="retriever-1", path=embedding_model_name(), metrics={}
    )
    embedding_model_version_promote(version=version)
    output = io.StringIO()
    call_command("rollback", "retriever", "--project", project.slug, stdout=output)

    assert "the bundled embedding model" in output.getvalue()
    version.refresh_from_db()
    assert version.status == "retired"
    assert embedding_model_version_production(project=project) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        '{"kind": "retriever_training", "parameters": {"learning_rate": NaN}}',
        '{"kind": "retriever_training", "parameters": {"epochs": Infinity}}',
        '{"kind": "retriever_training", "parameters": {"eval_fraction": -Infinity}}',
        '{"kind": "retriever_training", "parameters": {"margin": 1e400}}',
        '{"kind": "retriever_training", "parameters": {"min_pairs": 99999999999999999999999}}',
        '{"kind": "retriever_training", "parameters": {"batch_size": -9223372036854775809}}',
        '{"kind": "retriever_training", "parameters": {"seed\\u0000": 1}}',
        '{"kind": "retriever_training", "parameters": {"learning_rate": "\\ud800"}}',
        '{"kind": "retriever_training", "parameters": {"max_steps": "2026-13-45"}}',
    ],
)
def test_bad_retriever_training_parameters_get_a_400_and_no_job(client, body):
    project = ProjectFactory()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key

    response = client.post(
        "/api/v1/jobs", data=body, content_type="application/json", **bearer(key)
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"]
    assert not Job.objects.filter(project=project).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("version_id", ["99999999999999999999999", "-1", "0"])
def test_promoting_a_retriever_that_does_not_exist_is_a_404(client, version_id):
    project = ProjectFactory()
    key = api_key_create(
        project=project, kind="secret", name="app", scopes=ApiKey.Scope.values
    ).raw_key

    response = client.post(f"/api/v1/embedding-model-versions/{version_id}/promote", **bearer(key))

    assert response.status_code == 404, response.content
    assert response["Content-Type"].startswith("application/json")
