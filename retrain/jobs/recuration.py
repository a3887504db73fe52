"""Re-curation as a job: every interaction of a project that has feedback is curated again
under the curation policy as it now stands (after an admin changed it), the least recently
curated first, a batch at a time so that progress shows and a cancel is heard between
batches. The curation queue runs it, never a web request."""

from retrain.curation.pipeline import interactions_curate
from retrain.jobs.lifecycle import JobContext
from retrain.jobs.parameters import reject_unknown
from retrain.models import Job
from retrain.selectors import interaction_ids_least_recently_curated

BATCH_SIZE = 500


def validate_parameters(values: dict) -> dict:
    reject_unknown(values)
    return {}


def run(job: Job, context: JobContext) -> None:
    # Taken once, at the start: feedback that arrives meanwhile is curated by its own task.
    interaction_ids = interaction_ids_least_recently_curated(project=job.project)
    total = len(interaction_ids)
    context.log(f"Re-curating {total} interactions with feedback")
    by_status: dict[str, int] = {}
    for start in range(0, total, BATCH_SIZE):
        context.progress(100 * start / total, f"{start} of {total} interactions re-curated")
        summary = interactions_curate(
            project=job.project, interaction_ids=interaction_ids[start : start + BATCH_SIZE]
        )
        for status, count in summary.by_status.items():
            by_status[status] = by_status.get(status, 0) + count
        context.record_metrics(curated=min(start + BATCH_SIZE, total), by_status=by_status)
    context.record_metrics(curated=total, by_status=by_status)
    outcome = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
    context.log(f"Re-curated {total} interactions" + (f": {outcome}" if outcome else ""))
