"""The Celery app: queues, routes and the fixed beat schedule live in settings (CELERY_*).

`BrokerTransport` is kombu's Redis transport with one repair, chosen by CELERY_BROKER_TRANSPORT:
without it a worker exits for good when Redis restarts while it holds unacknowledged messages.

A task is to a worker what a request is to the web process: its database connection is kept
for the next one (CONN_MAX_AGE) and checked before reuse (CONN_HEALTH_CHECKS), by Django's own
`close_old_connections` at the start and end of every task. Celery's Django fixup would close it
around every task, so CELERY_DB_REUSE_MAX makes that an occasional recycle.
"""

import contextlib
import os
from queue import Empty

from celery import Celery, signals
from kombu.transport import redis as kombu_redis

from core import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class BrokerChannel(kombu_redis.Channel):
    """Closing a channel whose BRPOP the broker dropped must still close it.

    When Redis goes away, the worker's consumer first collects the connection (closing its
    channels), then closes it. kombu's `Channel.close` reads the pending BRPOP reply before
    anything else and lets that read's connection error escape, so the first close leaves the
    channel open; collecting then detaches the transport from its connection, and the second
    close, restoring the unacknowledged messages (late-acknowledged tasks, countdown tasks
    waiting in the worker), finds no connection to build a Redis client from: AttributeError
    ("'NoneType' object has no attribute 'hostname'"), which is no connection error, so the
    worker calls it unrecoverable and exits (Celery 5.7, kombu 5.7; an idle worker has nothing
    to restore and reconnects). With the read's error swallowed, the first close finishes: the
    messages are put back in their queues if Redis is already there again; otherwise they stay
    in its unacknowledged set (if it kept its data), which hands them out again after the
    visibility timeout. Either way the worker reconnects by itself.
    """

    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the broker is gone: there is no reply to read
        super().close()


class BrokerTransport(kombu_redis.Transport):
    Channel = BrokerChannel


app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _database_connections_like_requests(task, **kwargs) -> None:
    from django.db import close_old_connections

    # An eager task runs inside its caller, and inside its caller's transaction (tests).
    if not getattr(task.request, "is_eager", False):
        close_old_connections()


@signals.setup_logging.connect
def _logging_as_django_sets_it(**kwargs) -> None:
    """Workers and beat log as the web server does (settings.LOGGING: LOG_FORMAT, LOG_LEVEL),
    not in Celery's own format: connected, this stops Celery from setting up logging itself."""


_task_contexts: dict[str, object] = {}


@signals.task_prerun.connect
def _log_context_of_the_task(task_id, task, **kwargs) -> None:
    """Every line a task logs names it (core.logs); nothing carries over from the task before."""
    _task_contexts[task_id] = logs.start(task_id=task_id, task_name=task.name)


@signals.task_postrun.connect
def _log_context_ends(task_id, **kwargs) -> None:
    token = _task_contexts.pop(task_id, None)
    if token is not None:
        with contextlib.suppress(ValueError):  # set in another context: nothing of ours to undo
            logs.end(token)
