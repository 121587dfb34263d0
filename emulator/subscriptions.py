"""Change-notification subscriptions: validation handshake, renewal, delivery, lifecycle events."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

import aiohttp

from emulator.errors import GraphError, bad_request, blocked_by_access_policy
from emulator.store import Collection, Item

if TYPE_CHECKING:
    from emulator.tokens import AccessToken
    from emulator.world import World

# Maximum lifetime per resource family, in minutes (docs/microsoft.md, "Change notifications").
MAX_MINUTES = {
    "mail": 10080,
    "events": 10080,
    "contacts": 10080,
    "drive": 42300,
    "users": 41760,
    "groups": 41760,
}
ODATA_TYPES = {
    "mail": "#Microsoft.Graph.Message",
    "events": "#Microsoft.Graph.Event",
    "contacts": "#Microsoft.Graph.Contact",
    "drive": "#Microsoft.Graph.DriveItem",
    "users": "#Microsoft.Graph.User",
    "groups": "#Microsoft.Graph.Group",
}
SEGMENTS = {
    "mail": "Messages",
    "events": "Events",
    "contacts": "Contacts",
    "drive": "Items",
    "users": "Users",
    "groups": "Groups",
}
# The change types Graph accepts per family. A driveItem is only ever "updated" (a new or
# deleted file shows as an update of the root), and users and groups have no "created": a new
# user or group comes as "updated".
CHANGE_TYPES = {
    "drive": {"updated"},
    "users": {"updated", "deleted"},
    "groups": {"updated", "deleted"},
}
ALL_CHANGE_TYPES = {"created", "updated", "deleted"}
FOLDER = re.compile(r"^mailfolders(?:\('([^']+)'\)|/([^/]+))/messages$", re.IGNORECASE)
CONTACT_FOLDER = re.compile(r"^contactfolders(?:\('([^']+)'\)|/([^/]+))/contacts$", re.IGNORECASE)
# Delivery, as Graph does it (docs/microsoft.md, "Change notifications"): notifications for one
# notificationUrl that arrive while deliveries to it are under way wait and go together in the
# next POST's `value` (at most BATCH_MAX), with at most IN_FLIGHT POSTs per URL at once; a POST
# not answered 2xx (429, 5xx, no answer within TIMEOUT_SECONDS) is sent again after its
# Retry-After or a growing pause, for up to RETRY_SECONDS.
BATCH_MAX = 100
IN_FLIGHT = 4
TIMEOUT_SECONDS = 10
RETRY_SECONDS = 4 * 3600
RETRY_PAUSE_MAX = 60


def parse_time(value: str) -> float:
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


@dataclass
class Subscription:
    id: str
    resource: str
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: float
    client_id: str
    tenant_id: str
    creator_id: str | None
    family: str
    key_prefix: str
    user_id: str | None
    needs_reauthorization: bool = False

    def public(self, graph_base: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.context": f"{graph_base}/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.client_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "expirationDateTime": format_time(self.expires_at),
            "creatorId": self.creator_id,
            "latestSupportedTlsVersion": "v1_2",
            "notificationContentType": "application/json",
        }
        if self.lifecycle_url:
            body["lifecycleNotificationUrl"] = self.lifecycle_url
        return body


class Host(Protocol):
    """What subscriptions use of the running emulator (`runtime.Emulator`, which owns them)."""

    world: World


@dataclass
class Subscriptions:
    emu: Host
    items: dict[str, Subscription] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    outboxes: dict[str, Outbox] = field(default_factory=dict)  # by notificationUrl

    def http(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession()
        return self.session

    def close(self) -> None:
        """Replaced by a new scenario: deliveries still waiting or retrying are dropped."""
        for task in list(self.tasks):
            task.cancel()
        self.outboxes.clear()
        if self.session is not None and not self.session.closed:
            task = asyncio.get_event_loop().create_task(self.session.close())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    # creating

    def target(self, token: AccessToken, resource: str) -> tuple[str, str, str | None]:
        """(family, collection-key prefix, user id) for a subscription resource."""
        path = unquote(resource.strip()).lstrip("/")
        lower = path.lower()
        if lower in ("users", "groups"):
            if token.user_id is None and not token.roles:
                raise GraphError(
                    403,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status "
                    "Code: Forbidden; Reason: Insufficient privileges]",
                )
            return lower, f"t:{token.tenant_id}:{lower}", None
        user_id = token.user_id
        if lower.startswith("me/"):
            rest = lower[3:]
            as_sent = path[3:]  # folder ids are case-sensitive
        elif lower.startswith("users/"):
            ref, _, as_sent = path[6:].partition("/")
            user = self.emu.world.directory.find_user(ref)
            if user is None or user.tenant_id != token.tenant_id:
                raise bad_request(f"Resource '{resource}' does not exist.", "InvalidRequest")
            user_id, rest = user.id, as_sent.lower()
        else:
            raise bad_request(f"Resource '{resource}' is not supported.", "InvalidRequest")
        if user_id is None:
            raise bad_request("/me is only valid with delegated authentication flow.")
        if rest == "messages":
            return "mail", f"u:{user_id}:mail:", user_id
        match = FOLDER.match(as_sent)
        if match:
            box = self.emu.world.mailbox(self.emu.world.directory.find_user(user_id))  # type: ignore[arg-type]
            name = self.emu.world.folder_name(box, match.group(1) or match.group(2))
            if name is None:
                raise bad_request(f"Resource '{resource}' does not exist.", "InvalidRequest")
            return "mail", f"u:{user_id}:mail:{name}", user_id
        if rest in ("events", "calendar/events"):
            return "events", f"u:{user_id}:events", user_id
        if rest == "contacts":  # every contact folder of the mailbox
            return "contacts", f"u:{user_id}:contacts:", user_id
        match = CONTACT_FOLDER.match(as_sent)
        if match:
            box = self.emu.world.mailbox(self.emu.world.directory.find_user(user_id))  # type: ignore[arg-type]
            folder = self.emu.world.contact_folder(box, match.group(1) or match.group(2))
            if folder is None:
                raise bad_request(f"Resource '{resource}' does not exist.", "InvalidRequest")
            return "contacts", folder.key, user_id
        if rest in ("drive/root", "drive"):
            return "drive", f"u:{user_id}:drive", user_id
        raise bad_request(f"Resource '{resource}' is not supported.", "InvalidRequest")

    def check_expiry(self, family: str, value: str | None) -> float:
        if not value:
            raise bad_request("expirationDateTime is required.", "InvalidRequest")
        try:
            expires = parse_time(value)
        except ValueError as exc:
            raise bad_request(f"Invalid expirationDateTime '{value}'.", "InvalidRequest") from exc
        limit = MAX_MINUTES[family]
        if expires <= time.time():
            raise bad_request(
                "Subscription expiration date must be in the future.", "InvalidRequest"
            )
        if expires > time.time() + limit * 60 + 5:
            raise bad_request(
                f"Subscription expiration can only be {limit} minutes in the future.",
                "InvalidRequest",
            )
        return expires

    async def validate(self, url: str) -> None:
        token = (
            f"Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        failure = (
            "Subscription validation request failed. Notification endpoint must respond "
            "with 200 OK to validation request."
        )
        timeout = aiohttp.ClientTimeout(total=self.emu.world.settings.validation_timeout)
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token)}"
        try:
            async with self.http().post(
                target, data=b"", timeout=timeout, headers={"Content-Type": "text/plain"}
            ) as resp:
                body = await resp.text()
                ok = resp.status == 200 and body == token
                self.deliveries.append({"kind": "validation", "url": url, "status": resp.status})
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GraphError(400, "ValidationError", f"{failure} ({type(exc).__name__})") from exc
        if not ok:
            raise GraphError(
                400,
                "ValidationError",
                "Subscription validation request failed. "
                "Response must exactly match validationToken query parameter.",
            )

    async def create(self, token: AccessToken, body: dict[str, Any]) -> Subscription:
        for name in ("changeType", "notificationUrl", "resource"):
            if not body.get(name):
                raise bad_request(f"Property '{name}' is required.", "InvalidRequest")
        family, prefix, user_id = self.target(token, body["resource"])
        owner = self.emu.world.directory.find_user(user_id) if user_id else None
        outlook = family in ("mail", "events", "contacts")
        app_only = token.user_id is None
        if (
            app_only
            and outlook
            and owner
            and not self.emu.world.app_may_open(token.client_id, owner)
        ):
            raise blocked_by_access_policy()
        expires = self.check_expiry(family, body.get("expirationDateTime"))
        state = body.get("clientState")
        if state is not None and len(state) > 128:
            raise bad_request("clientState must be at most 128 characters.", "InvalidRequest")
        change_types = [c.strip() for c in body["changeType"].split(",")]
        if not set(change_types) <= CHANGE_TYPES.get(family, ALL_CHANGE_TYPES):
            raise bad_request(f"Invalid changeType '{body['changeType']}'.", "InvalidRequest")
        if not body["notificationUrl"].lower().startswith(("https://", "http://")):
            raise bad_request("notificationUrl must be an http(s) URL.", "InvalidRequest")
        await self.validate(body["notificationUrl"])
        if body.get("lifecycleNotificationUrl"):
            await self.validate(body["lifecycleNotificationUrl"])
        sub = Subscription(
            id=str(uuid.uuid4()),
            resource=body["resource"],
            change_types=change_types,
            notification_url=body["notificationUrl"],
            lifecycle_url=body.get("lifecycleNotificationUrl"),
            client_state=state,
            expires_at=expires,
            client_id=token.client_id,
            tenant_id=token.tenant_id,
            creator_id=token.user_id or token.client_id,
            family=family,
            key_prefix=prefix,
            user_id=user_id,
        )
        self.items[sub.id] = sub
        return sub

    def owned(self, token: AccessToken, sub_id: str) -> Subscription:
        sub = self.items.get(sub_id)
        if sub is None or sub.client_id != token.client_id or sub.expires_at < time.time():
            raise GraphError(404, "ResourceNotFound", f"The object was not found. ({sub_id})")
        return sub

    def renew(self, token: AccessToken, sub_id: str, body: dict[str, Any]) -> Subscription:
        sub = self.owned(token, sub_id)
        sub.expires_at = self.check_expiry(sub.family, body.get("expirationDateTime"))
        sub.needs_reauthorization = False
        return sub

    # delivery

    def on_change(
        self, coll: Collection, change_type: str, item_id: str, item: Item | None
    ) -> None:
        now = time.time()
        for sub in list(self.items.values()):
            seen_as = change_type
            if sub.family == "drive" or (sub.family in CHANGE_TYPES and change_type == "created"):
                seen_as = "updated"
            if sub.expires_at < now or seen_as not in sub.change_types:
                continue
            if coll.key == sub.key_prefix or (
                sub.key_prefix.endswith(":") and coll.key.startswith(sub.key_prefix)
            ):
                self.queue(sub.notification_url, self.item(sub, seen_as, item_id, item))

    def queue(self, url: str, item: dict[str, Any]) -> None:
        outbox = self.outboxes.setdefault(url, Outbox())
        outbox.pending.append(item)
        if outbox.senders < IN_FLIGHT:
            outbox.senders += 1
            self.spawn(self.send_pending(url, outbox))

    async def send_pending(self, url: str, outbox: Outbox) -> None:
        try:
            while outbox.pending:
                batch = outbox.pending[:BATCH_MAX]
                del outbox.pending[:BATCH_MAX]
                await self.post(url, {"value": batch}, "change")
        finally:
            outbox.senders -= 1

    def spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def item(
        self, sub: Subscription, change_type: str, item_id: str, item: Item | None
    ) -> dict[str, Any]:
        """One notification, as it stands in a delivery's `value`."""
        if sub.user_id is None:
            resource = f"{SEGMENTS[sub.family]}/{item_id}"
        else:
            resource = f"Users/{sub.user_id}/{SEGMENTS[sub.family]}/{item_id}"
        data: dict[str, Any] = {
            "@odata.type": ODATA_TYPES[sub.family],
            "@odata.id": resource,
            "id": item_id,
        }
        etag = (item or {}).get("@odata.etag")
        if etag:
            data["@odata.etag"] = etag
        if sub.user_id is None:
            data["organizationId"] = sub.tenant_id
        return {
            "id": secrets.token_urlsafe(10),
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": format_time(sub.expires_at),
            "clientState": sub.client_state,
            "changeType": change_type,
            "resource": resource,
            "tenantId": sub.tenant_id,
            "resourceData": data,
        }

    async def post(self, url: str, body: dict[str, Any], kind: str, retry: bool = True) -> int:
        """POST `body` until it is answered 2xx or RETRY_SECONDS have passed (once only without
        `retry`); each attempt is noted in `deliveries`. The last status (0: no answer)."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            status, retry_after = await self.attempt(url, body, kind, attempt)
            if 200 <= status < 300 or not retry:
                return status
            pause = retry_after if retry_after is not None else 2 ** min(attempt - 1, 6)
            pause = min(pause, RETRY_PAUSE_MAX)
            if time.monotonic() + pause - started > RETRY_SECONDS:
                return status
            await asyncio.sleep(pause)

    async def attempt(
        self, url: str, body: dict[str, Any], kind: str, attempt: int
    ) -> tuple[int, float | None]:
        record: dict[str, Any] = {
            "kind": kind,
            "url": url,
            "subscription_ids": sorted({item["subscriptionId"] for item in body["value"]}),
            "body": body,
            "attempt": attempt,
            "status": None,
        }
        self.deliveries.append(record)
        try:
            async with self.http().post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
            ) as resp:
                record["status"] = resp.status
                return resp.status, retry_after_seconds(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            record["error"] = type(exc).__name__
            return 0, None

    async def deliver(
        self, sub: Subscription, change_type: str, item_id: str, item: Item | None
    ) -> int:
        """One notification in a POST of its own, sent once, now (the control API's `notify`,
        which answers with its status)."""
        body = {"value": [self.item(sub, change_type, item_id, item)]}
        return await self.post(sub.notification_url, body, "change", retry=False)

    async def lifecycle(self, sub_id: str, event: str) -> int:
        sub = self.items.get(sub_id)
        if sub is None:
            raise KeyError(sub_id)
        if event not in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
            raise ValueError(f"unknown lifecycle event {event!r}")
        body = {
            "value": [
                {
                    "subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": format_time(sub.expires_at),
                    "tenantId": sub.tenant_id,
                    "clientState": sub.client_state,
                    "lifecycleEvent": event,
                }
            ]
        }
        if event == "subscriptionRemoved":
            del self.items[sub.id]
        elif event == "reauthorizationRequired":
            sub.needs_reauthorization = True
        url = sub.lifecycle_url or sub.notification_url
        # Sent once: the control API that fires it answers with its status.
        return await self.post(url, body, f"lifecycle:{event}", retry=False)


@dataclass
class Outbox:
    """Notifications waiting for a POST to one notificationUrl."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    senders: int = 0


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After in seconds; None when absent or not a number of seconds."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
