"""Index refresh: a new index version from the current documents and the approved
corrections, evaluated against the active one, then switched to."""

from django.db.models import OuterRef, Subquery

from feedback.models import Review
from flywheel.models import IndexVersion, Project, VerifiedAnswer
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.verified_answers import verified_answers_calibrate, verified_answers_reembed
from retrain.curation.policy import curation_policy_get
from retrain.index_refresh.build import CorrectionEntry, IndexUnchanged, index_version_build
from retrain.jobs.lifecycle import JobCancelled
from retrain.jobs.parameters import golden_set_load, reject_unknown, take_bool, take_golden_set
from retrain.models import Job
from retrain.promotion import index_version_activate

RETRIEVAL_K = 5


def validate_parameters(values: dict) -> dict:
    normalised = {
        "activate": take_bool(values, "activate", True),
        "golden_set": take_golden_set(values),
    }
    reject_unknown(values)
    return normalised


def approved_corrections(*, project: Project) -> list[CorrectionEntry]:
    """Interactions whose latest review is a correction: the reviewer's ideal answer to the
    question asked, with the question PII-scrubbed as the curation policy says."""
    from retrain.curation.examples import ExampleScrubber

    policy = curation_policy_get(project=project)
    scrubber = ExampleScrubber(policy)
    latest = Review.objects.filter(interaction=OuterRef("interaction")).order_by(
        "-created_at", "-pk"
    )
    reviews = (
        Review.objects.filter(interaction__project=project, decision=Review.Decision.CORRECTED)
        .filter(pk=Subquery(latest.values("pk")[:1]))
        .select_related("interaction")
        .order_by("pk")
    )
    entries = []
    for review in reviews:
        question = review.interaction.query_text
        # The question is the end user's: it follows their messages' rules (ExampleScrubber
        # leaves it alone when the policy scrubs nothing).
        question = scrubber.scrub(question, source="user_messages")
        entries.append(
            CorrectionEntry(review_id=review.pk, question=question, answer=review.ideal_answer)
        )
    return entries


def _hit_rates(project, version, questions) -> dict | None:
    from retrain.evaluation.metrics import retrieval_hit_at_k

    if version is None or not questions:
        return None
    return retrieval_hit_at_k(
        project=project, index_version=version, questions=questions, k=RETRIEVAL_K
    )


def run(job: Job, context) -> None:
    project = job.project
    corrections = approved_corrections(project=project)
    context.log(f"{len(corrections)} approved corrections to include")
    building: list[IndexVersion] = []
    try:
        version = index_version_build(
            project=project,
            corrections=corrections,
            built_by_job_id=job.pk,
            on_created=building.append,
            on_progress=lambda done, total: context.progress(
                80 * done / total, f"Indexed {done} of {total}"
            ),
        )
    except JobCancelled:
        # A half-built version is of no use to anyone: drop it with its chunks.
        IndexVersion.objects.filter(pk__in=[v.pk for v in building]).delete()
        raise
    except IndexUnchanged as unchanged:
        context.record_metrics(unchanged=True, index_version=unchanged.version.number)
        context.log(
            f"Nothing changed since index v{unchanged.version.number} (same documents, "
            "corrections, retriever and chunking): no new version was built"
        )
        context.progress(100, f"Nothing changed: index v{unchanged.version.number} stays active")
        return
    Job.objects.filter(pk=job.pk).update(index_version=version)
    context.log(f"Built index v{version.number}: {version.stats}")

    context.progress(85, "Evaluating retrieval")
    # Each correction's question should now find its own FAQ entry; a golden set checks that
    # the documents are still found as well as before.
    correction_questions = [
        {"question": entry.question, "source": f"faq:{entry.review_id}"} for entry in corrections
    ]
    golden = golden_set_load(job.parameters["golden_set"]) if job.parameters["golden_set"] else []
    golden_questions = [
        {"question": g["question"], "source": g["source"]} for g in golden if g.get("source")
    ]
    previous = active_index_version(project=project)
    metrics = {
        "index_version": version.number,
        "previous_index_version": previous.number if previous else None,
        "stats": version.stats,
        "corrections": {
            "candidate": _hit_rates(project, version, correction_questions),
            "active": _hit_rates(project, previous, correction_questions),
        },
        "golden_set": {
            "candidate": _hit_rates(project, version, golden_questions),
            "active": _hit_rates(project, previous, golden_questions),
        },
    }
    context.record_metrics(**metrics)
    IndexVersion.objects.filter(pk=version.pk).update(
        stats={**version.stats, "evaluation": metrics}
    )
    if job.parameters["activate"]:
        context.stop_if_cancelled()
        index_version_activate(version=version)
        context.log(f"Index v{version.number} is now active")
        _verified_answers_follow(project=project, version=version, context=context)


def _verified_answers_follow(*, project: Project, version: IndexVersion, context) -> None:
    """Verified questions are matched in the embedding space of the active index's retriever:
    embed them with it where another one embedded them (activation did so already; this
    catches answers published meanwhile), then calibrate the match threshold there. Not
    cancellable: the index already serves."""
    verified_answers_reembed(project=project, embedding_model=version.embedding_model)
    policy = verified_answers_calibrate(project=project)
    # The model is named by its version, not by its folder: metrics are shown to API clients.
    calibration = {k: v for k, v in policy.calibration.items() if k != "embedding_model"}
    retriever = version.embedding_model_version
    embedded = (
        VerifiedAnswer.objects.filter(project=project, embedding_model=version.embedding_model)
        .exclude(status=VerifiedAnswer.Status.WITHDRAWN)
        .count()
    )
    context.record_metrics(
        verified_answers={
            "retriever": retriever.name if retriever else "bundled",
            "embedded_by_it": embedded,
            "calibration": calibration,
        }
    )
    context.log(
        f"Verified answers: {embedded} embedded by the index's retriever, match threshold "
        f"{calibration.get('threshold', 'default')}"
    )
