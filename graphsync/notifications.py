"""Receiving change notifications and lifecycle events, and turning them into delta runs.

The webhook views (graphsync.webhooks) must answer Microsoft within three seconds, so nothing here
calls Graph: a notification is checked (known subscription, equal clientState), counted, and
becomes at most one queued run per job (graphsync.scheduling coalesces a burst into one run).
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.db.models import F
from django.utils import timezone

from graphsync.models import Subscription
from graphsync.scheduling import handle_lifecycle, request_run
from graphsync.subscriptions import LIFECYCLE_EVENTS

logger = logging.getLogger(__name__)


@dataclass
class Delivery:
    accepted: int = 0
    dropped: int = 0
    runs: list[int] = field(default_factory=list)  # jobs whose run this delivery queued


def parse(body: bytes) -> list[dict[str, Any]] | None:
    """The items of a notification body (`{"value": [...]}`), or None when it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)]


def _verified(items: list[dict[str, Any]], delivery: Delivery) -> Iterator[tuple[dict, Any]]:
    """The items whose subscription we know and whose clientState matches it. The others are
    dropped and logged by subscription id only: never the clientState, never the body."""
    ids = {str(item.get("subscriptionId") or "")[:100] for item in items} - {""}
    known = {
        sub.graph_id: sub
        for sub in Subscription.objects.filter(graph_id__in=ids).only(
            "pk", "graph_id", "job_id", "client_state"
        )
    }
    for item in items:
        sub_id = str(item.get("subscriptionId") or "")[:100]
        sub = known.get(sub_id)
        state = item.get("clientState")
        if sub is None:
            logger.warning("notification dropped: unknown subscription %r", sub_id)
        elif not isinstance(state, str) or not hmac.compare_digest(
            state.encode(), sub.client_state.encode()
        ):
            logger.warning("notification dropped: wrong clientState for subscription %r", sub_id)
        else:
            delivery.accepted += 1
            yield item, sub
            continue
        delivery.dropped += 1


def receive_changes(items: list[dict[str, Any]]) -> Delivery:
    delivery = Delivery()
    per_sub = Counter()
    jobs: dict[int, int] = {}
    for _item, sub in _verified(items, delivery):
        per_sub[sub.pk] += 1
        jobs[sub.pk] = sub.job_id
    now = timezone.now()
    for pk, count in per_sub.items():
        # Written before the run is requested: `settle` relies on seeing this time.
        Subscription.objects.filter(pk=pk).update(
            last_notification_at=now, notification_count=F("notification_count") + count
        )
    for job_id in set(jobs.values()):
        if request_run(job_id):
            delivery.runs.append(job_id)
    return delivery


def receive_lifecycle(items: list[dict[str, Any]]) -> Delivery:
    """`missed` needs only a catch-up run; the others call Graph, so a task takes them."""
    delivery = Delivery()
    for item, sub in _verified(items, delivery):
        event = item.get("lifecycleEvent")
        if event not in LIFECYCLE_EVENTS:
            logger.warning("lifecycle event %r for subscription %r ignored", event, sub.graph_id)
            continue
        Subscription.objects.filter(pk=sub.pk).update(
            lifecycle_count=F("lifecycle_count") + 1,
            last_lifecycle_event=event,
            last_notification_at=timezone.now(),
        )
        if event == "missed":
            if request_run(sub.job_id):
                delivery.runs.append(sub.job_id)
        else:
            handle_lifecycle(sub.graph_id, event)
    return delivery
