"""The closed loop's `--experiment` option on a small corpus and a real worker: the turn's
refreshed index is not activated but becomes an experiment's candidate; simulated users, each
kept in one arm, ask the training questions and rate the answers with the oracle's thumbs
until the experiment decides or the rating budget is spent; the report says what it decided,
on how many ratings, and whether it promoted."""

import shutil

import pytest

from bench.loop.questions import question_set_load
from bench.loop.report import report_experiment_summary
from bench.loop.runner import loop_benchmark_run
from bench.loop.simulation import LoopSettings
from feedback.models import Rating
from flywheel.models import IndexVersion, Interaction
from retrain.models import Experiment
from tests.conftest import REPOSITORY_ROOT

DEMO = REPOSITORY_ROOT / "demo" / "flywheel-bench"
# The documents the first questions of the demo file are answered from.
SMALL_CORPUS = ("overview.md", "installation.md")


@pytest.fixture
def torch_single_threaded():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.django_db(transaction=True)
def test_the_last_turn_runs_as_an_experiment_judged_by_the_users_ratings(
    celery_worker, torch_single_threaded, tmp_path
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in SMALL_CORPUS:
        shutil.copy(DEMO / "corpus" / name, corpus / name)
    # Three training questions (each with a paraphrase) and one held out.
    question_set = question_set_load(path=DEMO / "questions.jsonl", max_questions=4)
    settings = LoopSettings(
        turns=1,
        train_steps=0,
        measure_without_rag=False,
        max_tokens=12,
        oracle_threshold=1.0,  # the strictest oracle: most answers get corrected
        curation_deadline_seconds=120,
        job_deadline_seconds=180,
        retriever_training=False,
        answer_mode="generate",
        experiment=True,
        experiment_min_ratings_per_arm=10,
        experiment_users=12,
        experiment_max_ratings=36,
    )

    outcome = loop_benchmark_run(
        corpus_dir=corpus,
        question_set=question_set,
        settings=settings,
        out_dir=tmp_path / "out",
        log=lambda line: None,
    )

    assert [stage.name for stage in outcome.result.stages] == ["base_rag", "turn1_experiment"]
    summary = outcome.report["experiment"]
    assert summary == outcome.result.turns[0]["experiment"]
    experiment = Experiment.objects.get(pk=summary["id"])
    assert experiment.status != Experiment.Status.RUNNING
    candidate = IndexVersion.objects.get(
        project=outcome.setup.project, number=summary["candidate_index_version"]
    )
    assert summary["candidate_model"] is None

    # Every request was served in the experiment, each user by one arm throughout, and
    # every answer rated by its user.
    served = Interaction.objects.filter(experiment_id=experiment.pk)
    assert served.count() == summary["ratings_submitted"] <= settings.experiment_max_ratings
    assert summary["users_switching_arms"] == 0
    arms_per_rater = {}
    for rater_id, arm in Rating.objects.filter(interaction__in=served).values_list(
        "rater_id", "interaction__experiment_arm"
    ):
        arms_per_rater.setdefault(rater_id, set()).add(arm)
    assert all(len(arms) == 1 for arms in arms_per_rater.values())
    assert {arm for arms in arms_per_rater.values() for arm in arms} == {"control", "candidate"}
    assert sum(arm["ratings"] for arm in summary["arms"].values()) == summary["ratings_submitted"]

    # The verdict, the ratings it rested on, and what followed, as the experiment recorded it.
    assert summary["verdict"] == (experiment.verdict or None)
    if experiment.verdict:
        rested_on = experiment.evidence["arms"]
        assert summary["ratings_needed"] == sum(arm["ratings"] for arm in rested_on.values())
        assert min(arm["ratings"] for arm in rested_on.values()) >= 10
    else:
        assert summary["ratings_needed"] is None
        assert summary["ratings_submitted"] == settings.experiment_max_ratings
    candidate.refresh_from_db()
    promoted = experiment.verdict == Experiment.Verdict.CANDIDATE_WINS
    assert summary["promoted"] is promoted
    assert (candidate.status == IndexVersion.Status.ACTIVE) is promoted
    production_index = summary["production_after"]["index_version"]
    assert (production_index == candidate.number) is promoted
    after = outcome.result.stages[-1]
    assert {index for _, index in after.served_by} == {production_index}

    printed = report_experiment_summary(outcome.report)
    assert f"Experiment #{experiment.pk}: index v{candidate.number}" in printed
    assert ("\n  promoted: production" in printed) is promoted
