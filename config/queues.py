"""The Celery queues, named in one place.

A task's queue follows the name of the module it lives in, so a new task lands on the right
queue without being listed anywhere: tasks in a module named `indexing` run on `index`, in
`curation` on `curation`, in `training` on `training`; everything else on `default`.
The `training` queue gets a worker of its own with concurrency 1 (see `make run` and docker/).

Redelivery is per kind of task, not per queue (config/celery.py): short tasks are acknowledged
when done and come back after the broker's visibility timeout if their worker dies; long jobs
(a Job row each, on `training`, `index` or `curation`) are acknowledged as they start and come
back through their heartbeat and the reaper.
"""

from enum import StrEnum


class Queue(StrEnum):
    DEFAULT = "default"
    CURATION = "curation"
    INDEX = "index"
    TRAINING = "training"


TASK_ROUTES = {
    "*.tasks.indexing.*": {"queue": Queue.INDEX.value},
    "*.tasks.curation.*": {"queue": Queue.CURATION.value},
    "*.tasks.training.*": {"queue": Queue.TRAINING.value},
}

# What the general worker consumes; the training worker consumes Queue.TRAINING alone.
GENERAL_WORKER_QUEUES = [Queue.DEFAULT, Queue.CURATION, Queue.INDEX]
