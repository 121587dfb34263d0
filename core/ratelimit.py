"""Counting requests against a budget in Redis, shared by every web process, and telling who
sent a request."""

from __future__ import annotations

import ipaddress

import redis
from django.conf import settings
from django.http import HttpRequest

from core import redis_client


def client_ip(request: HttpRequest) -> str | None:
    """The address a request came from, as far as we can trust it: REMOTE_ADDR, unless the
    portal sits behind a proxy it trusts (USE_X_FORWARDED_PROTO, which sets
    SECURE_PROXY_SSL_HEADER): then the last X-Forwarded-For entry, the one that proxy added
    (those before it are whatever the client sent). None when it is not an address."""
    address = request.META.get("REMOTE_ADDR") or ""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        address = forwarded.rsplit(",", 1)[-1].strip() or address
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def sender(request: HttpRequest) -> str:
    """Who a request counts against: its trusted address (client_ip), an IPv6
    sender by its /64, the block one customer line is given."""
    address = client_ip(request)
    if address is None:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return address


def over_budget(key: str, limit: int, window_seconds: int, cost: int = 1) -> float | None:
    """Count `cost` (one request, say; 0 only looks) under `key` in a fixed window; the seconds
    until the window ends when the count is over `limit`, else None. Without Redis nothing is
    counted and None is answered: the request goes on (and if it needs Redis, it says so)."""
    try:
        with redis_client.shared().pipeline() as pipe:
            pipe.set(key, 0, ex=window_seconds, nx=True)
            pipe.incrby(key, cost)
            pipe.pttl(key)
            _, count, ttl_ms = pipe.execute()
    except redis.RedisError:
        return None
    if count <= limit:
        return None
    return max(ttl_ms, 0) / 1000
