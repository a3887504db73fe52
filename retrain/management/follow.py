"""Following a job from a terminal until it ends, for `run_job --wait` and `follow_job`."""

import time

from django.core.management.base import CommandError

from retrain.models import Job

POLL_SECONDS = 2


def job_follow(job: Job, *, write) -> None:
    """Write each change of state, progress or message; raise CommandError unless the job
    succeeded, saying why (a cancelled job's message names when and by whom)."""
    shown = None
    while True:
        job.refresh_from_db()
        line = f"{job.state} {job.progress}% {job.progress_message}"
        if line != shown:
            write(line)
            shown = line
        if job.is_finished:
            break
        time.sleep(POLL_SECONDS)  # a terminal follower; polling is what it does
    if job.state == Job.State.CANCELLED:
        raise CommandError(f"Job {job.pk} cancelled: {job.progress_message}")
    if job.state != Job.State.SUCCEEDED:
        raise CommandError(f"Job {job.pk} {job.state}: {job.error[-500:]}")
