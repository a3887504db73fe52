"""The closed loop on a real worker, tiny: five training questions asked through the chat API,
rated by the oracle, corrected and approved, curated on the worker, then a dataset snapshot
and an index refresh; after it, every question that was corrected is answered from its own
document (or the FAQ entry its correction became), and once verified answers are on, with the
approved correction itself."""

import pytest

from bench.loop.questions import ProbeGroup, question_set_load
from bench.loop.runner import loop_benchmark_run
from bench.loop.simulation import LoopSettings
from feedback.models import Rating
from tests.conftest import REPOSITORY_ROOT

DEMO = REPOSITORY_ROOT / "demo" / "flywheel-bench"


@pytest.fixture
def torch_single_threaded():
    """On cores other processes use too (the worker, other test runs), torch's threads wait
    on each other and generation gets several times slower than on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _by_stage(outcome) -> dict:
    return {stage.name: stage for stage in outcome.result.stages}


@pytest.mark.django_db(transaction=True)
def test_after_the_refresh_corrected_questions_are_answered_from_their_source(
    celery_worker, torch_single_threaded, tmp_path
):
    # The first six lines: five training questions (four with a paraphrase) and one held out.
    question_set = question_set_load(path=DEMO / "questions.jsonl", max_questions=6)
    settings = LoopSettings(
        turns=1,
        train_steps=0,
        measure_without_rag=False,
        max_tokens=12,
        # The strictest oracle: short answers fall short of it, so most get corrected.
        oracle_threshold=1.0,
        curation_deadline_seconds=120,
        job_deadline_seconds=180,
        retriever_training=False,
        answer_mode="generate",
    )

    outcome = loop_benchmark_run(
        corpus_dir=DEMO / "corpus",
        question_set=question_set,
        settings=settings,
        out_dir=tmp_path,
        log=lambda line: None,
    )

    stages = _by_stage(outcome)
    assert list(stages) == ["base_rag", "turn1_refresh", "turn1_verified"]
    turn = outcome.result.turns[0]
    wrong = {
        o.probe.key
        for o in stages["base_rag"].observations
        if o.probe.group == ProbeGroup.TRAIN and not o.verdict.correct
    }
    assert wrong, "the oracle corrected nothing, so the refresh had nothing to add"
    assert set(turn["corrected"]) == wrong
    assert turn["index_stats"]["corrections"] == len(wrong)

    # Each corrected question now finds the FAQ entry its approved correction became, and
    # its first citation is that entry or its source document.
    after = {o.probe.key: o for o in stages["turn1_refresh"].observations}
    for key, faq_entry in turn["corrected"].items():
        observation = after[key]
        cited = [citation["source_uri"] for citation in observation.citations]
        assert observation.index_version == turn["index_version"]
        assert faq_entry in cited and observation.hit_at(1), (
            f"{key} ({observation.probe.text!r}) cites {cited}: not {faq_entry}, or first "
            f"neither it nor {observation.probe.question.source}"
        )

    # With verified answers on, each corrected question gets its approved correction back.
    verified = {o.probe.key: o for o in stages["turn1_verified"].observations}
    assert all(o.answered_from == "generated" for o in after.values())
    for key in turn["corrected"]:
        assert verified[key].answered_from == "verified_answer", verified[key].probe.text
        assert verified[key].answer == verified[key].probe.question.answer
        assert verified[key].verdict.correct
    assert turn["verified_answers"]["active"] == len(wrong)

    measured_only = [
        o.interaction_id
        for stage in stages.values()
        for o in stage.observations
        if o.probe.group != ProbeGroup.TRAIN
    ]
    assert not Rating.objects.filter(interaction_id__in=measured_only).exists()
    assert outcome.report["finished"] and outcome.report_path.exists()
    assert outcome.plot_path.stat().st_size > 0
