"""One rule set: every switch — promotion, rollback, index activation, re-curation — is a
service that refuses with a domain error, and the API, the dashboard, the Django admin and the
management commands all refuse it with the service's words."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from feedback.services.ratings import rating_submit
from flywheel.models import ApiKey, Document, IndexVersion, ModelVersion
from flywheel.services import api_key_create
from flywheel.services.model_versions import model_version_production_ensure
from retrain.jobs.schedules import due_jobs_start
from retrain.models import InstructionExample, Job
from retrain.promotion import (
    index_version_activate,
    index_version_rollback,
    model_version_promote,
    model_version_rollback,
)
from retrain.transitions import NothingToRollBack, TransitionRefused
from tests.conftest import bearer, wait_for
from tests.factories import ProjectFactory, served

NOT_RECOMMENDED = "lora-1 has no evaluation that recommends it (its evaluation decided 'reject')"


@pytest.fixture
def versions_key(project) -> str:
    return api_key_create(
        project=project, kind="secret", name="ops", scopes=["versions", "jobs", "read"]
    ).raw_key


@pytest.fixture
def candidate(project) -> ModelVersion:
    """A candidate whose evaluation did not recommend it, beside the base in production."""
    model_version_production_ensure(project=project)
    return ModelVersion.objects.create(
        project=project,
        name="lora-1",
        adapter_path="/artifacts/lora-1",
        metrics={"evaluation": {"gate": {"decision": "reject", "reason": "no better"}}},
    )


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser(username="root", password="pw-root")


def _status(version) -> str:
    version.refresh_from_db()
    return version.status


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _api(client, key: str, path: str, body: dict | None = None) -> tuple[int, str, str]:
    response = client.post(
        path, data=json.dumps(body or {}), content_type="application/json", **bearer(key)
    )
    error = response.json().get("error", {})
    return response.status_code, error.get("code", ""), error.get("message", "")


def _admin_action(client, model: str, action: str, selected: list[int], **extra) -> list[str]:
    response = client.post(
        reverse(f"admin:{model}_changelist"),
        {"action": action, "_selected_action": selected, **extra},
        follow=True,
    )
    return _messages(response)


def _command_refusal(*arguments: str) -> str:
    with pytest.raises(CommandError) as refused:
        call_command(*arguments, stdout=StringIO())
    return str(refused.value)


# ---------------------------------------------------------------------------------------------
# Promotion needs evidence


@pytest.mark.django_db
def test_promoting_without_evidence_or_reason_is_refused_everywhere_alike(
    client, project, candidate, versions_key, superuser
):
    with pytest.raises(TransitionRefused) as service:
        model_version_promote(version=candidate)
    api = _api(client, versions_key, f"/api/v1/model-versions/{candidate.pk}/promote")
    client.force_login(superuser)
    page = client.post(
        reverse("dashboard:model_version_promote", args=[project.slug, candidate.pk]),
        {"reason": "   "},
    )
    admin = _admin_action(
        client, "flywheel_modelversion", "promote", [candidate.pk], apply="1", reason=""
    )
    command = _command_refusal("promote", "model", "lora-1", "--project", project.slug)

    assert service.value.code == "promotion_reason_required"
    assert service.value.message.startswith(NOT_RECOMMENDED)
    assert api == (409, "promotion_reason_required", service.value.message)
    assert page.status_code == 400 and page.context["reason_error"] == service.value.message
    assert admin == [service.value.message]
    assert command == service.value.message
    assert _status(candidate) == "candidate"


@pytest.mark.django_db
def test_the_admin_asks_for_the_reason_before_promoting(client, candidate, superuser):
    client.force_login(superuser)

    page = client.post(
        reverse("admin:flywheel_modelversion_changelist"),
        {"action": "promote", "_selected_action": [candidate.pk]},
    )
    promoted = _admin_action(
        client, "flywheel_modelversion", "promote", [candidate.pk], apply="1", reason="Asked for."
    )

    assert page.status_code == 200
    assert "Promote lora-1 to production?" in page.content.decode()
    assert "Its evaluation decided <strong>reject</strong>" in page.content.decode()
    assert promoted == ["lora-1 is now in production."]
    assert _status(candidate) == "production"


@pytest.mark.django_db
def test_a_hand_promotion_records_who_when_and_why(client, project, candidate, superuser):
    client.force_login(superuser)

    response = client.post(
        reverse("dashboard:model_version_promote", args=[project.slug, candidate.pk]),
        {"reason": "Support asked for the shorter answers."},
        follow=True,
    )

    assert _messages(response) == ["lora-1 is now in production."]
    candidate.refresh_from_db()
    promotion = candidate.metrics["promotion"]
    assert candidate.status == "production"
    assert (promotion["basis"], promotion["by"], promotion["user_id"]) == (
        "hand",
        "root",
        superuser.pk,
    )
    assert promotion["reason"] == "Support asked for the shorter answers."
    assert promotion["at"] == candidate.promoted_at.isoformat()
    assert candidate.metrics["evaluation"]["gate"]["decision"] == "reject", "kept"
    page = client.get(reverse("dashboard:versions", args=[project.slug])).content.decode()
    assert "hand · root: Support asked for the shorter answers." in page


@pytest.mark.django_db
def test_a_candidate_its_evaluation_recommends_is_promoted_without_a_reason(
    client, project, candidate, versions_key
):
    gate = {"decision": "promote", "reason": "token_f1 +4 % (95 % interval above the margin)"}
    candidate.metrics = {"evaluation": {"gate": gate}}
    candidate.save()

    response = client.generic(  # a POST without a body
        "POST", f"/api/v1/model-versions/{candidate.pk}/promote", **bearer(versions_key)
    )

    assert response.status_code == 200, response.content
    promotion = response.json()["metrics"]["promotion"]
    assert (promotion["basis"], promotion["reason"]) == ("evaluation", gate["reason"])
    assert promotion["by"] == f"API key ops ({ApiKey.objects.get(name='ops').display_prefix}…)"
    assert _status(candidate) == "production"


@pytest.mark.django_db
def test_the_api_takes_the_reason_of_a_hand_promotion(client, project, candidate, versions_key):
    status, _, _ = _api(
        client,
        versions_key,
        f"/api/v1/model-versions/{candidate.pk}/promote",
        {"reason": "Measured by hand on the support backlog."},
    )
    not_text = _api(
        client, versions_key, f"/api/v1/model-versions/{candidate.pk}/promote", {"reason": 3}
    )

    assert status == 200
    assert ModelVersion.objects.get(pk=candidate.pk).metrics["promotion"]["basis"] == "hand"
    assert not_text[:2] == (400, "invalid_request")


@pytest.mark.django_db
def test_promoting_the_production_version_is_refused_everywhere_alike(
    client, project, candidate, versions_key, superuser
):
    base = ModelVersion.objects.get(project=project, name="base")
    message = "base is already in production."

    api = _api(
        client, versions_key, f"/api/v1/model-versions/{base.pk}/promote", {"reason": "again"}
    )
    client.force_login(superuser)
    page = client.post(
        reverse("dashboard:model_version_promote", args=[project.slug, base.pk]),
        {"reason": "again"},
        follow=True,
    )
    admin = _admin_action(
        client, "flywheel_modelversion", "promote", [base.pk], apply="1", reason="again"
    )
    command = _command_refusal(
        "promote", "model", "base", "--project", project.slug, "--reason", "again"
    )

    assert api == (409, "already_in_production", message)
    assert _messages(page) == [message]
    assert admin == [message]
    assert command == message


# ---------------------------------------------------------------------------------------------
# Rollback needs something to go back to


@pytest.mark.django_db
def test_a_rollback_with_nothing_before_is_refused_everywhere_alike(
    client, project, candidate, versions_key, superuser
):
    IndexVersion.objects.create(
        project=project, number=1, status="active", embedding_model="m", activated_at=timezone.now()
    )
    for what, rollback, path in (
        ("model", model_version_rollback, "/api/v1/model-versions/rollback"),
        ("index", index_version_rollback, "/api/v1/index-versions/rollback"),
    ):
        with pytest.raises(NothingToRollBack) as service:
            rollback(project=project)
        message = service.value.message
        api = _api(client, versions_key, path)
        client.force_login(superuser)
        page = client.post(
            reverse(f"dashboard:{what}_version_rollback", args=[project.slug]), follow=True
        )
        admin = _admin_action(client, "flywheel_project", f"roll_back_{what}", [project.pk])
        command = _command_refusal("rollback", what, "--project", project.slug)

        assert api == (409, "nothing_to_restore", message)
        assert _messages(page) == [message]
        assert admin == [f"{project}: {message}"]
        assert command == message


@pytest.mark.django_db
def test_a_rollback_restores_the_previous_version_and_records_it(client, project, candidate):
    model_version_promote(version=candidate, reason="trying it")

    call_command("rollback", "model", "--project", project.slug, stdout=StringIO())

    base = ModelVersion.objects.get(project=project, name="base")
    assert (base.status, _status(candidate)) == ("production", "retired")
    assert base.metrics["promotion"]["basis"] == "rollback"
    assert base.metrics["promotion"]["by"] == "manage.py rollback"


# ---------------------------------------------------------------------------------------------
# Only a built index can be activated


@pytest.mark.django_db
def test_activating_an_index_still_building_is_refused_everywhere_alike(
    client, project, versions_key, superuser
):
    building = IndexVersion.objects.create(
        project=project, number=1, status=IndexVersion.Status.BUILDING, embedding_model="m"
    )
    with pytest.raises(TransitionRefused) as service:
        index_version_activate(version=building)
    message = service.value.message

    api = _api(client, versions_key, f"/api/v1/index-versions/{building.pk}/activate")
    client.force_login(superuser)
    page = client.post(
        reverse("dashboard:index_version_activate", args=[project.slug, building.pk]),
        follow=True,
    )
    admin = _admin_action(client, "flywheel_indexversion", "activate", [building.pk])
    command = _command_refusal("promote", "index", "1", "--project", project.slug)

    assert message == "Index v1 is still being built; only a ready or retired one can be activated."
    assert api == (409, "index_not_ready", message)
    assert _messages(page) == [message]
    assert admin == [message]
    assert command == message
    assert _status(building) == "building"


@pytest.mark.django_db
def test_a_ready_index_is_activated_from_the_admin_and_the_command(client, project, superuser):
    first = IndexVersion.objects.create(
        project=project, number=1, status="ready", embedding_model="m"
    )
    second = IndexVersion.objects.create(
        project=project, number=2, status="ready", embedding_model="m"
    )
    client.force_login(superuser)

    admin = _admin_action(client, "flywheel_indexversion", "activate", [first.pk])
    call_command("promote", "index", "2", "--project", project.slug, stdout=StringIO())

    assert admin == ["Index v1 is now active."]
    assert (_status(first), _status(second)) == ("retired", "active")


# ---------------------------------------------------------------------------------------------
# Re-curation is a job, one at a time


@pytest.mark.django_db
def test_a_second_re_curation_is_refused_everywhere_alike(client, project, versions_key, superuser):
    call_command("run_job", "recuration", "--project", project.slug, stdout=StringIO())
    job = Job.objects.get(project=project, kind=Job.Kind.RECURATION)
    message = (
        f"A re-curation of this project is already queued (job {job.pk}); it covers this "
        "request too."
    )

    api = _api(client, versions_key, "/api/v1/jobs", {"kind": "recuration"})
    client.force_login(superuser)
    page = client.post(reverse("dashboard:policy_recurate", args=[project.slug]), follow=True)
    jobs_page = client.post(
        reverse("dashboard:job_start", args=[project.slug]), {"kind": "recuration"}
    )
    admin = _admin_action(client, "flywheel_project", "start_recuration", [project.pk])
    command = _command_refusal("run_job", "recuration", "--project", project.slug)

    assert api == (409, "job_already_running", message)
    assert _messages(page) == [message]
    assert jobs_page.context["start_options"][-1].form.non_field_errors() == [message]
    assert admin == [f"{project}: {message}"]
    assert command == message
    assert Job.objects.filter(project=project, kind=Job.Kind.RECURATION).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_re_curation_job_curates_all_feedback_on_a_worker(client, celery_worker):
    project = ProjectFactory()
    key = api_key_create(project=project, kind="secret", name="ops", scopes=["jobs"]).raw_key
    interactions = [served(project, question) for question in ("Refunds?", "Which plans?")]
    for interaction in interactions:
        rating_submit(interaction=interaction, rater_id="u", source="api", thumb="up")
    served(project, "Nobody rated this")

    started = client.post(
        "/api/v1/jobs",
        data=json.dumps({"kind": "recuration"}),
        content_type="application/json",
        **bearer(key),
    )
    assert started.status_code == 202, started.content

    def finished():
        job = Job.objects.get(pk=started.json()["id"])
        return job if job.is_finished else None

    job = wait_for(finished, what="the re-curation finishing", deadline_seconds=120)
    assert job.state == "succeeded", job.error
    assert job.metrics == {"curated": 2, "by_status": {"included": 2}}
    curated = set(InstructionExample.objects.values_list("interaction_id", flat=True))
    assert curated == {interaction.pk for interaction in interactions}
    again = client.post(
        "/api/v1/jobs",
        data=json.dumps({"kind": "recuration"}),
        content_type="application/json",
        **bearer(key),
    )
    assert again.status_code == 202, "the first one finished"


# ---------------------------------------------------------------------------------------------
# The schedule


@pytest.mark.django_db
def test_due_jobs_start_once_with_their_reason(project):
    IndexVersion.objects.create(
        project=project,
        number=1,
        status="active",
        embedding_model="m",
        activated_at=timezone.now() - timedelta(hours=1),
        built_by_job_id=1,
    )
    Document.objects.create(
        project=project,
        title="Refunds",
        source_uri="refunds.md",
        content_type="markdown",
        content="Ask within 14 days.",
        content_hash="h",
    )

    (started,) = due_jobs_start(project=project)
    again = due_jobs_start(project=project)

    assert (started.kind, started.trigger, started.state) == ("index_refresh", "schedule", "queued")
    assert started.progress_message == "1 document(s) changed since index v1 was built"
    assert again == []
