"""Enqueueing Celery tasks by name, the one way domain code asks for background work.

Domain modules never import a `tasks.py`: tasks are the edge that calls the domain, so importing
them from below would close a circle. Naming the task instead keeps the layers pointing one way,
and Celery routes it to its queue by that name (CELERY_TASK_ROUTES).

`enqueue` waits for the current transaction to commit, so the worker sees the rows the request
just wrote, and a rolled-back change sends nothing. `send` is for the few callers that must know
at once whether the broker took the task.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def send(task: str, *args: object, countdown: float | None = None) -> None:
    """Hand the named task to the broker now; raises when the broker cannot take it."""
    # Nobody waits for what these tasks return; without ignore_result the Redis result backend
    # subscribes to the answer first and, with Redis away, retries for twenty seconds while the
    # request that enqueued waits.
    current_app.send_task(task, args=args, countdown=countdown, ignore_result=True)


def enqueue(task: str, *args: object, countdown: float | None = None) -> None:
    """Send the named task once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(task, *args, countdown=countdown))
