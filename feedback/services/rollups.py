"""Daily rollups: per project, day, model version and index version, how many interactions,
thumbs, scores, corrections and reviews, so that the dashboards read a few hundred rows
instead of aggregating millions of interactions on every page view.

How they keep up. Database triggers (migration 0003_daily_rollups) mark each (project, UTC
day) that a statement on interactions, ratings or reviews touched, in the writer's own
transaction. A periodic task (every minute, config/periodic.py) takes the marks and recomputes
the buckets they name from the source rows. Marks rather than a time watermark, because a
watermark misses what the log's timestamps do not order: an app may log interactions with an
old `created_at`, a rating today may land on a month-old interaction, and a transaction that
commits late carries a time already passed. Marking on write in the application instead would
miss the writers that bypass it (COPY-speed ingestion, the admin, cascades).

Why a whole-day recompute rather than adding deltas: it is idempotent (a task may run twice),
a rating that replaces another needs no "what was it before", and deletions fall out of it.
A day is deleted and inserted again in one transaction (set-based DELETE and INSERT … SELECT,
not an upsert, so that a model/index combination that no longer has interactions disappears);
readers see the day before or after, never half of it.
"""

import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from feedback.models import Review, Thumb

# One refresh at a time: two with different snapshots could otherwise finish in the wrong
# order and leave the older figures. An arbitrary number naming this lock in pg_advisory_*.
ROLLUP_LOCK_ID = 7_114_014
# Marks taken per transaction: bounds how long one refresh holds its lock and its rows.
DEFAULT_MARKS_PER_BATCH = 1000

_TAKE_MARKS = """
DELETE FROM feedback_rollupchange
WHERE id IN (
    SELECT id FROM feedback_rollupchange WHERE id <= %(last)s ORDER BY id LIMIT %(limit)s
)
RETURNING project_id, utc_day
"""

_DELETE_BUCKET = """
DELETE FROM feedback_dailyrollup WHERE project_id = %(project)s AND day = %(day)s
"""

# One bucket per statement, its bounds as values the planner sees, so that it reads one day's
# interactions through the (project, created_at) index. Each interaction's current ratings are
# summed, and its latest review found, by a lookup in their interaction indexes: a day is a
# small part of the table, and a join would scan every rating and review for it. Summed per
# model/index combination, an interaction with several ratings still counts once.
_INSERT_BUCKET = """
INSERT INTO feedback_dailyrollup (
    project_id, day, model_version_id, model_name, index_version_id, interactions,
    thumbs_up, thumbs_down, score_sum, score_count, rating_corrections, reviewed,
    review_corrections, refreshed_at
)
SELECT %(project)s, %(day)s, i.model_version_id, i.model_name, i.index_version_id, count(*),
       sum(f.thumbs_up), sum(f.thumbs_down), sum(f.score_sum), sum(f.score_count),
       sum(f.corrections), count(l.decision),
       count(*) FILTER (WHERE l.decision = %(corrected)s), now()
FROM flywheel_interaction i
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.thumb = %(up)s) AS thumbs_up,
           count(*) FILTER (WHERE r.thumb = %(down)s) AS thumbs_down,
           coalesce(sum(r.score), 0) AS score_sum,
           count(r.score) AS score_count,
           count(*) FILTER (WHERE r.correction <> '') AS corrections
    FROM feedback_rating r
    WHERE r.interaction_id = i.id
) f
LEFT JOIN LATERAL (
    SELECT v.decision
    FROM feedback_review v
    WHERE v.interaction_id = i.id
    ORDER BY v.created_at DESC, v.id DESC
    LIMIT 1
) l ON true
WHERE i.project_id = %(project)s AND i.created_at >= %(starts)s AND i.created_at < %(ends)s
GROUP BY i.model_version_id, i.model_name, i.index_version_id
"""

_MARK_EVERY_LOGGED_DAY = """
INSERT INTO feedback_rollupchange (project_id, utc_day)
SELECT DISTINCT project_id, (created_at AT TIME ZONE 'UTC')::date FROM flywheel_interaction
"""

# Rows of days without a single interaction left: no mark can name them any more.
_DELETE_EMPTY_DAYS = """
DELETE FROM feedback_dailyrollup r
WHERE NOT EXISTS (
    SELECT 1 FROM flywheel_interaction i
    WHERE i.project_id = r.project_id
      AND i.created_at >= r.day::timestamp AT TIME ZONE %(time_zone)s
      AND i.created_at < (r.day + 1)::timestamp AT TIME ZONE %(time_zone)s
)
"""

Bucket = tuple[int, date]


def rollup_days_of_utc_day(utc_day: date) -> list[date]:
    """The days, in the settings' time zone, that overlap a UTC day: one in UTC, two
    elsewhere."""
    local = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    starts = datetime(utc_day.year, utc_day.month, utc_day.day, tzinfo=UTC)
    first = starts.astimezone(local).date()
    last = (starts + timedelta(days=1, microseconds=-1)).astimezone(local).date()
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _buckets(marks: Iterable[tuple[int, date]]) -> list[Bucket]:
    return sorted(
        {
            (project_id, day)
            for project_id, utc_day in marks
            for day in rollup_days_of_utc_day(utc_day)
        }
    )


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    local = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    starts = datetime(day.year, day.month, day.day, tzinfo=local)
    following = day + timedelta(days=1)
    return starts, datetime(following.year, following.month, following.day, tzinfo=local)


def _buckets_recompute(buckets: list[Bucket]) -> None:
    with connection.cursor() as cursor:
        for project_id, day in buckets:
            starts, ends = _day_bounds(day)
            parameters: dict[str, int | str | date | datetime] = {
                "project": project_id,
                "day": day,
                "starts": starts,
                "ends": ends,
                "up": Thumb.UP,
                "down": Thumb.DOWN,
                "corrected": Review.Decision.CORRECTED,
            }
            cursor.execute(_DELETE_BUCKET, parameters)
            cursor.execute(_INSERT_BUCKET, parameters)


def _lock_take(*, wait: bool) -> bool:
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_ID])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ROLLUP_LOCK_ID])
        return cursor.fetchone()[0]


@dataclass(frozen=True)
class RollupRefresh:
    marks: int = 0
    buckets: int = 0
    # False when another refresh held the lock: it, or the next run, does the work.
    ran: bool = True


def rollups_refresh(
    *,
    marks_per_batch: int = DEFAULT_MARKS_PER_BATCH,
    wait: bool = False,
    progress: Callable[[RollupRefresh], None] | None = None,
) -> RollupRefresh:
    """Recompute every bucket named by a change mark made before the call, a batch of marks per
    transaction. Returns at once (ran false) when another refresh is running,
    unless `wait`.

    The marks a batch deletes are those committed before its DELETE; the recompute, a later
    statement of the same transaction, sees at least what they marked. A change still in
    flight keeps its mark for the next batch or run, so none is lost."""
    marks = buckets = 0
    # Only the marks made before it started: under a steady stream of ratings, new marks
    # arrive while it works, and it would never finish. They are the next run's.
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM feedback_rollupchange")
        last = cursor.fetchone()[0]
    if last is None:
        return RollupRefresh()
    while True:
        with transaction.atomic():
            if not _lock_take(wait=wait):
                return RollupRefresh(marks=marks, buckets=buckets, ran=marks > 0)
            with connection.cursor() as cursor:
                cursor.execute(_TAKE_MARKS, {"last": last, "limit": marks_per_batch})
                taken = cursor.fetchall()
            if not taken:
                return RollupRefresh(marks=marks, buckets=buckets)
            batch = _buckets(taken)
            _buckets_recompute(batch)
        marks += len(taken)
        buckets += len(batch)
        if progress:
            progress(RollupRefresh(marks=marks, buckets=buckets))


def rollups_rebuild(
    *, days_per_batch: int = 7, progress: Callable[[RollupRefresh], None] | None = None
) -> RollupRefresh:
    """Recompute the rollups of every day that has interactions, and delete those of days
    that have none; for when rollups may be wrong (restored data, a changed TIME_ZONE).

    The old figures stay readable until each day is replaced: every logged day is marked,
    then refreshed a few days per transaction."""
    with transaction.atomic():
        _lock_take(wait=True)
        with connection.cursor() as cursor:
            cursor.execute(_MARK_EVERY_LOGGED_DAY)
            cursor.execute(_DELETE_EMPTY_DAYS, {"time_zone": settings.TIME_ZONE})
    return rollups_refresh(marks_per_batch=days_per_batch, wait=True, progress=progress)
