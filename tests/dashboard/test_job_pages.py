"""The dashboard's jobs and versions pages: who may see and do what, starting and cancelling
jobs, the live progress partial, what a job reports, and the pointer switches of model and
index versions. Job rows and their metrics are written here directly: nothing trains."""

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.selectors.jobs import LOSS_POINTS_SHOWN, loss_curve_thinned
from feedback.models import Review
from feedback.services.reviews import review_submit
from flywheel.models import EMBEDDING_DIMENSIONS, Chunk, IndexVersion, Interaction, ModelVersion
from retrain.models import CurationPolicy, DatasetVersion, Job
from retrain.promotion import model_version_promote
from tests.conftest import user_with_role
from tests.factories import ProjectFactory

XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;"
POLLING = 'hx-trigger="every 2s"'


def _url(name: str, project, *args) -> str:
    return reverse(f"dashboard:{name}", args=[project.slug, *args])


def _login(client, project, role: str):
    user = user_with_role(project, role)
    client.force_login(user)
    return user


def _job(project, kind=Job.Kind.LORA_TRAINING, trigger=Job.Trigger.API, **fields) -> Job:
    return Job.objects.create(project=project, kind=kind, trigger=trigger, **fields)


def _model_version(project, name: str, status=ModelVersion.Status.CANDIDATE, **fields):
    return ModelVersion.objects.create(
        project=project, name=name, base_model="", status=status, **fields
    )


def _index_version(project, number: int, status=IndexVersion.Status.READY, **fields):
    return IndexVersion.objects.create(
        project=project, number=number, status=status, embedding_model="test-model", **fields
    )


def _dataset_version(project, number: int = 1) -> DatasetVersion:
    return DatasetVersion.objects.create(
        project=project,
        number=number,
        content_hash=f"hash-{number}",
        policy={},
        counts={"train": 3, "eval": 1, "preference_train": 0, "preference_eval": 0},
        stats={},
        diff={},
        trigger=DatasetVersion.Trigger.API,
    )


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# ---------------------------------------------------------------------------------------------
# Who may see and do what


@pytest.fixture
def rows(project):
    """One of everything the pages link to, in `project`."""
    production = _model_version(
        project, "base", ModelVersion.Status.PRODUCTION, promoted_at=timezone.now()
    )
    return {
        "job": _job(project, state=Job.State.RUNNING),
        "candidate": _model_version(project, "lora-1", parent=production),
        "index": _index_version(project, 1),
    }


def _read_urls(project, rows) -> list[str]:
    job = rows["job"]
    return [
        _url("jobs", project),
        _url("job_detail", project, job.pk),
        _url("job_progress", project, job.pk),
        _url("versions", project),
    ]


def _job_action_urls(project, rows) -> list[str]:
    return [_url("job_start", project), _url("job_cancel", project, rows["job"].pk)]


def _version_switch_urls(project, rows) -> list[str]:
    """Their GET asks for confirmation, their POST switches."""
    return [
        _url("model_version_promote", project, rows["candidate"].pk),
        _url("model_version_reject", project, rows["candidate"].pk),
        _url("model_version_rollback", project),
        _url("index_version_activate", project, rows["index"].pk),
        _url("index_version_rollback", project),
    ]


def _admin_urls(project, rows) -> list[str]:
    return _job_action_urls(project, rows) + _version_switch_urls(project, rows)


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_sign_in(client, project, rows):
    for url in _read_urls(project, rows) + _admin_urls(project, rows):
        response = client.get(url)

        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url


@pytest.mark.django_db
def test_users_of_other_projects_do_not_learn_the_project_exists(client, project, rows):
    _login(client, ProjectFactory(), "admin")

    for url in _read_urls(project, rows) + _admin_urls(project, rows):
        assert client.get(url).status_code == 404, url
        assert client.post(url).status_code == 404, url


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_viewers_and_reviewers_read_every_page_but_change_nothing(client, project, rows, role):
    _login(client, project, role)

    for url in _read_urls(project, rows):
        assert client.get(url).status_code == 200, url
    for url in _admin_urls(project, rows):
        assert client.post(url, {"kind": "dataset_snapshot"}).status_code == 403, url
    for url in _version_switch_urls(project, rows):
        assert client.get(url).status_code == 403, url

    assert Job.objects.filter(project=project).count() == 1
    rows["job"].refresh_from_db()
    assert rows["job"].cancel_requested is False
    assert ModelVersion.objects.get(pk=rows["candidate"].pk).status == "candidate"
    assert IndexVersion.objects.get(pk=rows["index"].pk).status == "ready"


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_only_admins_see_the_start_form_and_the_action_buttons(client, project, rows, role):
    _login(client, project, role)

    jobs_page = client.get(_url("jobs", project)).content.decode()
    detail_page = client.get(_url("job_detail", project, rows["job"].pk)).content.decode()
    versions_page = client.get(_url("versions", project)).content.decode()

    assert "Start a job" not in jobs_page
    assert _url("job_cancel", project, rows["job"].pk) not in detail_page
    assert "Promote…" not in versions_page
    assert _url("model_version_rollback", project) not in versions_page


@pytest.mark.django_db
def test_admins_see_the_start_form_and_the_action_buttons(client, project, rows):
    _login(client, project, "admin")

    jobs_page = client.get(_url("jobs", project)).content.decode()
    detail_page = client.get(_url("job_detail", project, rows["job"].pk)).content.decode()
    versions_page = client.get(_url("versions", project)).content.decode()

    assert "Start a job" in jobs_page
    assert _url("job_cancel", project, rows["job"].pk) in detail_page
    assert _url("model_version_promote", project, rows["candidate"].pk) in versions_page
    assert _url("model_version_reject", project, rows["candidate"].pk) in versions_page
    assert _url("index_version_activate", project, rows["index"].pk) in versions_page


@pytest.mark.django_db
def test_another_projects_jobs_and_versions_are_not_found_under_this_project(client, project):
    _login(client, project, "admin")
    elsewhere = ProjectFactory()
    job = _job(elsewhere, state=Job.State.QUEUED)
    version = _model_version(elsewhere, "theirs")
    index = _index_version(elsewhere, 1)

    pages = [_url("job_detail", project, job.pk), _url("job_progress", project, job.pk)]
    actions = [
        _url("job_cancel", project, job.pk),
        _url("model_version_promote", project, version.pk),
        _url("model_version_reject", project, version.pk),
        _url("index_version_activate", project, index.pk),
    ]

    for url in pages:
        assert client.get(url).status_code == 404, url
    for url in actions:
        assert client.post(url).status_code == 404, url

    job.refresh_from_db()
    version.refresh_from_db()
    index.refresh_from_db()
    assert (job.state, version.status, index.status) == ("queued", "candidate", "ready")


# ---------------------------------------------------------------------------------------------
# The jobs list


@pytest.mark.django_db
def test_the_list_shows_each_job_and_filters_by_kind_and_state(client, project):
    user = _login(client, project, "viewer")
    training = _job(
        project,
        state=Job.State.RUNNING,
        progress=40,
        progress_message="Step 4 of 10",
        trigger=Job.Trigger.DASHBOARD,
        triggered_by=user,
    )
    refresh = _job(project, Job.Kind.INDEX_REFRESH, state=Job.State.SUCCEEDED, progress=100)
    _job(ProjectFactory(), state=Job.State.RUNNING)

    everything = client.get(_url("jobs", project))
    running_trainings = client.get(
        _url("jobs", project), {"kind": "lora_training", "state": "running"}
    )
    failed = client.get(_url("jobs", project), {"state": "failed"})
    nonsense = client.get(_url("jobs", project), {"kind": "nope"})

    assert everything.context["jobs"] == [refresh, training]
    page = everything.content.decode()
    assert 'value="40"' in page and "Step 4 of 10" in page
    assert f"Dashboard · {user.username}" in page
    assert _url("job_detail", project, training.pk) in page
    assert running_trainings.context["jobs"] == [training]
    assert failed.context["jobs"] == []
    assert "No job of this kind and state yet." in failed.content.decode()
    assert nonsense.context["jobs"] == [refresh, training]


# ---------------------------------------------------------------------------------------------
# Starting a job


@pytest.fixture
def admin(client, project):
    return _login(client, project, "admin")


def _start(client, project, kind: str, **fields):
    return client.post(
        _url("job_start", project),
        {"kind": kind, **{f"{kind}-{name}": value for name, value in fields.items()}},
    )


def _start_form(response, kind: str):
    return next(o.form for o in response.context["start_options"] if o.kind == kind)


@pytest.mark.django_db
def test_the_start_form_offers_the_projects_versions_and_the_kinds_defaults(client, project, admin):
    _dataset_version(project, 1)
    _dataset_version(project, 2)
    candidate = _model_version(project, "lora-7")
    _model_version(ProjectFactory(), "not-ours")

    response = client.get(_url("jobs", project))

    training = _start_form(response, "lora_training")
    assert [value for value, _ in training.fields["dataset_version"].choices] == ["", 2, 1]
    assert training["r"].value() == 8
    assert training["evaluate"].value() is True
    evaluation = _start_form(response, "evaluation")
    assert [value for value, _ in evaluation.fields["model_version"].choices] == [candidate.pk]
    assert evaluation["max_examples"].value() == 50
    page = response.content.decode()
    assert 'name="lora_training-learning_rate"' in page
    assert 'name="index_refresh-activate"' in page and "csrfmiddlewaretoken" in page
    assert "not-ours" not in page


@pytest.mark.django_db
def test_an_index_refresh_started_from_the_dashboard_is_queued_with_normalised_parameters(
    client, project, admin
):
    # An unchecked box is absent from the form data: activate=False.
    response = _start(client, project, "index_refresh")

    job = Job.objects.get(project=project)
    assert response.status_code == 302
    assert response["Location"] == _url("job_detail", project, job.pk)
    assert (job.kind, job.state, job.trigger, job.triggered_by) == (
        "index_refresh",
        "queued",
        "dashboard",
        admin,
    )
    assert job.parameters == {"activate": False, "golden_set": None}


@pytest.mark.django_db
def test_a_training_job_takes_the_fields_set_and_the_defaults_of_those_left_empty(
    client, project, admin
):
    _dataset_version(project, 1)
    # Its one eval example is all the gate needs here, so evaluate=true is accepted.
    CurationPolicy.objects.update_or_create(project=project, defaults={"min_eval_examples": 1})

    _start(
        client,
        project,
        "lora_training",
        dataset_version="1",
        r="16",
        lora_alpha="32",
        learning_rate="0.001",
        epochs="2",
        max_steps="",
        batch_size="2",
        max_length="256",
        evaluate="on",
    )

    job = Job.objects.get(project=project)
    chosen = {
        "dataset_version": 1,
        "r": 16,
        "lora_alpha": 32,
        "learning_rate": 0.001,
        "epochs": 2.0,
        "max_steps": None,
        "batch_size": 2,
        "max_length": 256,
        "evaluate": True,
        "auto_promote": False,
    }
    assert job.kind == "lora_training"
    assert {name: job.parameters[name] for name in chosen} == chosen
    # The kind's own defaults fill in what the form does not ask for.
    assert job.parameters["lora_dropout"] == 0.05


@pytest.mark.django_db
def test_an_evaluation_and_a_snapshot_start_from_the_dashboard(
    client, project, admin, tmp_path, settings
):
    settings.FLYWHEEL_GOLDEN_SETS_DIR = tmp_path
    (tmp_path / "faq.jsonl").write_text('{"question": "Q?", "answer": "A."}\n')
    candidate = _model_version(project, "lora-3")

    _start(
        client,
        project,
        "evaluation",
        model_version=str(candidate.pk),
        max_examples="10",
        max_new_tokens="32",
        golden_set="faq.jsonl",
        auto_promote="on",
    )
    _start(client, project, "dataset_snapshot")

    evaluation, snapshot = Job.objects.filter(project=project).order_by("pk")
    assert evaluation.parameters == {
        "model_version": candidate.pk,
        "max_examples": 10,
        "max_new_tokens": 32,
        "auto_promote": True,
        "golden_set": "faq.jsonl",
    }
    assert (snapshot.kind, snapshot.parameters) == ("dataset_snapshot", {})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "fields", "field", "message"),
    [
        ("lora_training", {"r": "0"}, "r", "greater than or equal to 1"),
        ("lora_training", {"learning_rate": "fast"}, "learning_rate", "Enter a number"),
        ("lora_training", {"dataset_version": "9"}, "dataset_version", "Select a valid choice"),
        ("evaluation", {"max_examples": "10"}, "model_version", "This field is required"),
        ("evaluation", {"golden_set": "../etc/passwd"}, "golden_set", "Select a valid choice"),
        ("retriever_training", {"learning_rate": "nan"}, "learning_rate", "Enter a number"),
        ("retriever_training", {"epochs": "inf"}, "epochs", "Enter a number"),
        ("retriever_training", {"eval_fraction": "0.95"}, "eval_fraction", "less than or equal"),
        # Beyond what PostgreSQL's bigint holds: refused by the field, never sent to the job.
        ("retriever_training", {"batch_size": "99999999999999999999"}, "batch_size", "less than"),
    ],
)
def test_values_the_form_refuses_create_no_job(
    client, project, admin, kind, fields, field, message
):
    _model_version(project, "lora-1")

    response = _start(client, project, kind, **fields)

    assert response.status_code == 200
    form = _start_form(response, kind)
    assert any(message in error for error in form.errors[field])
    assert message in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("lora_training", {"r": "5000"}, "r: must be an integer from 1 to 1024"),
        ("lora_training", {"learning_rate": "2"}, "learning_rate: must be a number"),
        ("evaluation", {"max_new_tokens": "5000"}, "max_new_tokens must be an integer"),
    ],
)
def test_values_the_job_kind_refuses_are_shown_as_a_form_error(
    client, project, admin, kind, fields, message
):
    candidate = _model_version(project, "lora-1")
    if kind == "evaluation":
        fields = {**fields, "model_version": str(candidate.pk)}

    response = _start(client, project, kind, **fields)

    assert response.status_code == 200
    assert any(message in error for error in _start_form(response, kind).non_field_errors())
    assert message in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_an_unknown_kind_is_refused(client, project, admin):
    response = client.post(_url("job_start", project), {"kind": "mine_bitcoin"})

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_starting_a_job_needs_the_csrf_token(project):
    client = Client(enforce_csrf_checks=True)
    _login(client, project, "admin")

    response = _start(client, project, "dataset_snapshot")

    assert response.status_code == 403
    assert not Job.objects.exists()


# ---------------------------------------------------------------------------------------------
# Cancelling


@pytest.mark.django_db
def test_cancelling_a_queued_job_ends_it_at_once(client, project, admin):
    job = _job(project)

    response = client.post(_url("job_cancel", project, job.pk), follow=True)

    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and job.finished_at is not None
    assert f"Cancelled job #{job.pk} before it started." in _messages(response)


@pytest.mark.django_db
def test_cancelling_a_running_job_asks_its_worker_to_stop(client, project, admin):
    job = _job(project, state=Job.State.RUNNING, started_at=timezone.now())

    response = client.post(_url("job_cancel", project, job.pk), follow=True)

    job.refresh_from_db()
    assert (job.state, job.cancel_requested) == (Job.State.RUNNING, True)
    page = response.content.decode()
    assert "Cancel requested: the worker stops at its next step." in page
    assert POLLING in page


@pytest.mark.django_db
def test_cancelling_a_finished_job_changes_nothing(client, project, admin):
    job = _job(project, state=Job.State.SUCCEEDED, finished_at=timezone.now())

    response = client.post(_url("job_cancel", project, job.pk), follow=True)

    job.refresh_from_db()
    assert (job.state, job.cancel_requested) == (Job.State.SUCCEEDED, False)
    assert f"Job #{job.pk} had already finished (succeeded)." in _messages(response)


# ---------------------------------------------------------------------------------------------
# A job's page and its live partial


@pytest.mark.django_db
def test_the_progress_partial_polls_while_the_job_runs_and_stops_once_it_is_finished(
    client, project
):
    _login(client, project, "viewer")
    job = _job(project, state=Job.State.RUNNING, progress=30, progress_message="Step 3 of 10")
    url = _url("job_progress", project, job.pk)

    running = client.get(url).content.decode()
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.SUCCEEDED, progress=100, progress_message="Done", finished_at=timezone.now()
    )
    finished = client.get(url).content.decode()

    assert POLLING in running and f'hx-get="{url}"' in running
    assert 'value="30"' in running and "Step 3 of 10" in running
    assert "<html" not in running
    assert "hx-trigger" not in finished and "hx-get" not in finished
    assert 'value="100"' in finished and "Done" in finished


@pytest.mark.django_db
def test_a_running_job_shows_its_time_left_and_throughput(client, project):
    _login(client, project, "viewer")
    training = _job(
        project,
        state=Job.State.RUNNING,
        progress=40,
        started_at=timezone.now() - timedelta(minutes=4),
        metrics={
            "pace": {"steps_per_second": 0.5, "tokens_per_second": 812.4, "seconds_left": 240}
        },
    )
    # No measured pace: the elapsed 20 s for 25 % stretch to 60 s more.
    snapshot = _job(
        project,
        kind=Job.Kind.DATASET_SNAPSHOT,
        state=Job.State.RUNNING,
        progress=25,
        started_at=timezone.now() - timedelta(seconds=20),
    )

    training_page = client.get(_url("job_progress", project, training.pk)).content.decode()
    snapshot_page = client.get(_url("job_progress", project, snapshot.pk)).content.decode()
    Job.objects.filter(pk=training.pk).update(state=Job.State.SUCCEEDED, progress=100)
    finished_page = client.get(_url("job_progress", project, training.pk)).content.decode()

    assert "about 4 min left · 0.50 steps/s · 812 tokens/s" in training_page
    # At least 60 s: more by three times however long the test took to get here.
    assert 60 <= int(re.search(r"about (\d+) s left", snapshot_page).group(1)) < 90
    assert "left" not in finished_page.split('class="job-message"')[0]


@pytest.mark.django_db
def test_a_training_jobs_page_carries_its_loss_curve_for_the_chart(client, project):
    _login(client, project, "viewer")
    curve = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.1}, {"step": 3, "loss": 1.8}]
    job = _job(project, state=Job.State.RUNNING, metrics={"loss_curve": curve, "steps_total": 9})

    page = client.get(_url("job_detail", project, job.pk)).content.decode()

    embedded = re.search(
        r'<script id="job-loss-curve" type="application/json">(.*?)</script>', page
    )
    assert json.loads(embedded.group(1)) == curve
    assert 'id="loss-chart"' in page and "flywheel/job-charts.js" in page


def test_a_long_loss_curve_is_thinned_but_keeps_its_last_step():
    curve = [{"step": step, "loss": 1 / step} for step in range(1, 2001)]

    thinned = loss_curve_thinned(curve)

    assert len(thinned) <= LOSS_POINTS_SHOWN + 1
    assert thinned[0] == curve[0] and thinned[-1] == curve[-1]
    assert loss_curve_thinned(curve[:10]) == curve[:10]


def _scored(answer: str, f1: float, rouge: float, judge: float | None = None) -> dict:
    return {"answer": answer, "token_f1": f1, "rouge_l": rouge, "judge": judge}


@pytest.mark.django_db
def test_an_evaluation_shows_the_gate_the_suites_and_every_answer_side_by_side(client, project):
    _login(client, project, "viewer")
    candidate = _model_version(project, "lora-5")
    suites = {
        "eval_split": {
            "candidate": {"token_f1": 0.61, "rouge_l": 0.58, "eval_loss": 1.25, "examples": 2},
            "production": {"token_f1": 0.42, "rouge_l": 0.44, "eval_loss": 1.75, "examples": 2},
        }
    }
    examples = [
        {
            "suite": "eval_split",
            "question": "How long is the bin kept?",
            "reference": "30 days.",
            "sources": ["retention.md", "offline.md"],
            "candidate": {**_scored("Thirty days.", 0.5, 0.5, 1.0), "judge_reply": "5"},
            "production": {**_scored("A week.", 0.0, 0.0, 0.25), "judge_reply": "Grade: 2"},
        },
        {
            "suite": "eval_split",
            "question": "What is " + XSS,
            "reference": "Nothing.",
            "sources": None,
            "candidate": _scored("I cannot say.", 0.72, 0.66),
            "production": _scored(XSS, 0.84, 0.88),
        },
    ]
    gate = {
        "decision": "insufficient_evidence",
        "metric": "token_f1",
        "n": 2,
        "min_examples": 30,
        "margin": 0.01,
        "mean_difference": 0.19,
        "interval": [-0.12, 0.5],
        "confidence": 0.95,
        "seed": 0,
        "reason": "fewer than the 30 the policy requires; an admin decides",
    }
    judge = {"base_url": "http://judge/v1", "model": "judge-7b", "rubric": "Grade 1 to 5."}
    job = _job(
        project,
        Job.Kind.EVALUATION,
        state=Job.State.SUCCEEDED,
        model_version=candidate,
        metrics={
            "candidate": "lora-5",
            "production": "base",
            "index_version": 3,
            "judge": judge,
            "suites": suites,
            "examples": examples,
            "gate": gate,
        },
    )

    response = client.get(_url("job_detail", project, job.pk))

    report = response.context["detail"].evaluation
    (suite,) = report.suites
    f1, rouge, judged, loss, count = suite.metrics
    assert (f1.candidate, f1.production, f1.better) == (0.61, 0.42, "candidate")
    assert rouge.better == "candidate"
    assert (loss.better, judged.better, count.better) == ("candidate", "", "")
    first, second = report.examples
    assert (first.candidate.answer, first.production.answer) == ("Thirty days.", "A week.")
    assert first.difference == 0.5 and second.difference == pytest.approx(-0.12)
    assert first.candidate.scores == [("F1", 0.5), ("ROUGE-L", 0.5), ("judge", 1.0)]
    assert report.gate.decision == "insufficient_evidence" and report.gate.interval == (-0.12, 0.5)
    page = response.content.decode()
    for text in [
        "Candidate: lora-5",
        "Production: base",
        "Promotion gate",
        "insufficient evidence",
        "2 (the policy needs 30)",
        "[-0.1200, 0.5000]",
        "seed 0",
        "fewer than the 30 the policy requires",
        "Questions (2)",
        "index v3",
        "judge-7b",
        "Grade 1 to 5.",
        "How long is the bin kept?",
        "Thirty days.",
        "A week.",
        "judge: “Grade: 2”",
        "2 passages: retention.md, offline.md",
        "no retrieval",
        "0.61",
    ]:
        assert text in page, text
    assert "<script>alert(1)" not in page and ESCAPED_XSS in page
    assert f"#model-{candidate.pk}" in page


@pytest.mark.django_db
def test_an_index_refresh_shows_its_stats_and_hit_rates_against_the_active_index(client, project):
    _login(client, project, "viewer")
    built = _index_version(project, 2)
    rates = {"k": 5, "questions": 4}
    job = _job(
        project,
        Job.Kind.INDEX_REFRESH,
        state=Job.State.SUCCEEDED,
        index_version=built,
        metrics={
            "index_version": 2,
            "previous_index_version": 1,
            "stats": {
                "documents": 7,
                "corrections": 4,
                "chunks": 31,
                "embeddings_reused": 25,
                "embeddings_computed": 6,
            },
            "corrections": {
                "candidate": {**rates, "hit@1": 0.75, "hit@k": 1.0},
                "active": {**rates, "hit@1": 0.25, "hit@k": 0.5},
            },
            "golden_set": {"candidate": None, "active": None},
        },
    )

    response = client.get(_url("job_detail", project, job.pk))

    report = response.context["detail"].index_refresh
    assert ("Chunks", 31) in report.stats and ("Embeddings reused", 25) in report.stats
    corrections, golden = report.hit_rates
    assert (corrections.candidate.hit_at_1, corrections.active.hit_at_k) == (0.75, 0.5)
    assert golden.candidate is None
    page = response.content.decode()
    assert "Index v2 against v1" in page and "75 %" in page and "25 %" in page
    assert f"#index-{built.pk}" in page


@pytest.mark.django_db
def test_a_job_links_its_versions_its_parent_and_the_jobs_it_started(client, project):
    _login(client, project, "viewer")
    dataset = _dataset_version(project, 4)
    training = _job(project, state=Job.State.SUCCEEDED, dataset_version=dataset)
    evaluation = _job(project, Job.Kind.EVALUATION, parent=training, trigger=Job.Trigger.JOB)

    training_page = client.get(_url("job_detail", project, training.pk)).content.decode()
    evaluation_page = client.get(_url("job_detail", project, evaluation.pk)).content.decode()

    assert _url("dataset_detail", project, 4) in training_page
    assert _url("job_detail", project, evaluation.pk) in training_page
    assert _url("job_detail", project, training.pk) in evaluation_page


@pytest.mark.django_db
def test_hostile_text_in_a_job_is_shown_as_text(client, project):
    _login(client, project, "admin")
    job = _job(
        project,
        state=Job.State.FAILED,
        progress_message=XSS,
        log_tail=XSS,
        error=XSS,
        parameters={"note": XSS},
        metrics={"candidate": XSS},
    )
    _model_version(project, XSS, adapter_path=XSS)

    pages = [
        client.get(_url(name, project, *args)).content.decode()
        for name, args in [
            ("jobs", ()),
            ("job_detail", (job.pk,)),
            ("job_progress", (job.pk,)),
            ("versions", ()),
        ]
    ]

    for page in pages:
        assert "<script>alert(1)" not in page and 'onerror="alert(2)"' not in page
    assert ESCAPED_XSS in pages[0] and ESCAPED_XSS in pages[3]
    assert pages[1].count(ESCAPED_XSS) >= 3  # message, log and error


# ---------------------------------------------------------------------------------------------
# Model versions


@pytest.fixture
def lineage(project):
    """base (production) ← lora-1 trained on dataset v1 by a training job, evaluated."""
    base = _model_version(
        project,
        "base",
        ModelVersion.Status.PRODUCTION,
        promoted_at=timezone.now() - timedelta(days=1),
    )
    dataset = _dataset_version(project, 1)
    training = _job(project, state=Job.State.SUCCEEDED, dataset_version=dataset)
    gate = {
        "decision": "reject",
        "metric": "token_f1",
        "n": 40,
        "min_examples": 30,
        "margin": 0.01,
        "mean_difference": -0.0385,
        "interval": [-0.061, -0.012],
        "confidence": 0.95,
        "seed": 0,
        "reason": "the candidate is worse",
    }
    candidate = _model_version(
        project,
        "lora-1",
        dataset_version_id=dataset.pk,
        training_job_id=training.pk,
        parent=base,
        adapter_path="/var/artifacts/lora-1",
        metrics={"evaluation": {"gate": gate}},
    )
    evaluation = _job(
        project,
        Job.Kind.EVALUATION,
        state=Job.State.SUCCEEDED,
        model_version=candidate,
        parent=training,
    )
    return {
        "base": base,
        "dataset": dataset,
        "training": training,
        "candidate": candidate,
        "evaluation": evaluation,
    }


def _status(version) -> str:
    version.refresh_from_db()
    return version.status


@pytest.mark.django_db
def test_the_versions_page_shows_each_model_versions_lineage_and_gate(client, project, lineage):
    _login(client, project, "viewer")

    response = client.get(_url("versions", project))

    page = response.content.decode()
    row = page[page.index(f'id="model-{lineage["candidate"].pk}"') :]
    row = row[: row.index("</tr>")]
    for text in [
        _url("dataset_detail", project, 1),
        _url("job_detail", project, lineage["training"].pk),
        f'href="#model-{lineage["base"].pk}"',
        "/var/artifacts/lora-1",
        "reject",
        "token_f1: -0.0385 [-0.0610, -0.0120] over n = 40",
        "the candidate is worse",
        _url("job_detail", project, lineage["evaluation"].pk),
    ]:
        assert text in row, text


@pytest.mark.django_db
def test_promoting_a_candidate_retires_production_and_the_page_shows_it(
    client, project, admin, lineage
):
    url = _url("model_version_promote", project, lineage["candidate"].pk)

    confirmation = client.get(url)
    response = client.post(url, {"reason": "Reads better on the support questions."}, follow=True)

    assert "Promote lora-1 to production?" in confirmation.content.decode()
    assert _status(lineage["candidate"]) == "production"
    assert _status(lineage["base"]) == "retired"
    assert "lora-1 is now in production." in _messages(response)
    page = client.get(_url("versions", project)).content.decode()
    assert "Roll back to base…" in page
    assert _url("model_version_promote", project, lineage["base"].pk) in page
    assert _url("model_version_promote", project, lineage["candidate"].pk) not in page


@pytest.mark.django_db
def test_rejecting_a_candidate_keeps_it_promotable(client, project, admin, lineage):
    client.post(_url("model_version_reject", project, lineage["candidate"].pk))

    assert _status(lineage["candidate"]) == "rejected"
    page = client.get(_url("versions", project)).content.decode()
    assert "version-status-rejected" in page
    assert _url("model_version_reject", project, lineage["candidate"].pk) not in page
    assert _url("model_version_promote", project, lineage["candidate"].pk) in page


@pytest.mark.django_db
def test_switches_that_do_not_apply_are_refused_with_a_reason(client, project, admin, lineage):
    production_promote = client.post(
        _url("model_version_promote", project, lineage["base"].pk), follow=True
    )
    production_reject = client.post(
        _url("model_version_reject", project, lineage["base"].pk), follow=True
    )
    no_previous = client.post(_url("model_version_rollback", project), follow=True)
    building = _index_version(project, 1, IndexVersion.Status.BUILDING)
    building_activate = client.post(
        _url("index_version_activate", project, building.pk), follow=True
    )

    assert "base is already in production." in _messages(production_promote)
    assert "Only candidates can be rejected; base is production." in _messages(production_reject)
    assert "There is no earlier production version to roll back to." in _messages(no_previous)
    assert "only a ready or retired one can be" in _messages(building_activate)[0]
    assert (_status(lineage["base"]), _status(building)) == ("production", "building")


@pytest.mark.django_db
def test_rolling_back_restores_the_previous_production_version(client, project, admin, lineage):
    model_version_promote(version=lineage["candidate"], reason="trying it")
    url = _url("model_version_rollback", project)

    confirmation = client.get(url).content.decode()
    response = client.post(url, {"target": lineage["base"].pk}, follow=True)

    assert "Roll production back to base?" in confirmation
    assert f'name="target" value="{lineage["base"].pk}"' in confirmation
    assert (_status(lineage["base"]), _status(lineage["candidate"])) == ("production", "retired")
    assert "Rolled back: base is in production again." in _messages(response)
    assert "Roll back to lora-1…" in client.get(_url("versions", project)).content.decode()


@pytest.mark.django_db
def test_a_rollback_confirmed_for_another_target_is_refused(client, project, admin, lineage):
    model_version_promote(version=lineage["candidate"], reason="trying it")
    # The admin confirmed "roll back to lora-1" earlier; since then production changed.
    response = client.post(
        _url("model_version_rollback", project), {"target": lineage["candidate"].pk}, follow=True
    )

    assert "The model versions changed since you confirmed" in _messages(response)[0]
    assert (_status(lineage["candidate"]), _status(lineage["base"])) == ("production", "retired")


# ---------------------------------------------------------------------------------------------
# Index versions


def _faq_chunk(index, review) -> Chunk:
    return Chunk.objects.create(
        project=index.project,
        index_version=index,
        kind=Chunk.Kind.FAQ,
        review_id=review.pk,
        position=0,
        text="Question: …\nAnswer: …",
        content_hash=f"faq-{review.pk}",
        embedding=[0.1] * EMBEDDING_DIMENSIONS,
    )


@pytest.mark.django_db
def test_the_versions_page_lists_each_index_version_with_its_corrections(client, project):
    reviewer = _login(client, project, "reviewer")
    interaction = Interaction.objects.create(
        project=project,
        source=Interaction.Source.LOG,
        query_text="Where are my invoices?",
        messages=[{"role": "user", "content": "Where are my invoices?"}],
        response="Nowhere.",
        created_at=timezone.now(),
    )
    review = review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision=Review.Decision.CORRECTED,
        ideal_answer="Under Billing.",
    )
    refresh = _job(project, Job.Kind.INDEX_REFRESH, state=Job.State.SUCCEEDED)
    index = _index_version(
        project,
        2,
        built_by_job_id=refresh.pk,
        stats={"embeddings_reused": 12, "embeddings_computed": 3},
    )
    _faq_chunk(index, review)

    response = client.get(_url("versions", project))

    (row,) = response.context["index_versions"]
    assert (row.chunks, row.correction_count, row.documents) == (1, 1, 0)
    page = response.content.decode()
    assert _url("interaction_detail", project, interaction.pk) in page
    assert "Where are my invoices?" in page
    assert _url("job_detail", project, refresh.pk) in page
    assert "12 / 3" in page


@pytest.mark.django_db
def test_activating_an_index_version_retires_the_active_one_and_rollback_undoes_it(
    client, project, admin
):
    first = _index_version(
        project, 1, IndexVersion.Status.ACTIVE, activated_at=timezone.now() - timedelta(hours=1)
    )
    second = _index_version(project, 2)

    activated = client.post(_url("index_version_activate", project, second.pk), follow=True)

    assert (_status(first), _status(second)) == ("retired", "active")
    assert "Index v2 is now active." in _messages(activated)
    page = client.get(_url("versions", project)).content.decode()
    assert "Roll back to v1…" in page

    confirmation = client.get(_url("index_version_rollback", project)).content.decode()
    client.post(_url("index_version_rollback", project), {"target": first.pk})

    assert "Roll the index back to v1?" in confirmation
    assert (_status(first), _status(second)) == ("active", "retired")
    page = client.get(_url("versions", project)).content.decode()
    assert "version-status-active" in page and "Roll back to v2…" in page
