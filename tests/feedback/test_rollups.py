"""The dashboards' daily rollups: equal to a direct count over the interactions, caught up
incrementally after any change (ratings on old interactions, back-dated logs, deletions),
rebuilt by the command, refreshed by the periodic task on a real worker, and the lag the
overview shows."""

from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from feedback.models import DailyRollup, Rating, Review, RollupChange
from feedback.services.ratings import rating_submit
from feedback.services.reviews import review_submit
from feedback.services.rollups import rollups_refresh
from feedback.tasks import rollups_refresh_due
from flywheel.models import Interaction
from flywheel.services import index_version_ensure_active
from flywheel.services.interactions import interactions_log_batch
from flywheel.services.model_versions import model_version_production_ensure
from tests.conftest import user_with_role, wait_for
from tests.factories import ProjectFactory

FIGURES = (
    "interactions",
    "thumbs_up",
    "thumbs_down",
    "score_sum",
    "score_count",
    "rating_corrections",
    "reviewed",
    "review_corrections",
)


def _at(days_ago: int, hour: int = 12) -> datetime:
    day = timezone.localdate() - timedelta(days=days_ago)
    return timezone.make_aware(datetime(day.year, day.month, day.day, hour))


def _log(project, *created_at: datetime, model: str = "gpt-app") -> list[Interaction]:
    logged = interactions_log_batch(
        project=project,
        interactions=[
            {
                "messages": [{"role": "user", "content": f"Question {n}?"}],
                "response": "An answer.",
                "model": model,
                "created_at": when,
            }
            for n, when in enumerate(created_at)
        ],
    )
    stored = Interaction.objects.in_bulk([entry.id for entry in logged])
    return [stored[entry.id] for entry in logged]


def _rate(interaction, rater_id="rater-1", **fields) -> Rating:
    return rating_submit(interaction=interaction, rater_id=rater_id, source="api", **fields)


def direct_count(project) -> dict[tuple[date, int | None, str, int | None], Counter]:
    """What the rollups must hold, counted one interaction at a time from the source rows."""
    expected: dict[tuple, Counter] = {}
    for interaction in Interaction.objects.filter(project=project):
        key = (
            timezone.localtime(interaction.created_at).date(),
            interaction.model_version_id,
            interaction.model_name,
            interaction.index_version_id,
        )
        figures = expected.setdefault(key, Counter({name: 0 for name in FIGURES}))
        figures["interactions"] += 1
        for rating in Rating.objects.filter(interaction=interaction):
            figures["thumbs_up"] += rating.thumb == "up"
            figures["thumbs_down"] += rating.thumb == "down"
            figures["score_sum"] += rating.score or 0
            figures["score_count"] += rating.score is not None
            figures["rating_corrections"] += bool(rating.correction)
        latest = (
            Review.objects.filter(interaction=interaction).order_by("-created_at", "-pk").first()
        )
        figures["reviewed"] += latest is not None
        figures["review_corrections"] += bool(latest and latest.decision == "corrected")
    return expected


def rolled_up(project) -> dict[tuple[date, int | None, str, int | None], Counter]:
    return {
        (row.day, row.model_version_id, row.model_name, row.index_version_id): Counter(
            {name: getattr(row, name) for name in FIGURES}
        )
        for row in DailyRollup.objects.filter(project=project)
    }


@pytest.fixture
def varied_feedback(project):
    """Four days, two model versions and an app-named model, an index version, ratings with
    thumbs, scores and corrections (one replaced by its rater), reviews (one corrected, then
    approved), and another project's interactions."""
    reviewer = user_with_role(project, "reviewer")
    index = index_version_ensure_active(project=project)
    production = model_version_production_ensure(project=project)
    logged = _log(project, _at(0), _at(0, hour=23), _at(1), _at(3, hour=0), _at(40))
    Interaction.objects.filter(pk__in=[logged[0].pk, logged[2].pk]).update(
        model_version=production, model_name="", index_version=index
    )
    _rate(logged[0], "a", thumb="up", score=5)
    _rate(logged[0], "b", thumb="down", score=1, correction="Better.")
    _rate(logged[1], "a", thumb="up")
    _rate(logged[1], "a", thumb="down", score=2)
    _rate(logged[3], "a", score=4, correction="Fixed.")
    review_submit(interaction=logged[2], reviewer=reviewer, decision="corrected", ideal_answer="x")
    review_submit(interaction=logged[3], reviewer=reviewer, decision="corrected", ideal_answer="y")
    review_submit(interaction=logged[3], reviewer=reviewer, decision="approved")
    review_submit(interaction=logged[4], reviewer=reviewer, decision="rejected")
    _rate(_log(ProjectFactory(), _at(0))[0], thumb="up")
    return logged


@pytest.mark.django_db
def test_rollups_equal_a_direct_count_of_every_figure(project, varied_feedback):
    rollups_refresh()

    assert rolled_up(project) == direct_count(project)
    assert sum(row["interactions"] for row in rolled_up(project).values()) == 5
    assert not RollupChange.objects.exists()


@pytest.mark.django_db
def test_a_rating_today_on_an_old_interaction_updates_that_day_alone(project, varied_feedback):
    rollups_refresh()
    old_day = timezone.localdate() - timedelta(days=40)
    untouched_before = dict(
        DailyRollup.objects.exclude(day=old_day).values_list("pk", "refreshed_at")
    )

    _rate(varied_feedback[4], "late-rater", thumb="up", score=3, correction="Late.")
    refresh = rollups_refresh()

    assert refresh.buckets == 1
    assert rolled_up(project) == direct_count(project)
    old_rollup = DailyRollup.objects.get(project=project, day=old_day)
    assert (old_rollup.thumbs_up, old_rollup.score_sum, old_rollup.rating_corrections) == (1, 3, 1)
    assert (
        dict(DailyRollup.objects.exclude(day=old_day).values_list("pk", "refreshed_at"))
        == untouched_before
    )


@pytest.mark.django_db
def test_back_dated_logs_moved_and_deleted_interactions_are_caught_up(project, varied_feedback):
    rollups_refresh()

    _log(project, _at(200), _at(200, hour=1), model="other-app")
    Interaction.objects.filter(pk=varied_feedback[1].pk).update(created_at=_at(2))
    Interaction.objects.filter(pk=varied_feedback[3].pk).delete()
    rollups_refresh()

    assert rolled_up(project) == direct_count(project)
    days = set(DailyRollup.objects.filter(project=project).values_list("day", flat=True))
    assert timezone.localdate() - timedelta(days=200) in days
    assert timezone.localdate() - timedelta(days=3) not in days


@pytest.mark.django_db
def test_a_refresh_leaves_changes_made_while_it_runs_to_the_next_one(project):
    first, second = _log(project, _at(1), _at(2))
    rollups_refresh()
    _rate(first, thumb="up")
    _rate(second, thumb="up")

    def rate_again(_done) -> None:
        _rate(first, "another-rater", thumb="down")

    marks_before = set(RollupChange.objects.values_list("pk", flat=True))
    rollups_refresh(marks_per_batch=1, progress=rate_again)

    left = set(RollupChange.objects.values_list("pk", flat=True))
    assert left and not left & marks_before
    assert DailyRollup.objects.aggregate(Sum("thumbs_down"))["thumbs_down__sum"] == 0
    rollups_refresh()
    assert rolled_up(project) == direct_count(project)


@pytest.mark.django_db
def test_the_rebuild_command_replaces_wrong_figures_and_drops_empty_days(project, varied_feedback):
    rollups_refresh()
    DailyRollup.objects.filter(project=project).update(interactions=999, thumbs_up=0)
    DailyRollup.objects.create(
        project=project,
        day=date(2001, 1, 1),
        model_name="ghost",
        refreshed_at=timezone.now(),
        **{name: 7 for name in FIGURES},
    )

    call_command("rebuild_rollups", days_per_batch=2)

    assert rolled_up(project) == direct_count(project)
    assert not RollupChange.objects.exists()


@pytest.mark.django_db
def test_the_rebuild_command_refuses_a_batch_of_no_days():
    with pytest.raises(Exception, match="at least 1"):
        call_command("rebuild_rollups", days_per_batch=0)


@pytest.mark.django_db
def test_the_overview_shows_changes_not_counted_yet_until_the_refresh(client, project):
    client.force_login(user_with_role(project, "viewer"))
    url = reverse("dashboard:overview", args=[project.slug])
    _rate(_log(project, _at(1))[0], thumb="up")

    waiting = client.get(url)
    rollups_refresh()
    caught_up = client.get(url)

    assert waiting.context["overview"].pending_since is not None
    assert "are not counted yet" in waiting.content.decode()
    assert waiting.context["overview"].overall.totals.interactions == 0
    assert caught_up.context["overview"].pending_since is None
    assert "Every change is counted" in caught_up.content.decode()
    assert caught_up.context["overview"].overall.totals.thumbs_up == 1


@pytest.mark.django_db
def test_changes_outside_the_range_shown_are_no_lag_for_it(client, project):
    client.force_login(user_with_role(project, "viewer"))
    _log(project, _at(100))

    response = client.get(reverse("dashboard:overview", args=[project.slug]))

    assert response.context["overview"].pending_since is None


@pytest.mark.django_db(transaction=True)
def test_the_periodic_task_refreshes_the_rollups_on_a_real_worker(celery_worker):
    project = ProjectFactory()
    interaction = _log(project, _at(5))[0]
    _rate(interaction, thumb="down", score=2)

    rollups_refresh_due.delay()

    wait_for(
        lambda: (
            not RollupChange.objects.exists()
            and DailyRollup.objects.filter(project=project).aggregate(Sum("thumbs_down"))[
                "thumbs_down__sum"
            ]
            == 1
        ),
        what="the worker to refresh the rollups",
        deadline_seconds=60,
    )
    assert rolled_up(project) == direct_count(project)
