"""Evaluation: answer scores on known cases, the loss on answer tokens only (with the real base
model and its chat template), retrieval hit rates against a real index, questions prompted as
serving prompts them, and evaluation jobs on a real worker and with a real judge server."""

import json
import uuid

import pytest
import torch
from django.conf import settings as django_settings
from django.db import connection
from django.urls import reverse
from django.utils.html import escape

from config.queues import Queue
from config.settings.database import database_url_from_config
from feedback.services.ratings import rating_submit
from flywheel.generation import GenerationParameters
from flywheel.ml.bundled import base_model_path
from flywheel.models import IndexVersion, Interaction, ModelVersion
from flywheel.selectors.retrieval import active_index_version
from flywheel.services import api_key_create
from flywheel.services.chat import ChatRequest, chat_prepare, default_retrieval_options
from retrain.curation.policy import curation_policy_get
from retrain.datasets.snapshot import dataset_snapshot
from retrain.evaluation import job as evaluation
from retrain.evaluation.judge import RUBRIC
from retrain.evaluation.metrics import eval_loss, retrieval_hit_at_k, rouge_l, token_f1
from retrain.evaluation.questions import eval_split_questions, golden_set_questions
from retrain.jobs.lifecycle import job_create, job_run
from retrain.models import CurationPolicy, InstructionExample, Job
from retrain.training.lora import IGNORED_LABEL, load_base_model, tokenize_for_sft
from tests.conftest import index_folder, user_with_role, wait_for, worker_start

# An autouse fixture: imported, it applies to this module as well.
from tests.factories import (
    FACTS,
    LABELLED_SET,
    SERVED_PASSAGE,
    ProjectFactory,
    conversation_prompt,
    curate,
    served,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_model():
    """(tokenizer, model), loaded once for the module: these tests only read it."""
    return load_base_model(base_model_path(), device=torch.device("cpu"))


def conversation(question: str, answer: str) -> list[dict]:
    return [*conversation_prompt(question), {"role": "assistant", "content": answer}]


@pytest.mark.parametrize(
    "prediction, reference, f1, rouge",
    [
        ("The cat sat on the mat.", "the CAT sat on a mat", 1.0, 1.0),
        ("dogs bark", "the cat sat", 0.0, 0.0),
        ("", "", 1.0, 1.0),
        ("", "the cat sat", 0.0, 0.0),
        # cat sat | cat sat on mat: precision 1, recall 1/2
        ("a cat sat", "the cat sat on the mat", 2 / 3, 2 / 3),
        # The same bag of words; in order, only "cat sat" (or "on mat") is common.
        ("on mat, cat sat", "The cat sat on the mat", 1.0, 0.5),
        # refunds take 14 days | refunds within 14 days: 3 of 4 either way, and in order
        ("Refunds take 14 days!", "Refunds within 14 days.", 0.75, 0.75),
    ],
)
def test_token_f1_and_rouge_l_on_known_cases(prediction, reference, f1, rouge):
    assert token_f1(prediction, reference) == pytest.approx(f1)
    assert rouge_l(prediction, reference) == pytest.approx(rouge)


def test_only_the_answer_and_its_end_of_turn_token_are_trained(base_model):
    tokenizer, _ = base_model
    question, answer = FACTS[0]

    (example,) = tokenize_for_sft(tokenizer, [conversation(question, answer)], max_length=256)

    trained = [label for label in example["labels"] if label != IGNORED_LABEL]
    assert tokenizer.decode(trained) == answer + tokenizer.eos_token
    text = tokenizer.decode(example["input_ids"])
    assert text.startswith("<|im_start|>system\n" + conversation_prompt(question)[0]["content"])
    assert text.endswith(f"<|im_start|>assistant\n{answer}<|im_end|>\n")
    assert len(example["labels"]) == len(example["input_ids"]) == len(example["attention_mask"])


def test_a_long_prompt_loses_its_start_and_a_long_answer_its_example(base_model):
    tokenizer, _ = base_model
    question, answer = FACTS[1]
    long_prompt = [
        {"role": "system", "content": "Context: " + "lorem ipsum " * 200},
        {"role": "user", "content": question},
    ]
    long_answer = conversation(question, "very " * 100 + "long.")

    truncated, *others = tokenize_for_sft(
        tokenizer,
        [[*long_prompt, {"role": "assistant", "content": answer}], long_answer],
        max_length=64,
    )

    assert others == []
    assert len(truncated["input_ids"]) == 64
    trained = [label for label in truncated["labels"] if label != IGNORED_LABEL]
    assert tokenizer.decode(trained) == answer + tokenizer.eos_token
    assert tokenizer.decode(truncated["input_ids"]).endswith(
        question + f"<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


def test_eval_loss_is_the_models_own_loss_on_answer_tokens_whatever_the_padding(base_model):
    tokenizer, model = base_model
    conversations = [conversation(question, answer) for question, answer in FACTS[:4]]
    (first,) = tokenize_for_sft(tokenizer, conversations[:1], max_length=256)
    with torch.no_grad():
        own_loss = model(
            input_ids=torch.tensor([first["input_ids"]]), labels=torch.tensor([first["labels"]])
        ).loss.item()

    single = eval_loss(model=model, tokenizer=tokenizer, conversations=conversations[:1])
    one_by_one = eval_loss(
        model=model, tokenizer=tokenizer, conversations=conversations, batch_size=1
    )
    padded = eval_loss(model=model, tokenizer=tokenizer, conversations=conversations, batch_size=4)

    assert single == pytest.approx(own_loss, rel=1e-4)
    assert padded == pytest.approx(one_by_one, rel=1e-4)
    assert not model.training


@pytest.mark.django_db
def test_retrieval_hit_rates_count_the_first_and_the_top_k_results(project):
    index_folder(project, LABELLED_SET)
    version = IndexVersion.objects.get(project=project)
    questions = [
        {"question": "How much does Grove cost?", "source": "plans.md"},
        {"question": "How much does Grove cost?", "source": "not-indexed.md"},
    ]
    everything = version.chunks.count()

    top_two = retrieval_hit_at_k(project=project, index_version=version, questions=questions, k=2)
    all_chunks = retrieval_hit_at_k(
        project=project, index_version=version, questions=questions[:1], k=everything
    )

    assert top_two == {"hit@1": 0.5, "hit@k": 0.5, "k": 2, "questions": 2}
    assert all_chunks["hit@k"] == 1.0
    with pytest.raises(ValueError):
        retrieval_hit_at_k(project=project, index_version=version, questions=[])


# ---------------------------------------------------------------------------------------------
# Questions prompted as serving prompts them

GOLDEN = [
    ("How much does Grove cost?", "Grove costs 21 euros per user per month."),
    ("Can I keep writing while I have no internet?", "Yes, you can write offline."),
    ("What does E-4471 mean?", "E-4471 is a sync error."),
]


def _golden_set(items) -> str:
    folder = django_settings.FLYWHEEL_GOLDEN_SETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"grove-{uuid.uuid4().hex[:8]}.jsonl"
    (folder / name).write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in items)
    )
    return name


@pytest.mark.django_db
def test_a_golden_question_is_prompted_with_the_passages_serving_retrieves(project):
    index_folder(project, LABELLED_SET)
    question, answer = GOLDEN[0]

    (golden,) = golden_set_questions(
        project=project,
        golden_set=[{"question": question, "answer": answer}],
        index_version=active_index_version(project=project),
    )
    serving = chat_prepare(
        project=project,
        request=ChatRequest(
            messages=[{"role": "user", "content": question}],
            parameters=GenerationParameters(),
            retrieval=default_retrieval_options(),
        ),
    )

    assert golden.prompt == serving.prompt_messages
    assert "Grove costs 21\neuros per user per month" in golden.prompt[0]["content"]
    assert golden.sources[0] == "plans.md"
    assert (golden.question, golden.chosen, golden.suite) == (question, answer, "golden_set")


def _dataset_with_one_eval_example(project, question: str, answer: str):
    """A dataset version whose eval split holds the example curated from one served answer."""
    interaction = served(project, question, answer=answer)
    rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
    curate(project, interaction)
    InstructionExample.objects.filter(interaction=interaction).update(split="eval")
    version, _ = dataset_snapshot(project=project, trigger="api")
    return version


@pytest.mark.django_db
def test_an_eval_example_keeps_its_served_passages_in_the_prompt_serving_builds_today(project):
    dataset = _dataset_with_one_eval_example(
        project, "Can I get a refund?", "Refunds within 14 days."
    )
    project.system_prompt = "You answer questions about billing, briefly."
    project.save()

    (example,) = eval_split_questions(project=project, dataset_version_id=dataset.pk)

    system = example.prompt[0]["content"]
    assert system.startswith("You answer questions about billing, briefly.")
    assert SERVED_PASSAGE["text"] in system
    assert example.prompt[1:] == [{"role": "user", "content": "Can I get a refund?"}]
    assert example.chosen == "Refunds within 14 days." and example.suite == "eval_split"
    assert example.sources == [SERVED_PASSAGE["title"]]


# ---------------------------------------------------------------------------------------------
# Evaluation jobs


def _finished(job_id: int):
    job = Job.objects.get(pk=job_id)
    return job if job.is_finished else None


@pytest.fixture
def training_worker(django_db_setup, tmp_path):
    worker = worker_start(
        database_url=database_url_from_config(connection.settings_dict),
        log_path=tmp_path / "training-worker.log",
        queues=[Queue.TRAINING.value],
    )
    yield worker
    worker.stop()


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_on_a_worker_keeps_every_answer_and_four_examples_prove_nothing(
    training_worker, client
):
    project = ProjectFactory()
    index_folder(project, LABELLED_SET)
    curation_policy_get(project=project)
    dataset = _dataset_with_one_eval_example(
        project, "Can I get a refund?", "Refunds within 14 days."
    )
    production = ModelVersion.objects.create(
        project=project, name="base", base_model="", status=ModelVersion.Status.PRODUCTION
    )
    candidate = ModelVersion.objects.create(
        project=project, name="lora-1", base_model="", dataset_version_id=dataset.pk
    )
    job = job_create(
        project=project,
        kind="evaluation",
        trigger="api",
        parameters={
            "model_version": candidate.pk,
            "golden_set": _golden_set(GOLDEN),
            "max_new_tokens": 8,
        },
    )

    job = wait_for(lambda: _finished(job.pk), what="the evaluation", deadline_seconds=600)

    assert job.state == "succeeded", job.error
    gate = job.metrics["gate"]
    assert gate["decision"] == "insufficient_evidence"
    assert (gate["n"], gate["min_examples"], gate["metric"]) == (4, 30, "token_f1")
    assert "fewer than the 30 the policy requires" in gate["reason"]
    examples = job.metrics["examples"]
    assert [e["suite"] for e in examples] == [
        "eval_split",
        "golden_set",
        "golden_set",
        "golden_set",
    ]
    assert [e["question"] for e in examples[1:]] == [q for q, _ in GOLDEN]
    assert examples[1]["sources"][0] == "plans.md"
    for example in examples:
        for side in ("candidate", "production"):
            scored = example[side]
            assert scored["answer"]
            assert scored["token_f1"] == token_f1(scored["answer"], example["reference"])
            assert scored["rouge_l"] == rouge_l(scored["answer"], example["reference"])
    assert job.metrics["index_version"] == active_index_version(project=project).number
    assert job.metrics["suites"]["golden_set"]["candidate"]["examples"] == 3
    candidate.refresh_from_db()
    production.refresh_from_db()
    assert candidate.metrics["evaluation"]["gate"] == gate
    assert "examples" not in candidate.metrics["evaluation"]
    assert (candidate.status, production.status) == ("candidate", "production")

    client.force_login(user_with_role(project, "viewer"))
    page = client.get(reverse("dashboard:job_detail", args=[project.slug, job.pk])).content.decode()
    assert "insufficient evidence" in page and "Questions (4)" in page
    for example in examples:
        assert example["question"] in page
        assert escape(example["production"]["answer"]) in page


@pytest.mark.django_db(transaction=True)
def test_a_judge_server_grades_every_answer_and_its_rubric_is_kept(live_server, settings):
    project = ProjectFactory()
    index_folder(project, LABELLED_SET)
    ModelVersion.objects.create(
        project=project, name="base", base_model="", status=ModelVersion.Status.PRODUCTION
    )
    candidate = ModelVersion.objects.create(project=project, name="lora-1", base_model="")
    curation_policy_get(project=project)
    CurationPolicy.objects.filter(project=project).update(
        promotion_metric="judge", min_eval_examples=2
    )
    # Flywheel's own chat endpoint is an OpenAI-compatible server; a second project judges.
    judging_project = ProjectFactory()
    settings.FLYWHEEL_JUDGE_BASE_URL = f"{live_server.url}/v1"
    settings.FLYWHEEL_JUDGE_MODEL = "flywheel"
    settings.FLYWHEEL_JUDGE_API_KEY = api_key_create(
        project=judging_project, kind="secret", name="judge"
    ).raw_key
    job = job_create(
        project=project,
        kind="evaluation",
        trigger="api",
        parameters={
            "model_version": candidate.pk,
            "golden_set": _golden_set(GOLDEN[:2]),
            "max_new_tokens": 8,
        },
    )

    assert job_run(job_id=job.pk, handler=evaluation.run) == "succeeded"

    job.refresh_from_db()
    assert job.metrics["judge"] == {
        "base_url": f"{live_server.url}/v1",
        "model": "flywheel",
        "rubric": RUBRIC,
    }
    judged = [
        example[side] for example in job.metrics["examples"] for side in ("candidate", "production")
    ]
    assert len(judged) == 4
    for scored in judged:
        assert isinstance(scored["judge_reply"], str) and "judge_error" not in scored
        if scored["judge_grade"] is None:
            assert scored["judge"] is None
        else:
            assert scored["judge"] == (scored["judge_grade"] - 1) / 4
    # Every grading was a real request to the judge's server, which logged it.
    requests = Interaction.objects.filter(project=judging_project)
    assert requests.count() == 4
    assert all(request.messages[0]["content"] == RUBRIC for request in requests)
    gate = job.metrics["gate"]
    assert gate["metric"] == "judge"
    assert gate["n"] == sum(
        example["candidate"]["judge"] is not None and example["production"]["judge"] is not None
        for example in job.metrics["examples"]
    )
