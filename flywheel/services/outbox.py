"""The transactional outbox: follow-up work is stored as an OutboxMessage in the transaction
that stores what it follows up, and published to Celery afterwards. Postgres stays the source
of truth: with Redis down a request still commits its rows and its work, answers at once, and
the work goes out when Redis is back.

Publishing happens twice over, both safe to repeat (tasks are idempotent):
- right after the commit, once, with a broker connection that fails within milliseconds (and
  not at all for a few seconds after a failure), so that a request never waits on Redis;
- by the relay, which sends whatever is still pending, oldest first: a loop in every worker
  (every FLYWHEEL_OUTBOX_RELAY_INTERVAL_SECONDS) and a periodic task (config/periodic.py).
A message is locked while it is being sent (SELECT … FOR UPDATE SKIP LOCKED), so two
publishers never send it at the same time.
"""

import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cache

from celery import current_app
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone
from kombu.connection import ConnectionPool

from flywheel.models import OutboxMessage

logger = logging.getLogger(__name__)

# How long publishing may wait on the broker: connecting to a stopped Redis fails at once, an
# unreachable one within the connect timeout, a stalled one within the socket timeout.
PUBLISH_CONNECT_TIMEOUT_SECONDS = 0.5
PUBLISH_SOCKET_TIMEOUT_SECONDS = 1.0
# After a failed publish, requests leave their messages to the relay for this long, so that
# an unreachable broker costs one request a timeout rather than every request.
PUBLISH_PAUSE_AFTER_FAILURE_SECONDS = 5.0
RELAY_BATCH_SIZE = 500
# Broker connections a process keeps open for publishing; a thread finding them all busy
# waits at most the socket timeout, then leaves its message to the relay.
PUBLISH_CONNECTIONS_PER_PROCESS = 10
# Published messages are kept this long, to see what was sent, then deleted.
PUBLISHED_KEPT_FOR = timedelta(days=1)

_publishing_paused_until = 0.0


class _AwaitingCommit(threading.local):
    """Ids of the messages this thread enqueued whose transaction has not been published yet.
    The first callback after a commit publishes them all at once, so a batch of ratings costs
    one transaction and one pass over the broker, not one per rating. Ids of a transaction
    that rolled back stay until then, and find no row."""

    def __init__(self) -> None:
        self.message_ids: list[int] = []


_awaiting_commit = _AwaitingCommit()


def outbox_enqueue(
    *, task_name: str, args: Sequence = (), kwargs: dict | None = None
) -> OutboxMessage:
    """Store a task to send as part of the current transaction; it is published once the
    transaction commits (or by the relay) and dropped with it if it rolls back."""
    message = OutboxMessage.objects.create(
        task_name=task_name, args=list(args), kwargs=dict(kwargs or {})
    )
    _awaiting_commit.message_ids.append(message.pk)
    # robust: whatever goes wrong while publishing, the request that committed has succeeded.
    transaction.on_commit(_committed_messages_publish, robust=True)
    return message


def _committed_messages_publish() -> None:
    message_ids = _awaiting_commit.message_ids
    if not message_ids:  # an earlier callback of the same commit sent them
        return
    _awaiting_commit.message_ids = []
    outbox_publish(message_ids=message_ids)


def outbox_publish(*, message_ids: list[int]) -> int:
    """Send these messages now if they are pending, unless a publish failed moments ago; how
    many were sent. What is not sent stays pending, for the relay."""
    if time.monotonic() < _publishing_paused_until:
        return 0
    with transaction.atomic():
        pending = list(
            # Those the relay is sending are locked: skipped, not waited for.
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(pk__in=message_ids, published_at__isnull=True)
            .order_by("pk")
        )
        return _messages_send(pending)


def outbox_relay(*, limit: int = RELAY_BATCH_SIZE) -> int:
    """Send pending messages, oldest first, until the broker refuses one; how many were sent."""
    with transaction.atomic():
        pending = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True)
            .order_by("created_at", "pk")[:limit]
        )
        return _messages_send(pending)


def outbox_prune(*, published_before: timedelta = PUBLISHED_KEPT_FOR) -> int:
    """Delete messages published longer ago than `published_before`; how many."""
    deleted, _ = OutboxMessage.objects.filter(
        published_at__lt=timezone.now() - published_before
    ).delete()
    return deleted


def outbox_pending_count() -> int:
    return OutboxMessage.objects.filter(published_at__isnull=True).count()


def outbox_relay_forever(*, stop: threading.Event, interval_seconds: float) -> None:
    """The relay loop a worker runs in a thread of its own until `stop` is set. A failure
    (the database away) is logged and retried at the next interval."""
    try:
        while not stop.wait(interval_seconds):
            close_old_connections()
            try:
                while outbox_relay() == RELAY_BATCH_SIZE and not stop.is_set():
                    pass  # a full batch went out: more may be waiting
            except Exception:
                logger.warning("The outbox relay failed; retrying", exc_info=True)
    finally:
        connection.close()


def _messages_send(messages: list[OutboxMessage]) -> int:
    """Publish locked pending messages in order and mark the sent ones; stop at the first
    failure, which is recorded on its message."""
    global _publishing_paused_until
    sent_ids = []
    for message in messages:
        try:
            _publish(message)
        except Exception as error:  # each transport raises its own errors; all mean "not sent"
            _publishing_paused_until = time.monotonic() + PUBLISH_PAUSE_AFTER_FAILURE_SECONDS
            OutboxMessage.objects.filter(pk=message.pk).update(
                attempts=F("attempts") + 1, last_error=str(error)[:1000]
            )
            logger.warning(
                "Could not publish %s (outbox message %s): %s; it stays pending",
                message.task_name,
                message.pk,
                error,
            )
            break
        sent_ids.append(message.pk)
    if sent_ids:
        OutboxMessage.objects.filter(pk__in=sent_ids).update(
            published_at=timezone.now(), attempts=F("attempts") + 1
        )
    return len(sent_ids)


def _publish(message: OutboxMessage) -> None:
    connections = _fail_fast_connections(os.getpid())
    with connections.acquire(block=True, timeout=PUBLISH_SOCKET_TIMEOUT_SECONDS) as broker:
        current_app.send_task(
            message.task_name,
            args=message.args,
            kwargs=message.kwargs,
            connection=broker,
            # No retries here (the relay retries), and no subscription to the result, which
            # would connect to the result backend and retry for 20 seconds with Redis down.
            retry=False,
            ignore_result=True,
        )


@cache
def _fail_fast_connections(process_id: int) -> ConnectionPool:
    """Broker connections that give up at once, kept open between publishes (a pool without
    a limit would close each after use); a pool per process, since a forked worker child must
    not share its parent's sockets."""
    broker = current_app.connection_for_write(
        connect_timeout=PUBLISH_CONNECT_TIMEOUT_SECONDS,
        transport_options={
            "max_retries": 0,
            "socket_connect_timeout": PUBLISH_CONNECT_TIMEOUT_SECONDS,
            "socket_timeout": PUBLISH_SOCKET_TIMEOUT_SECONDS,
        },
    )
    return broker.Pool(limit=PUBLISH_CONNECTIONS_PER_PROCESS)
