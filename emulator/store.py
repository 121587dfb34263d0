"""Item collections that generate their content lazily and remember every change.

A collection is a row of positions. Positions below `base_count` hold generated items, computed
from the position when asked for, so a 50,000-message mailbox costs nothing until it is read.
Added items take the next positions; changed and deleted items are kept aside. Every change is
logged with a store-wide sequence number: a delta token is just such a number.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

Item = dict[str, Any]
ChangeListener = Callable[["Collection", str, str, Item | None], None]


class ItemKind(ABC):
    """How one resource type (message, event, ...) generates and stamps its items."""

    odata_type = ""

    @abstractmethod
    def generate(self, coll: Collection, pos: int) -> Item:
        """The item at `pos` of a collection, the same for the same seed every time."""

    def stamp(  # noqa: B027 (a hook: kinds with version-dependent fields override it)
        self, coll: Collection, item: Item, pos: int, version: int, now: float
    ) -> None:
        """Refresh version-dependent fields (etag, changeKey, lastModifiedDateTime)."""


class Collection:
    def __init__(
        self,
        store: Store,
        key: str,
        kind: ItemKind,
        prefix: str,
        base_count: int = 0,
        owner: Any = None,
    ) -> None:
        self.store = store
        self.key = key
        self.kind = kind
        self.prefix = prefix
        self.base_count = base_count
        self.total = base_count
        self.owner = owner
        self.overrides: dict[int, Item] = {}
        self.versions: dict[int, int] = {}
        self.deleted: dict[int, Item] = {}
        self.explicit_ids: dict[str, int] = {}
        self.explicit_pos: dict[int, str] = {}
        self.log_seqs: list[int] = []
        self.log_pos: list[int] = []
        self.epoch = 0
        self.created_seq = store.seq

    # identity of items

    def id_of(self, pos: int) -> str:
        explicit = self.explicit_pos.get(pos)
        if explicit is not None:
            return explicit
        return f"{self.prefix}{pos:07X}AAA="

    def pos_of(self, item_id: str) -> int | None:
        pos = self.explicit_ids.get(item_id)
        if pos is not None:
            return pos
        if not item_id.startswith(self.prefix) or len(item_id) != len(self.prefix) + 11:
            return None
        try:
            pos = int(item_id[len(self.prefix) : len(self.prefix) + 7], 16)
        except ValueError:
            return None
        return pos if 0 <= pos < self.total else None

    # reading

    def get(self, pos: int) -> Item | None:
        if pos in self.deleted:
            return None
        found = self.overrides.get(pos)
        if found is not None:
            return found
        if pos < self.base_count:
            return self.kind.generate(self, pos)
        return None

    def get_by_id(self, item_id: str) -> Item | None:
        pos = self.pos_of(item_id)
        return None if pos is None else self.get(pos)

    def live_count(self) -> int:
        return self.total - len(self.deleted)

    def scan(
        self, start: int, limit: int, keep: Callable[[Item], bool] | None = None
    ) -> tuple[list[Item], int | None]:
        """Up to `limit` live items from position `start`; also the position to continue from."""
        out: list[Item] = []
        pos = start
        total = self.total
        deleted = self.deleted
        overrides = self.overrides
        generate = self.kind.generate
        while pos < total and len(out) < limit:
            if pos not in deleted:
                item = overrides.get(pos)
                if item is None and pos < self.base_count:
                    item = generate(self, pos)
                if item is not None and (keep is None or keep(item)):
                    out.append(item)
            pos += 1
        return out, (pos if pos < total else None)

    def ids(self) -> Iterator[str]:
        for pos in range(self.total):
            if pos not in self.deleted:
                yield self.id_of(pos)

    def changed_between(self, after: int, upto: int) -> list[int]:
        """Positions changed in (after, upto], each once, in the order of its last change."""
        lo = bisect.bisect_right(self.log_seqs, after)
        hi = bisect.bisect_right(self.log_seqs, upto)
        last: dict[int, int] = {}
        for i in range(lo, hi):
            last[self.log_pos[i]] = i
        return sorted(last, key=last.__getitem__)

    def tombstone(self, pos: int) -> Item | None:
        return self.deleted.get(pos)

    # writing

    def _log(self, pos: int) -> None:
        self.log_seqs.append(self.store.next_seq())
        self.log_pos.append(pos)

    def add(self, fields: Item | None = None, item_id: str | None = None) -> Item:
        pos = self.total
        self.total += 1
        if item_id is not None:
            self.explicit_ids[item_id] = pos
            self.explicit_pos[pos] = item_id
        item = self.kind.generate(self, pos)
        item.update(fields or {})
        item["id"] = self.id_of(pos)
        self.versions[pos] = 1
        self.kind.stamp(self, item, pos, 1, self.store.clock())
        self.overrides[pos] = item
        self._log(pos)
        self.store.changed(self, "created", item["id"], item)
        return item

    def update(self, item_id: str, fields: Item) -> Item | None:
        pos = self.pos_of(item_id)
        current = None if pos is None else self.get(pos)
        if pos is None or current is None:
            return None
        item = {**current, **fields, "id": current["id"]}
        version = self.versions.get(pos, 1) + 1
        self.versions[pos] = version
        self.kind.stamp(self, item, pos, version, self.store.clock())
        self.overrides[pos] = item
        self._log(pos)
        self.store.changed(self, "updated", item["id"], item)
        return item

    def delete(self, item_id: str) -> bool:
        pos = self.pos_of(item_id)
        current = None if pos is None else self.get(pos)
        if pos is None or current is None:
            return False
        self.deleted[pos] = current
        self.overrides.pop(pos, None)
        self._log(pos)
        self.store.changed(self, "deleted", item_id, current)
        return True


class Store:
    """All collections, the sequence clock and the listeners told about changes."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seq = 0
        self.collections: dict[str, Collection] = {}
        self.listeners: list[ChangeListener] = []

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def register(self, coll: Collection) -> Collection:
        self.collections[coll.key] = coll
        return coll

    def changed(self, coll: Collection, change_type: str, item_id: str, item: Item | None) -> None:
        for listener in self.listeners:
            listener(coll, change_type, item_id, item)
