"""The dashboard's dataset and curation policy pages: who may see and do what, the policy form
and its validation, re-curating, snapshots, one version in full, downloads, and escaping."""

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from dashboard.views import policy as policy_views
from feedback.models import ProjectMembership
from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from flywheel.models import Interaction
from retrain.curation.policy import curation_policy_get
from retrain.datasets.snapshot import dataset_snapshot
from retrain.models import CurationPolicy, DatasetVersion, InstructionExample, Job
from tests.conftest import user_with_role
from tests.factories import ProjectFactory, curate, served

XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def _url(name: str, project, *args) -> str:
    return reverse(f"dashboard:{name}", args=[project.slug, *args])


def _login(client, project, role: str):
    user = user_with_role(project, role)
    client.force_login(user)
    return user


def _thumbs_up(interaction: Interaction) -> None:
    rating_submit(interaction=interaction, rater_id="u", source="widget", thumb="up")


@pytest.fixture
def rated_project(project):
    """Four included examples, one of them asking a question full of markup, a reviewer's
    correction and a thumbs-down twin of a good answer: preference pairs of both kinds."""
    reviewer = get_user_model().objects.create_user(username="reviewer-x", password="x")
    shared = served(project, "How do I share a shelf?", "Use the shelf menu, then Share.")
    shared_badly = served(project, "How can I share a shelf?", "You cannot share shelves.")
    corrected = served(project, "What does Canopy cost?", "It is free.")
    markup = served(project, f"Why does {XSS} show?", f"Because {XSS} is text.")
    scored = served(project, "Can I work offline?", "Yes, every device keeps a full copy.")
    _thumbs_up(shared)
    _thumbs_up(markup)
    rating_submit(interaction=shared_badly, rater_id="u", source="widget", thumb="down")
    rating_submit(interaction=scored, rater_id="u", source="api", score=5)
    review_submit(
        interaction=corrected,
        reviewer=reviewer,
        decision="corrected",
        ideal_answer="Canopy costs 9 euros per user per month.",
    )
    curate(project, shared, shared_badly, corrected, markup, scored)
    return project


@pytest.fixture
def version(rated_project):
    return dataset_snapshot(project=rated_project, trigger=DatasetVersion.Trigger.COMMAND)[0]


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# ---------------------------------------------------------------------------------------------
# Who may see and do what

READ_PAGES = ["datasets", "dataset_detail", "dataset_download"]
ADMIN_PAGES = ["policy"]
ADMIN_ACTIONS = ["dataset_snapshot", "policy_recurate"]


def _page_url(name: str, version: DatasetVersion) -> str:
    project = version.project
    if name == "dataset_detail":
        return _url(name, project, version.number)
    if name == "dataset_download":
        return _url(name, project, version.number, "chat", "train")
    return _url(name, project)


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_PAGES + ADMIN_PAGES + ADMIN_ACTIONS)
def test_anonymous_visitors_are_sent_to_sign_in(client, version, name):
    send = client.post if name in ADMIN_ACTIONS else client.get

    response = send(_page_url(name, version))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_PAGES + ADMIN_PAGES + ADMIN_ACTIONS)
def test_users_of_other_projects_do_not_learn_the_project_exists(client, version, name):
    _login(client, ProjectFactory(), "admin")
    send = client.post if name in ADMIN_ACTIONS else client.get

    assert send(_page_url(name, version)).status_code == 404
    assert DatasetVersion.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
@pytest.mark.parametrize("name", READ_PAGES + ADMIN_PAGES)
def test_everyone_reads_datasets_and_only_admins_see_the_policy(client, version, role, name):
    _login(client, version.project, role)

    response = client.get(_page_url(name, version))

    allowed = role == "admin" or name in READ_PAGES
    assert response.status_code == (200 if allowed else 403)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_only_admins_snapshot_save_the_policy_or_re_curate(client, rated_project, role):
    _login(client, rated_project, role)
    examples_before = list(InstructionExample.objects.values_list("pk", "curated_at"))

    snapshot = client.post(_url("dataset_snapshot", rated_project))
    saved = client.post(_url("policy", rated_project), {"near_duplicate_threshold": "0.5"})
    recurated = client.post(_url("policy_recurate", rated_project))

    assert snapshot.status_code == saved.status_code == recurated.status_code == 403
    assert not DatasetVersion.objects.exists()
    assert curation_policy_get(project=rated_project).near_duplicate_threshold == 0.8
    assert list(InstructionExample.objects.values_list("pk", "curated_at")) == examples_before


@pytest.mark.django_db
@pytest.mark.parametrize("role, sees_admin_parts", [("viewer", False), ("admin", True)])
def test_the_snapshot_button_and_policy_link_show_to_admins_only(
    client, version, role, sees_admin_parts
):
    _login(client, version.project, role)

    page = client.get(_url("datasets", version.project)).content.decode()

    assert (_url("dataset_snapshot", version.project) in page) is sees_admin_parts
    assert (_url("policy", version.project) in page) is sees_admin_parts


@pytest.mark.django_db
@pytest.mark.parametrize("name", READ_PAGES)
def test_read_pages_accept_no_writes(client, version, name):
    _login(client, version.project, "admin")

    assert client.post(_page_url(name, version)).status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("name", ADMIN_ACTIONS)
def test_actions_accept_only_posts(client, rated_project, name):
    _login(client, rated_project, "admin")

    assert client.get(_url(name, rated_project)).status_code == 405


@pytest.mark.django_db
def test_a_version_of_another_project_or_an_unknown_one_is_not_found(client, version):
    other = ProjectFactory()
    _login(client, other, "admin")

    for number in (version.number, 2, 10**30):
        assert client.get(_url("dataset_detail", other, number)).status_code == 404
        assert client.get(_url("dataset_download", other, number, "chat", "all")).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "export_format, split", [("csv", "train"), ("chat", "test"), ("DPO", "all"), ("chat", "Train")]
)
def test_an_unknown_format_or_split_is_not_found(client, version, export_format, split):
    _login(client, version.project, "viewer")

    url = _url("dataset_download", version.project, version.number, export_format, split)

    assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_forms_without_a_csrf_token_are_refused(rated_project):
    client = Client(enforce_csrf_checks=True)
    _login(client, rated_project, "admin")

    refused = client.post(_url("dataset_snapshot", rated_project))
    page = client.get(_url("datasets", rated_project)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    accepted = client.post(_url("dataset_snapshot", rated_project), {"csrfmiddlewaretoken": token})

    assert refused.status_code == 403
    assert accepted.status_code == 302
    assert DatasetVersion.objects.filter(project=rated_project).count() == 1


# ---------------------------------------------------------------------------------------------
# Curation policy


def _policy_form(project, **changes) -> dict:
    """The policy page's form as a browser would post it, with `changes`."""
    policy = curation_policy_get(project=project)
    form = policy_views.CurationPolicyForm(instance=policy)
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if isinstance(value, list):  # a group of checkboxes: the ticked ones' values
            data[name] = value
        elif field.widget.input_type == "checkbox":
            if value:
                data[name] = "on"
        else:
            data[name] = "" if value is None else str(value)
    for name, value in changes.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    return data


@pytest.mark.django_db
def test_the_policy_page_groups_the_settings_with_their_help(client, project):
    _login(client, project, "admin")

    page = client.get(_url("policy", project)).content.decode()

    for legend in (
        "Signals",
        "Lengths",
        "Deduplication and split",
        "Privacy",
        "Retraining and promotion",
    ):
        assert f"<legend>{legend}</legend>" in page
    assert "Questions at least this similar" in page
    assert "share of clusters held out for evaluation" in page
    assert 'name="csrfmiddlewaretoken"' in page


@pytest.mark.django_db
def test_saving_the_policy_stores_it_and_says_so(client, project):
    _login(client, project, "admin")
    data = _policy_form(
        project,
        include_thumbs_up=False,
        min_score="",
        eval_fraction="0.25",
        near_duplicate_threshold="1",
        max_answer_chars="2000",
    )

    response = client.post(_url("policy", project), data, follow=True)

    policy = curation_policy_get(project=project)
    assert response.redirect_chain == [(_url("policy", project), 302)]
    assert any("Curation policy saved" in message for message in _messages(response))
    assert policy.include_thumbs_up is False
    assert policy.min_score is None
    assert (policy.eval_fraction, policy.near_duplicate_threshold) == (0.25, 1.0)
    assert policy.max_answer_chars == 2000


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"near_duplicate_threshold": "0"}, "near_duplicate_threshold", "Must be above 0"),
        (
            {"near_duplicate_threshold": "1.5"},
            "near_duplicate_threshold",
            "less than or equal to 1",
        ),
        ({"eval_fraction": "0.9"}, "eval_fraction", "less than or equal to 0.5"),
        ({"eval_fraction": "-0.1"}, "eval_fraction", "greater than or equal to 0"),
        ({"min_score": "7"}, "min_score", "less than or equal to 5"),
        (
            {"min_answer_chars": "500", "max_answer_chars": "100"},
            "min_answer_chars",
            "Must not exceed the maximum answer length",
        ),
        ({"eval_fraction": "a lot"}, "eval_fraction", "Enter a number"),
    ],
)
def test_bad_policy_values_are_refused_with_a_message_and_nothing_is_saved(
    client, project, changes, field, message
):
    _login(client, project, "admin")
    curation_policy_get(project=project)
    stored = CurationPolicy.objects.values().get(project=project)
    # A valid change alongside the bad one: it must not be saved either.
    data = _policy_form(project, max_question_chars="1234", **changes)

    response = client.post(_url("policy", project), data)

    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert "Nothing was saved" in response.content.decode()
    assert CurationPolicy.objects.values().get(project=project) == stored


# ---------------------------------------------------------------------------------------------
# Re-curating


def _rated_but_not_curated(project, *questions: str) -> list[Interaction]:
    interactions = [served(project, question) for question in questions]
    for interaction in interactions:
        _thumbs_up(interaction)
    return interactions


@pytest.mark.django_db
def test_re_curating_queues_one_job_and_a_second_press_is_refused(client, project):
    _rated_but_not_curated(project, "How do I get a refund?", "Which plans?")
    admin = _login(client, project, "admin")

    queued = client.post(_url("policy_recurate", project), follow=True)
    again = client.post(_url("policy_recurate", project), follow=True)

    (job,) = Job.objects.filter(project=project, kind=Job.Kind.RECURATION)
    assert (job.state, job.trigger, job.triggered_by) == ("queued", "dashboard", admin)
    assert "Re-curation queued as" in _messages(queued)[0]
    assert "2 interactions with feedback" in _messages(queued)[0]
    assert _url("job_detail", project, job.pk) in queued.content.decode()
    assert _messages(again) == [
        f"A re-curation of this project is already queued (job {job.pk}); it covers this "
        "request too."
    ]
    assert not InstructionExample.objects.filter(project=project).exists(), "not in the request"


# ---------------------------------------------------------------------------------------------
# Snapshots and the list


@pytest.mark.django_db
def test_the_snapshot_button_creates_a_version_then_says_nothing_changed(client, rated_project):
    admin = _login(client, rated_project, "admin")

    created = client.post(_url("dataset_snapshot", rated_project), follow=True)
    unchanged = client.post(_url("dataset_snapshot", rated_project), follow=True)

    version = DatasetVersion.objects.get(project=rated_project)
    detail_link = f'<a href="{_url("dataset_detail", rated_project, 1)}">dataset v1</a>'
    assert (version.number, version.trigger, version.created_by) == (1, "dashboard", admin)
    assert created.redirect_chain == [(_url("datasets", rated_project), 302)]
    assert _messages(created)[0].startswith(f"Created {detail_link}: ")
    assert _messages(unchanged)[0].startswith(f"Nothing changed: {detail_link} already holds")
    assert detail_link in unchanged.content.decode()


@pytest.mark.django_db
def test_the_list_shows_versions_with_counts_changes_and_the_working_state(client, version):
    project = version.project
    newcomer = served(project, "How do I export a shelf?", "Shelf menu, then Export.")
    _thumbs_up(newcomer)
    curate(project, newcomer)
    dataset_snapshot(project=project, trigger="dashboard")
    _login(client, project, "viewer")

    response = client.get(_url("datasets", project))

    page = response.content.decode()
    rows = re.findall(r"<tr>\s*<td><a href=[^>]+>v(\d+)</a>.*?</tr>", page, re.DOTALL)
    assert rows == ["2", "1"]
    assert [bar.number for bar in response.context["chart"]] == [1, 2]
    second_row = re.search(r">v2</a>.*?</tr>", page, re.DOTALL).group(0)
    assert re.findall(r"<td>(.*?)</td>", second_row)[-2:] == ["+1", "0"]
    state = response.context["working_state"]
    assert (state.totals.included, state.totals.excluded) == (5, 1)
    assert {tally.label: tally.included for tally in state.by_signal} == {
        "Reviewer's ideal answer": 1,
        "Thumbs up": 3,
        "High score": 1,
        "Thumbs down or low score": 0,
    }
    assert state.curated_since_latest_version == 0
    assert "Thumbs down or low score" in page


# ---------------------------------------------------------------------------------------------
# One version


@pytest.mark.django_db
def test_the_detail_shows_counts_stats_policy_and_samples(client, version):
    project = version.project
    _login(client, project, "viewer")

    response = client.get(_url("dataset_detail", project, version.number))

    page = response.content.decode()
    assert version.content_hash in page
    assert "Management command" in page
    samples = response.context["samples"]
    assert len(samples.train) + len(samples.eval) == 4
    assert len(samples.preference) == 2
    pairs = {(record.chosen, record.rejected) for record in samples.preference}
    assert ("Canopy costs 9 euros per user per month.", "It is free.") in pairs
    assert "You cannot share shelves." in page and "Can I work offline?" in page
    assert dict(response.context["signals"])["Reviewer's ideal answer"] == 1
    assert dict(response.context["sources"]) == {"Served by Flywheel": 4}
    assert dict(response.context["thumbs"]) == {"Thumbs up": 2}
    policy = {title: dict(rows) for title, rows in response.context["policy_sections"]}
    assert list(policy)[:2] == ["Signals", "Lengths"]
    assert policy["Deduplication and split"]["Near-duplicate threshold"] == 0.8
    for export_format in ("chat", "alpaca", "dpo"):
        for split in ("train", "eval", "all"):
            url = _url("dataset_download", project, version.number, export_format, split)
            has_rows = _expected_rows(version, export_format, split) > 0
            assert (f'href="{url}"' in page) == has_rows, "a split without rows has no file"


@pytest.mark.django_db
def test_a_frozen_setting_the_policy_page_no_longer_has_still_shows(client, version):
    # Versions are immutable; this stands for a version frozen before a setting was dropped.
    DatasetVersion.objects.filter(pk=version.pk).update(
        policy={**version.policy, "retired_setting": 3}
    )
    _login(client, version.project, "viewer")

    response = client.get(_url("dataset_detail", version.project, version.number))

    assert response.context["policy_sections"][-1] == ("Other settings", [("retired_setting", 3)])


@pytest.mark.django_db
def test_the_detail_lists_what_changed_with_links_to_the_interactions(client, version):
    project = version.project
    newcomer = served(project, "How do I export a shelf?", "Shelf menu, then Export.")
    _thumbs_up(newcomer)
    offline = Interaction.objects.get(project=project, query_text="Can I work offline?")
    reviewer = get_user_model().objects.create_user(username="second-reviewer", password="x")
    review_submit(interaction=offline, reviewer=reviewer, decision="rejected")
    curate(project, newcomer, offline)
    second, _ = dataset_snapshot(project=project, trigger="dashboard")
    newcomer.delete()  # the added example goes with it; the frozen record stays
    _login(client, project, "viewer")

    response = client.get(_url("dataset_detail", project, second.number))

    page = response.content.decode()
    diff = response.context["diff_examples"]
    assert [(example.question, example.interaction_id) for example in diff.added] == [
        ("How do I export a shelf?", None)
    ]
    assert [(example.question, example.interaction_id) for example in diff.removed] == [
        ("Can I work offline?", offline.pk)
    ]
    assert f'href="{_url("interaction_detail", project, offline.pk)}">Can I work offline?' in page
    assert 'How do I export a shelf? <small class="muted">(example since removed)</small>' in page
    assert f'href="{_url("dataset_detail", project, 1)}">v1</a>' in page


@pytest.mark.django_db
def test_user_text_is_shown_as_text_everywhere(client, version):
    project = version.project
    _login(client, project, "admin")

    detail = client.get(_url("dataset_detail", project, version.number)).content.decode()

    assert "<script>alert(1)</script>" not in detail
    assert '<img src=x onerror="alert(2)">' not in detail
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail


# ---------------------------------------------------------------------------------------------
# Downloads

EXPECTED_KEYS = {
    "chat": {"messages"},
    "alpaca": {"instruction", "input", "output", "system"},
    "dpo": {"prompt", "chosen", "rejected"},
}


def _expected_rows(version: DatasetVersion, export_format: str, split: str) -> int:
    prefix = "preference_" if export_format == "dpo" else ""
    splits = ["train", "eval"] if split == "all" else [split]
    return sum(version.counts[f"{prefix}{name}"] for name in splits)


@pytest.mark.django_db
@pytest.mark.parametrize("export_format", ["chat", "alpaca", "dpo"])
@pytest.mark.parametrize("split", ["train", "eval", "all"])
def test_downloads_are_json_lines_of_the_format_and_split(client, version, export_format, split):
    _login(client, version.project, "viewer")

    response = client.get(
        _url("dataset_download", version.project, version.number, export_format, split)
    )

    if _expected_rows(version, export_format, split) == 0:
        assert response.status_code == 404, "an empty split has no file"
        return
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"] == (
        f'attachment; filename="{version.project.slug}-dataset-v1-{export_format}-{split}.jsonl"'
    )
    assert len(rows) == _expected_rows(version, export_format, split)
    assert all(set(row) == EXPECTED_KEYS[export_format] for row in rows)


@pytest.mark.django_db
def test_all_rows_are_train_and_eval_together(client, version):
    _login(client, version.project, "viewer")

    def rows(export_format, split):
        url = _url("dataset_download", version.project, version.number, export_format, split)
        response = client.get(url)
        if response.status_code == 404:  # a split without rows has no file
            return []
        return b"".join(response.streaming_content).decode().splitlines()

    assert sorted(rows("chat", "all")) == sorted(rows("chat", "train") + rows("chat", "eval"))
    assert len(rows("chat", "all")) == 4 and len(rows("dpo", "all")) == 2


# ---------------------------------------------------------------------------------------------
# The eval split against the gate's minimum, PII per source, and what scrubbing did


@pytest.mark.django_db
def test_a_version_whose_eval_split_is_below_the_gate_minimum_says_so(client, version):
    project = version.project
    CurationPolicy.objects.filter(project=project).update(
        min_eval_examples=version.counts["eval"] + 1
    )
    _login(client, project, "viewer")

    detail = client.get(_url("dataset_detail", project, version.number)).content.decode()
    listing = client.get(_url("datasets", project)).content.decode()
    CurationPolicy.objects.filter(project=project).update(min_eval_examples=version.counts["eval"])
    enough = client.get(_url("dataset_detail", project, version.number)).content.decode()

    warning = (
        f"The eval split holds {version.counts['eval']} example"
        if version.counts["eval"] == 1
        else f"The eval split holds {version.counts['eval']} examples"
    )
    assert warning in detail and "evaluate=true is refused" in detail
    assert f"below the gate's {version.counts['eval'] + 1}" in listing
    assert 'id="eval-warning"' not in enough


@pytest.mark.django_db
def test_the_snapshot_button_warns_when_the_eval_split_cannot_feed_the_gate(client, rated_project):
    _login(client, rated_project, "admin")

    response = client.post(_url("dataset_snapshot", rated_project), follow=True)

    version = DatasetVersion.objects.get(project=rated_project)
    assert version.counts["eval"] < curation_policy_get(project=rated_project).min_eval_examples
    assert any("fewer than the 30 the promotion gate needs" in m for m in _messages(response))


@pytest.mark.django_db
def test_the_policy_page_chooses_pii_kinds_per_source(client, project):
    _login(client, project, "admin")
    page = client.get(_url("policy", project)).content.decode()
    data = _policy_form(
        project,
        pii_user_messages=["EMAIL", "IP_ADDRESS"],
        pii_model_answers=["SECRET", "EMAIL"],
        pii_corrections=[],
        scrub_private_ips=True,
    )

    response = client.post(_url("policy", project), data, follow=True)

    for label in (
        "Scrubbed in end-user messages",
        "Scrubbed in model answers",
        "Scrubbed in corrections",
        "Scrub private IP addresses too",
    ):
        assert label in page
    assert any("Curation policy saved" in message for message in _messages(response))
    policy = curation_policy_get(project=project)
    assert policy.pii_entities == {
        "user_messages": ["EMAIL", "IP_ADDRESS"],
        "model_answers": ["EMAIL", "SECRET"],
        "corrections": [],
    }
    assert policy.scrub_private_ips is True


@pytest.mark.django_db
def test_an_unknown_pii_kind_is_refused_with_a_message(client, project):
    _login(client, project, "admin")
    curation_policy_get(project=project)
    stored = CurationPolicy.objects.values().get(project=project)

    response = client.post(
        _url("policy", project), _policy_form(project, pii_corrections=["EMAIL", "NAME"])
    )

    assert response.status_code == 200
    assert "NAME is not one of the available choices" in " ".join(
        response.context["form"].errors["pii_corrections"]
    )
    assert CurationPolicy.objects.values().get(project=project) == stored


@pytest.mark.django_db
def test_the_detail_shows_what_scrubbing_replaced_and_the_pii_kinds_per_source(client, project):
    asked = served(project, "I'm jo@example.com on 203.0.113.9 and 10.0.0.4", "Noted.")
    _thumbs_up(asked)
    curate(project, asked)
    version, _ = dataset_snapshot(project=project, trigger=DatasetVersion.Trigger.COMMAND)
    _login(client, project, "viewer")

    response = client.get(_url("dataset_detail", project, version.number))

    assert dict(response.context["pii_scrubbed"]) == {
        "E-mail addresses": 1,
        "IP addresses": 1,
    }
    assert response.context["identical_pairs_dropped"] == 0
    privacy = dict(dict(response.context["policy_sections"])["Privacy"])
    assert privacy["Scrubbed in model answers"] == "EMAIL, PHONE, CREDIT_CARD, IBAN, SECRET"
    assert privacy["Scrub private IP addresses too"] is False
    assert "10.0.0.4" in response.content.decode(), "a private address is kept"


def test_an_admin_chooses_pii_kinds_per_source_in_the_browser(signed_in_page, live_server, project):
    ProjectMembership.objects.filter(project=project).update(role="admin")
    page = signed_in_page
    policy_url = f"{live_server.url}{_url('policy', project)}"
    page.goto(policy_url)

    def checkbox(source: str, kind: str):
        return page.locator(f"input[name=pii_{source}][value={kind}]")

    assert checkbox("user_messages", "IP_ADDRESS").is_checked()
    assert not checkbox("model_answers", "IP_ADDRESS").is_checked()
    checkbox("user_messages", "PHONE").uncheck()
    checkbox("corrections", "IP_ADDRESS").check()
    page.get_by_label("Scrub private IP addresses too").check()
    page.get_by_role("button", name="Save policy").click()
    page.get_by_text("Curation policy saved").wait_for()

    policy = curation_policy_get(project=project)
    assert "PHONE" not in policy.pii_entities["user_messages"]
    assert policy.pii_entities["corrections"] == [
        "EMAIL",
        "PHONE",
        "CREDIT_CARD",
        "IBAN",
        "IP_ADDRESS",
        "SECRET",
    ]
    assert policy.scrub_private_ips is True
    page.goto(policy_url)
    assert not checkbox("user_messages", "PHONE").is_checked()
    assert checkbox("corrections", "IP_ADDRESS").is_checked()
    assert page.problems == []


@pytest.mark.django_db
def test_starting_training_with_evaluation_on_a_too_small_eval_split_is_a_form_error(
    client, version
):
    project = version.project
    _login(client, project, "admin")
    needed = curation_policy_get(project=project).min_eval_examples

    response = client.post(
        _url("job_start", project),
        {
            "kind": "lora_training",
            "lora_training-dataset_version": str(version.number),
            "lora_training-evaluate": "on",
        },
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert f"Dataset v{version.number}: The eval split holds" in page
    assert f"fewer than the {needed} the promotion gate needs" in page
    assert not Job.objects.filter(project=project, kind=Job.Kind.LORA_TRAINING).exists()
