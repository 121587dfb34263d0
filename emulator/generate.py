"""Deterministic, realistic Graph items computed from (seed, owner, position).

No random module: every value is a pure function of its inputs, so two emulators started with the
same scenario serve byte-identical mailboxes, and generating an item is a few string operations.
"""

from __future__ import annotations

import base64
import functools
import time
from dataclasses import dataclass, field

from emulator.store import Collection, Item, ItemKind

FIRST = [
    "Adele",
    "Alex",
    "Diego",
    "Isaiah",
    "Johanna",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Patti",
    "Pradeep",
    "Grady",
    "Henrietta",
    "Irvin",
    "Joni",
    "Allan",
    "Debra",
    "Enrico",
]
LAST = [
    "Vance",
    "Wilber",
    "Sicilian",
    "Richardson",
    "Lanier",
    "Gu",
    "Holloway",
    "Robbins",
    "Bowen",
    "Graham",
    "Wilke",
    "Fernandez",
    "Gupta",
    "Archie",
    "Harris",
    "Bellamy",
    "Sherman",
    "Deyoung",
    "Berger",
    "Catteneo",
]
TOPICS = [
    "Quarterly review",
    "Budget draft",
    "Team offsite",
    "Customer escalation",
    "Release notes",
    "Holiday hours update",
    "Contract renewal",
    "Security training",
    "Weekly sync",
    "Design feedback",
    "Invoice",
    "Hiring plan",
    "Roadmap",
    "Board deck",
    "Travel itinerary",
]
PLACES = [
    "Conf Room Adams",
    "Conf Room Baker",
    "Building 4 Cafe",
    "Microsoft Teams Meeting",
    "Chapel of Saint Ignatius",
    "Lab 2",
    "Online",
]
EXTERNAL = ["fabrikam.example", "tailspintoys.example", "northwind.example"]
SENTENCES = [
    "Please find the latest figures attached and let me know if anything looks off.",
    "We agreed to move the deadline by one week so that the review can include the new data.",
    "Can you confirm the room booking and send the dial-in details to the wider group?",
    "The customer asked for a written summary of the open issues before Friday.",
    "I have updated the shared document with the comments from yesterday's meeting.",
    "Thanks for the quick turnaround; the numbers now match what finance reported.",
]


def mix(*parts: int) -> int:
    """A small integer hash (splitmix64 flavour); stable across processes, unlike hash()."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


def iso(ts: float) -> str:
    # Hot path of page generation: the date part is cached, the time part is arithmetic.
    whole = int(ts)
    day, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{_day(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}Z"


def iso7(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000", time.gmtime(ts))


def stable_int(text: str) -> int:
    return int.from_bytes(text.encode()[:24].ljust(24, b"\0"), "big") % (1 << 61)


def outlook_prefix(text: str) -> str:
    """An id prefix in the style of Exchange item ids (`AAMkAD...`), unique per owner + folder."""
    digest = base64.urlsafe_b64encode(mix(stable_int(text), len(text)).to_bytes(8, "big"))
    return "AAMkAD" + digest.decode().rstrip("=")[:10] + "AAA"


@dataclass
class Owner:
    user_id: str
    name: str
    address: str
    domain: str
    seed: int
    base_time: float
    folder_id: str = ""
    drive_id: str = ""
    key: int = field(init=False)

    def __post_init__(self) -> None:
        self.key = mix(self.seed, stable_int(self.user_id))


@functools.lru_cache(maxsize=8192)
def _person(first: str, last: str, dom: str) -> tuple[str, str]:
    return f"{first} {last}", f"{first}.{last}@{dom}".lower()


def person(h: int, domain: str) -> dict[str, dict[str, str]]:
    dom = domain if (h >> 16) % 3 else EXTERNAL[(h >> 20) % len(EXTERNAL)]
    name, address = _person(FIRST[h % len(FIRST)], LAST[(h >> 8) % len(LAST)], dom)
    return {"emailAddress": {"name": name, "address": address}}


@functools.lru_cache(maxsize=256)
def _text(a: int, b: int, c: int) -> str:
    return " ".join((SENTENCES[a], SENTENCES[b], SENTENCES[c]))


def _change_key(h: int, version: int) -> str:
    raw = b"CQAAABYAAA" + mix(h, version).to_bytes(8, "big") + version.to_bytes(4, "big")
    return base64.b64encode(raw).decode()


class MessageKind(ItemKind):
    odata_type = "#microsoft.graph.message"

    def generate(self, coll: Collection, pos: int) -> Item:
        o: Owner = coll.owner
        h = mix(o.key, pos)
        sender = person(h, o.domain)
        topic = TOPICS[(h >> 24) % len(TOPICS)]
        received = o.base_time - pos * 1800 - (h >> 32) % 1500
        n = len(SENTENCES)
        text = _text(h % n, (h >> 5) % n, (h >> 10) % n)
        ck = _change_key(h, 1)
        item_id = coll.id_of(pos)
        return {
            "@odata.etag": f'W/"{ck}"',
            "id": item_id,
            "createdDateTime": iso(received),
            "lastModifiedDateTime": iso(received + 2),
            "changeKey": ck,
            "categories": ["Blue category"] if h % 7 == 0 else [],
            "receivedDateTime": iso(received),
            "sentDateTime": iso(received - 1),
            "hasAttachments": h % 5 == 0,
            "internetMessageId": f"<{h:016x}@{o.domain}>",
            "subject": f"{topic} #{pos}",
            "bodyPreview": text[:255],
            "importance": "high" if h % 11 == 0 else "normal",
            "parentFolderId": o.folder_id,
            "conversationId": f"AAQkAD{(h >> 3) % 997:04d}{o.key % 100000:05d}=",
            "isRead": (h >> 40) % 3 != 0,
            "isDraft": False,
            "webLink": f"https://outlook.office365.com/owa/?ItemID={item_id}&exvsurl=1&viewmodel=ReadMessageItem",
            "body": {
                "contentType": "html",
                "content": '<html><head><meta http-equiv="Content-Type" content="text/html; '
                f'charset=utf-8"></head><body><p>{text}</p><p>{sender["emailAddress"]["name"]}'
                "</p></body></html>",
            },
            "sender": sender,
            "from": sender,
            "toRecipients": [{"emailAddress": {"name": o.name, "address": o.address}}],
            "ccRecipients": [person(h >> 12, o.domain)] if h % 4 == 0 else [],
            "flag": {"flagStatus": "notFlagged"},
        }

    def stamp(self, coll: Collection, item: Item, pos: int, version: int, now: float) -> None:
        ck = _change_key(mix(coll.owner.key, pos), version)
        item["changeKey"] = ck
        item["@odata.etag"] = f'W/"{ck}"'
        item["lastModifiedDateTime"] = iso(now)


class EventKind(ItemKind):
    odata_type = "#microsoft.graph.event"

    def start_of(self, coll: Collection, pos: int) -> float:
        o: Owner = coll.owner
        day = o.base_time - o.base_time % 86400
        h = mix(o.key, pos, 7)
        return day + (pos - coll.base_count // 2) * 5 * 3600 + (h % 4) * 1800

    def generate(self, coll: Collection, pos: int) -> Item:
        o: Owner = coll.owner
        h = mix(o.key, pos, 7)
        start = self.start_of(coll, pos)
        end = start + 1800 * (1 + h % 4)
        ck = _change_key(h, 1)
        return {
            "@odata.etag": f'W/"{ck}"',
            "id": coll.id_of(pos),
            "iCalUId": f"040000008200E00074C5B7101A82E008{h:016X}",
            "changeKey": ck,
            "subject": f"{TOPICS[(h >> 9) % len(TOPICS)]} meeting",
            "body": {"contentType": "html", "content": f"<p>{SENTENCES[h % len(SENTENCES)]}</p>"},
            "start": {"dateTime": iso7(start), "timeZone": "UTC"},
            "end": {"dateTime": iso7(end), "timeZone": "UTC"},
            "location": {"displayName": PLACES[(h >> 20) % len(PLACES)]},
            "attendees": [
                {
                    "type": "required",
                    "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                    **person(h >> 4, o.domain),
                }
            ],
            "organizer": {"emailAddress": {"name": o.name, "address": o.address}},
            "isAllDay": False,
            "isCancelled": False,
            "lastModifiedDateTime": iso(start - 86400 * 3),
        }

    def stamp(self, coll: Collection, item: Item, pos: int, version: int, now: float) -> None:
        ck = _change_key(mix(coll.owner.key, pos, 7), version)
        item["changeKey"] = ck
        item["@odata.etag"] = f'W/"{ck}"'
        item["lastModifiedDateTime"] = iso(now)


class ContactKind(ItemKind):
    odata_type = "#microsoft.graph.contact"

    def generate(self, coll: Collection, pos: int) -> Item:
        o: Owner = coll.owner
        h = mix(o.key, pos, 11)
        first, last = FIRST[h % len(FIRST)], LAST[(h >> 7) % len(LAST)]
        ck = _change_key(h, 1)
        return {
            "@odata.etag": f'W/"{ck}"',
            "id": coll.id_of(pos),
            "changeKey": ck,
            "createdDateTime": iso(o.base_time - 86400 * (pos + 30)),
            "lastModifiedDateTime": iso(o.base_time - 86400 * (pos + 1)),
            "parentFolderId": o.folder_id,
            "displayName": f"{first} {last}",
            "givenName": first,
            "surname": last,
            "fileAs": f"{last}, {first}",
            "initials": f"{first[0]}.{last[0]}.",
            "companyName": EXTERNAL[(h >> 13) % len(EXTERNAL)].split(".")[0].title(),
            "emailAddresses": [
                {"name": f"{first} {last}", "address": f"{first}.{last}{pos}@{o.domain}".lower()}
            ],
            "businessPhones": [f"+1 425 555 {h % 10000:04d}"],
            "mobilePhone": None,
        }

    def stamp(self, coll: Collection, item: Item, pos: int, version: int, now: float) -> None:
        ck = _change_key(mix(coll.owner.key, pos, 11), version)
        item["changeKey"] = ck
        item["@odata.etag"] = f'W/"{ck}"'
        item["lastModifiedDateTime"] = iso(now)


class DriveItemKind(ItemKind):
    """Position 0 is the root, the next tenth are folders, the rest files spread over them."""

    odata_type = "#microsoft.graph.driveItem"

    def folders(self, coll: Collection) -> int:
        return max(1, coll.base_count // 10)

    def generate(self, coll: Collection, pos: int) -> Item:
        o: Owner = coll.owner
        h = mix(o.key, pos, 13)
        folders = self.folders(coll)
        item_id = coll.id_of(pos)
        stamp = o.base_time - 3600 * (pos + 5)
        item: Item = {
            "id": item_id,
            "createdDateTime": iso(stamp - 86400),
            "lastModifiedDateTime": iso(stamp),
            "eTag": f'"{{{item_id}}},1"',
            "cTag": f'"c:{{{item_id}}},1"',
            "parentReference": {"driveId": o.drive_id, "driveType": "business"},
        }
        base_url = f"https://contoso-my.sharepoint.com/personal/{o.user_id[:8]}/Documents"
        if pos == 0:
            item.update(
                name="root", root={}, size=0, folder={"childCount": folders - 1}, webUrl=base_url
            )
            del item["parentReference"]
            item["parentReference"] = {"driveId": o.drive_id, "driveType": "business"}
            return item
        if pos < folders:
            name = f"{TOPICS[h % len(TOPICS)]} {pos}"
            item.update(name=name, size=0, folder={"childCount": 0}, webUrl=f"{base_url}/{name}")
            item["parentReference"]["id"] = coll.id_of(0)
            return item
        parent = 1 + pos % (folders - 1) if folders > 1 else 0
        ext = ("docx", "xlsx", "pdf", "txt", "pptx")[h % 5]
        mime = {
            "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "pdf": "application/pdf",
            "txt": "text/plain",
            "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        }
        name = f"{TOPICS[(h >> 5) % len(TOPICS)]} {pos}.{ext}"
        digest = base64.b64encode(mix(h, 3).to_bytes(8, "big") * 2 + b"\0\0\0\0").decode()
        item.update(
            name=name,
            size=1024 + h % 2_000_000,
            webUrl=f"{base_url}/{name}",
            file={"mimeType": mime[ext], "hashes": {"quickXorHash": digest}},
        )
        item["parentReference"]["id"] = coll.id_of(parent)
        return item

    def stamp(self, coll: Collection, item: Item, pos: int, version: int, now: float) -> None:
        item["eTag"] = f'"{{{item["id"]}}},{version}"'
        item["cTag"] = f'"c:{{{item["id"]}}},{version}"'
        item["lastModifiedDateTime"] = iso(now)


class DirectoryKind(ItemKind):
    """Users and groups: only explicit items, given whole by the scenario or the control API."""

    def __init__(self, odata_type: str) -> None:
        self.odata_type = odata_type

    def generate(self, coll: Collection, pos: int) -> Item:
        return {"id": coll.id_of(pos)}
