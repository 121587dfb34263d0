"""Generated organisations: thousands of users with modest mailboxes, in department groups.

A tenant spec's `population` (or `POST /_emulator/tenants/{tenant}/population`) adds `users`
users named `first.last.N@domain`, each with the same item counts (`data`), spread round-robin
over one group per department, all of them in an all-staff group too. Items cost nothing until
read (`store.Collection`), the users share one `data` dict, and mailboxes are built on first
use (`World.mailbox`): building stays a few string operations per user.
"""

from __future__ import annotations

import time
from typing import Any

from emulator.directory import DirectoryError, User, stable_guid
from emulator.generate import FIRST, LAST
from emulator.groups import add_group, set_members
from emulator.world import World

DEPARTMENTS = (
    "Sales",
    "Marketing",
    "Finance",
    "Engineering",
    "Operations",
    "Human Resources",
    "Legal",
    "Support",
)
DEFAULT_DATA = {"messages": 200, "events": 50, "contacts": 30, "files": 20}
FIELDS = {"users", "data", "departments", "all_staff_group", "without_mailbox", "disabled"}


def name_of(n: int) -> tuple[str, str]:
    return FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]


def upn_of(n: int, domain: str) -> str:
    first, last = name_of(n)
    return f"{first}.{last}.{n}@{domain}".lower()


def spread(count: int, picks: int, offset: int = 0) -> set[int]:
    """`picks` positions out of `count`, evenly spaced (the same ones every time)."""
    picks = min(max(picks, 0), count)
    return {(offset + i * count // picks) % count for i in range(picks)} if picks else set()


def department_names(value: Any) -> list[str]:
    if isinstance(value, list):
        names = [str(v) for v in value]
    else:
        rounds = [(i % len(DEPARTMENTS), i // len(DEPARTMENTS)) for i in range(int(value))]
        names = [DEPARTMENTS[d] + (f" {r + 1}" if r else "") for d, r in rounds]
    if not names:
        raise DirectoryError("a population needs at least one department")
    return names


def populate(world: World, tenant_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Add the users and their groups; a second call continues the numbering and adds the new
    users to the same groups (their delta reports the additions)."""
    unknown = set(spec) - FIELDS
    if unknown:
        raise DirectoryError(f"unknown population fields: {sorted(unknown)}")
    tenant = world.directory.tenants.get(tenant_id)
    if tenant is None:
        raise DirectoryError(f"tenant {tenant_id} does not exist")
    started = time.perf_counter()
    count = int(spec.get("users", 0))
    data = dict(spec.get("data", DEFAULT_DATA))
    departments = department_names(spec.get("departments", len(DEPARTMENTS)))
    no_mailbox = spread(count, int(spec.get("without_mailbox", 0)))
    disabled = spread(count, int(spec.get("disabled", 0)), offset=max(1, count // 2))
    first_index = tenant.generated_users
    members: dict[str, list[str]] = {name: [] for name in departments}
    for i in range(count):
        n = first_index + i
        first, last = name_of(n)
        upn = upn_of(n, tenant.domain)
        department = departments[n % len(departments)]
        user = User(
            id=stable_guid(world.seed, "user", upn),
            tenant_id=tenant_id,
            upn=upn,
            display_name=f"{first} {last} {n}",
            given_name=first,
            surname=last,
            mailbox=i not in no_mailbox,
            account_enabled=i not in disabled,
            job_title=f"{department} specialist",
            department=department,
            office_location=f"{1 + n % 40}/{1000 + n % 997}",
            data=data,  # shared: nothing writes to a user's data after loading
        )
        world.add_user(user)
        members[department].append(user.id)
    tenant.generated_users += count
    every = [uid for ids in members.values() for uid in ids]
    groups = [join_group(world, tenant_id, name, ids, True) for name, ids in members.items()]
    staff = spec.get("all_staff_group", True)
    if staff:
        name = staff if isinstance(staff, str) else "All Staff"
        groups.append(join_group(world, tenant_id, name, every, False))
    last_index = first_index + count - 1
    return {
        "users": count,
        "first_upn": upn_of(first_index, tenant.domain) if count else None,
        "last_upn": upn_of(last_index, tenant.domain) if count else None,
        "groups": groups,
        "seconds": round(time.perf_counter() - started, 3),
    }


def join_group(
    world: World, tenant_id: str, name: str, user_ids: list[str], security: bool
) -> dict[str, Any]:
    """The group, created on first use; later users are added to it. Departments are
    mail-enabled security groups (what an Exchange application access policy can be scoped
    to), the all-staff group a Microsoft 365 group."""
    group_id = stable_guid(world.seed, "group", tenant_id, name)
    coll = world.groups_collection(tenant_id)
    current = coll.get_by_id(group_id)
    if current is None:
        spec = {"id": group_id, "display_name": name, "member_ids": user_ids}
        add_group(world, tenant_id, {**spec, "security_enabled": security})
        size = len(user_ids)
    else:
        merged = [*current.get("_members", []), *user_ids]
        set_members(coll, group_id, merged)
        size = len(merged)
    return {"id": group_id, "display_name": name, "members": size}
