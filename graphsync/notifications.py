"""Receiving change notifications and lifecycle events, and turning them into delta runs.

The webhook views (graphsync.webhooks) must answer Microsoft within three seconds, so nothing here
calls Graph: a notification is checked (known subscription, equal clientState), counted, and
becomes at most one queued run per job (graphsync.scheduling coalesces a burst into one run).

Anyone can post to the webhooks, so what one request may cost is bounded: at most MAX_ITEMS
notifications, one query for their subscriptions, and one log line however many were dropped.
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

# Graph puts the notifications of one delivery in one POST's `value` (docs/microsoft.md, "Change
# notifications") and documents no largest batch; its batches are a few dozen at most. A thousand
# leaves them ample room and still bounds what an unauthenticated request costs; a body with more
# is refused whole (graphsync.webhooks).
MAX_ITEMS = 1000
# Subscription ids named in the summary line, per kind of drop: enough to find a culprit, not
# enough for a flood to fill the log.
NAMED_IDS = 3


@dataclass
class Delivery:
    accepted: int = 0
    unknown: Counter[str] = field(default_factory=Counter)  # by subscription id
    wrong_state: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)  # lifecycle events we do not know
    runs: list[int] = field(default_factory=list)  # jobs whose run this delivery queued

    @property
    def dropped(self) -> int:
        return self.unknown.total() + self.wrong_state.total()

    def log(self, what: str) -> None:
        """One line for the whole request: counts, and a few subscription ids of what was
        dropped, never a clientState or the body."""
        parts = [f"{what}: {self.accepted} accepted, {len(self.runs)} run(s) queued"]
        for label, ids in (
            ("for unknown subscription", self.unknown),
            ("with a wrong clientState for subscription", self.wrong_state),
            ("of an unknown lifecycle event for subscription", self.ignored),
        ):
            if ids:
                named = ", ".join(repr(sub_id) for sub_id in list(ids)[:NAMED_IDS])
                more = len(ids) - NAMED_IDS
                named += f" and {more} more" if more > 0 else ""
                parts.append(f"{ids.total()} dropped {label} {named}")
        level = logging.WARNING if self.dropped or self.ignored else logging.INFO
        logger.log(level, "; ".join(parts))


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
    counted on the delivery, by subscription id."""
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
            delivery.unknown[sub_id] += 1
        elif not isinstance(state, str) or not hmac.compare_digest(
            state.encode(), sub.client_state.encode()
        ):
            delivery.wrong_state[sub_id] += 1
        else:
            delivery.accepted += 1
            yield item, sub


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
    delivery.log("change notifications")
    return delivery


def receive_lifecycle(items: list[dict[str, Any]]) -> Delivery:
    """`missed` needs only a catch-up run; the others call Graph, so a task takes them."""
    delivery = Delivery()
    for item, sub in _verified(items, delivery):
        event = item.get("lifecycleEvent")
        if event not in LIFECYCLE_EVENTS:
            delivery.ignored[sub.graph_id] += 1
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
    delivery.log("lifecycle events")
    return delivery
