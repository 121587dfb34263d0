"""Directory groups: their Graph items, and membership changes as `/groups/delta` reports them."""

from __future__ import annotations

from typing import Any

from emulator.directory import DirectoryError, stable_guid
from emulator.generate import iso
from emulator.store import Collection, Item
from emulator.world import World

USER_TYPE = "#microsoft.graph.user"


def group_item(world: World, tenant_id: str, spec: dict[str, Any]) -> Item:
    """`members`: user ids or UPNs; `member_ids`: user ids taken as they are (big groups)."""
    tenant = world.directory.tenants[tenant_id]
    name = spec.get("display_name") or spec.get("displayName") or "Group"
    members = list(spec.get("member_ids", []))
    for ref in spec.get("members", []):
        user = world.directory.find_user(ref)
        if user is None:
            raise DirectoryError(f"group member {ref!r} is not a user")
        members.append(user.id)
    nick = "".join(ch for ch in name.lower() if ch.isalnum())
    security = bool(spec.get("security_enabled", False))
    return {
        "createdDateTime": iso(world.base_time - 86400 * 90),
        "description": spec.get("description", f"{name} team"),
        "displayName": name,
        "groupTypes": spec.get("group_types", [] if security else ["Unified"]),
        "mail": f"{nick}@{tenant.domain}",
        "mailEnabled": True,
        "mailNickname": nick,
        "securityEnabled": security,
        "_members": members,
    }


def add_group(world: World, tenant_id: str, spec: dict[str, Any]) -> Item:
    item = group_item(world, tenant_id, spec)
    group_id = spec.get("id") or stable_guid(world.seed, "group", tenant_id, item["displayName"])
    coll = world.groups_collection(tenant_id)
    if coll.get_by_id(group_id) is not None:
        raise DirectoryError(f"group {group_id} ({item['displayName']}) already exists")
    return coll.add(item, item_id=group_id)


def set_members(coll: Collection, group_id: str, member_ids: list[str], **fields: Any) -> Item:
    """Replace a group's members (and any other fields): the group's next delta reports only
    the membership changes, removals with `@removed`."""
    current = coll.get_by_id(group_id)
    if current is None:
        raise KeyError(group_id)
    old = current.get("_members", [])
    old_set, new_set = set(old), set(member_ids)
    changes = [{"@odata.type": USER_TYPE, "id": m} for m in member_ids if m not in old_set]
    changes += [
        {"@odata.type": USER_TYPE, "id": m, "@removed": {"reason": "deleted"}}
        for m in old
        if m not in new_set
    ]
    item = coll.update(group_id, {**fields, "_members": member_ids, "_members_delta": changes})
    assert item is not None
    return item


def find_group(world: World, ref: str) -> tuple[str, str] | None:
    """(tenant id, group id) of a group named by id or mail address."""
    ref_l = ref.lower()
    for tenant_id, coll in world.tenant_groups.items():
        if coll.get_by_id(ref) is not None:
            return tenant_id, ref
        groups, _ = coll.scan(0, coll.total)
        for group in groups:
            if str(group.get("mail", "")).lower() == ref_l:
                return tenant_id, group["id"]
    return None
