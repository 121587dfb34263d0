"""Outbound HTTP to the identity platform and Graph: one session that refuses internal
destinations, never follows a redirect, and sends nothing over plain http:// unless the operator
allowed it.

A custom cloud's login and Graph URLs are typed by a person, and whoever runs those hosts writes
the answers (docs/microsoft.md, "Endpoints and clouds"). Without these rules a token request, with
the client secret in its body, could be aimed at a service inside the portal's own network: by an
address, by a name that resolves to one, or by a redirect from an outside host. The rules hold
for every cloud; Microsoft's own hosts never need an exception.

Addresses are checked where the socket is opened: the name is resolved once, every address is
checked, and the connection goes to a checked address, so a DNS answer that changes between a
check and the connection (rebinding) gains nothing. Through a proxy the proxy connects, so the
target's name is resolved and checked just before the request is handed to it.

`MICROSOFT_ALLOW_INTERNAL_HOSTS` lifts the address rule and `MICROSOFT_ALLOW_HTTP` the https rule,
both for a local emulator only.

Other destinations typed by a person, such as a tenant's webhook receivers (docs/architecture.md,
"Outgoing webhooks"), use the same session with other `Rules`: `AllowList` lifts the address rule
only for the hosts an operator listed in a setting, whatever MICROSOFT_ALLOW_INTERNAL_HOSTS says.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import partial
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError


class Refused(requests.RequestException):
    """Graphport will not send this request, or will not take its answer. Not transient: the
    URL (an app registration's) must change. `host` names the destination for messages."""

    def __init__(self, message: str, *, host: str, **kwargs):
        super().__init__(message, **kwargs)
        self.host = host


class InternalHost(Refused):
    """The destination is inside the network (loopback, private, link-local, …), or the URL
    carries user info. Callers report it exactly as an unreachable host, so that what an
    administrator reads cannot tell a closed port from an open one."""


class PlainHttp(Refused):
    """An http:// URL while MICROSOFT_ALLOW_HTTP is off: tokens and secrets would travel in
    clear text."""


class Redirected(Refused):
    """The answer was a redirect. None is followed: a redirect could carry a token request, its
    secret with it, to another host or to plain http://."""


def allow_internal() -> bool:
    return bool(settings.MICROSOFT_ALLOW_INTERNAL_HOSTS)


def allow_http() -> bool:
    return bool(settings.MICROSOFT_ALLOW_HTTP)


def normal_host(host: str) -> str:
    """A host name or address as the allow-lists compare it: lower case, no brackets around an
    IPv6 address, no trailing dot, an address in its canonical form."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class Rules:
    """Where a guarded session may go besides public addresses. These, the default, are the
    rules for Microsoft's hosts: the address rule lifted for every host by
    MICROSOFT_ALLOW_INTERNAL_HOSTS."""

    #: what a refused URL's message adds about lifting each rule
    internal_hint = "Only a local emulator may use one, when MICROSOFT_ALLOW_INTERNAL_HOSTS is set."
    http_hint = (
        "Plain http:// is only allowed for a local emulator, when MICROSOFT_ALLOW_HTTP is set."
    )

    def internal_allowed(self, host: str) -> bool:
        return allow_internal()


class AllowList(Rules):
    """The address rule lifted only for the hosts (names or addresses, as written in URLs) that
    the setting named `setting` lists. Read at every check, so a changed setting applies to
    sessions already open."""

    http_hint = "Plain http:// is only allowed in development, when MICROSOFT_ALLOW_HTTP is set."

    def __init__(self, setting: str):
        self.setting = setting
        self.internal_hint = f"Add the host to {setting} to allow it."

    def internal_allowed(self, host: str) -> bool:
        listed = getattr(settings, self.setting)
        return bool(listed) and normal_host(host) in {normal_host(item) for item in listed}


MICROSOFT = Rules()


def host_of(url: str) -> str:
    """`host` or `host:port` of a URL, without any user info: what messages name."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def is_internal(address: str) -> bool:
    """Whether an IP address is one no outside service has: loopback, private, link-local,
    multicast, reserved, unspecified, shared (carrier-grade NAT) or documentation, for IPv4 and
    IPv6, including IPv4 addresses carried inside IPv6 (mapped, 6to4, Teredo)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # not an address we can judge: refuse rather than guess
    embedded: list[ipaddress.IPv4Address] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
    return any(
        not candidate.is_global
        or candidate.is_multicast
        or candidate.is_private
        or candidate.is_loopback
        or candidate.is_link_local
        or candidate.is_reserved
        or candidate.is_unspecified
        for candidate in (ip, *embedded)
    )


def _addresses(host: str, port: int | None) -> list[str]:
    """Every address `host` resolves to; socket.gaierror when it resolves to none."""
    infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _internal_among(host: str, port: int | None) -> str | None:
    """The first internal address `host` resolves to, or None. A name that does not resolve
    is no one's address: None (the request itself will fail to connect)."""
    try:
        addresses = _addresses(host, port)
    except (socket.gaierror, UnicodeError):
        return None
    return next((address for address in addresses if is_internal(address)), None)


def problem(url: str, rules: Rules = MICROSOFT) -> str | None:
    """Why `url` may not be a base URL of the identity platform or Graph (or, with other
    `rules`, another destination), in words for the administrator who typed it, or None.
    Checked when an app registration is saved; every request checks again, since what a name
    resolves to can change."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return "Must be an https:// URL."
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return (
            "Must not contain a user name or password (user@host): the host is what follows "
            "the @, whatever precedes it."
        )
    if not parts.hostname:
        return "Must name a host."
    if parts.scheme == "http" and not allow_http():
        return f"Must be https://. {rules.http_hint}"
    if rules.internal_allowed(parts.hostname):
        return None
    try:
        port = parts.port
    except ValueError:
        return "The port is not a number between 0 and 65535."
    address = _internal_among(parts.hostname, port)
    if address is not None:
        return (
            f"{parts.hostname} is an internal address ({address}): loopback, private, "
            f"link-local and other non-public addresses are refused. {rules.internal_hint}"
        )
    return None


def check_request(url: str, rules: Rules = MICROSOFT) -> None:
    """What can be told from the URL alone, before anything is sent: Refused if it may not
    be requested."""
    parts = urlsplit(url)
    host = host_of(url)
    if parts.scheme not in ("https", "http"):
        raise Refused(f"{host}: only https:// URLs are requested", host=host)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InternalHost(f"{host}: a URL with user info is refused", host=host)
    if parts.scheme == "http" and not allow_http():
        raise PlainHttp(
            f"{host}: refused to send a request over plain http:// (MICROSOFT_ALLOW_HTTP is off)",
            host=host,
        )
    if (
        parts.hostname
        and _is_literal_internal(parts.hostname)
        and not rules.internal_allowed(parts.hostname)
    ):
        raise InternalHost(f"{host}: an internal address is refused", host=host)


def _is_literal_internal(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname.split("%", 1)[0])
    except ValueError:
        return False
    return is_internal(hostname)


class _Blocked(Exception):
    """Raised where urllib3 opens a socket. Deliberately not an OSError, which urllib3 would
    wrap and retry; the adapter turns it into InternalHost."""


class _GuardedConnectionMixin:
    """Resolve, check every address, then connect to a checked address (never resolve twice)."""

    rules: Rules = MICROSOFT  # set by the pool that makes the connection

    def _new_conn(self) -> socket.socket:
        if self.proxy is not None or self.rules.internal_allowed(self.host):
            return super()._new_conn()
        try:
            addresses = _addresses(self._dns_host, self.port)
        except (socket.gaierror, UnicodeError) as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        internal = next((address for address in addresses if is_internal(address)), None)
        if internal is not None:
            raise _Blocked(f"{self.host} resolves to an internal address ({internal})")
        name, last = self._dns_host, None
        for address in addresses:
            # urllib3 connects to `_dns_host`; TLS still checks the certificate against `host`
            # as it was before this swap.
            self._dns_host = address
            try:
                return super()._new_conn()
            except OSError as exc:  # urllib3's NewConnectionError, ConnectTimeoutError
                last = exc
            finally:
                self._dns_host = name
        assert last is not None
        raise last


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedPoolMixin:
    """A pool that hands its session's rules to every connection it makes."""

    def __init__(self, *args, rules: Rules = MICROSOFT, **kwargs):
        super().__init__(*args, **kwargs)
        self.rules = rules

    def _new_conn(self):
        connection = super()._new_conn()
        connection.rules = self.rules
        return connection


class _GuardedHTTPPool(_GuardedPoolMixin, HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(_GuardedPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, rules: Rules = MICROSOFT):
        self.rules = rules  # before HTTPAdapter.__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        # The pool manager calls these with (host, port, **context); the rules ride along.
        self.poolmanager.pool_classes_by_scheme = {
            "http": partial(_GuardedHTTPPool, rules=self.rules),
            "https": partial(_GuardedHTTPSPool, rules=self.rules),
        }

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        host = host_of(request.url)
        parts = urlsplit(request.url)
        # Through a proxy the proxy connects, and the pools above are not used: check the
        # target's addresses here, as late as this process can.
        if select_proxy(request.url, proxies) and not self.rules.internal_allowed(
            parts.hostname or ""
        ):
            address = _internal_among(parts.hostname or "", parts.port)
            if address is not None:
                raise InternalHost(
                    f"{host} resolves to an internal address ({address})",
                    host=host,
                    request=request,
                )
        try:
            return super().send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
        except _Blocked as exc:
            raise InternalHost(str(exc), host=host, request=request) from None


class Guarded:
    """Mixin for a requests.Session or a subclass of it (requests-oauthlib's OAuth2Session):
    every request is checked before it is sent, never follows a redirect, and a redirect answer
    raises Redirected. `rules` say which internal hosts it may reach (MICROSOFT by default)."""

    def __init__(self, *args, rules: Rules = MICROSOFT, **kwargs):
        super().__init__(*args, **kwargs)
        self.rules = rules
        adapter = _GuardedAdapter(rules)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method, url, *args, **kwargs):
        check_request(url, self.rules)
        kwargs["allow_redirects"] = False
        response = super().request(method, url, *args, **kwargs)
        if 300 <= response.status_code < 400:
            host = host_of(url)
            response.close()
            raise Redirected(
                f"{host} answered with a redirect (HTTP {response.status_code}), which "
                "Graphport does not follow",
                host=host,
                response=response,
            )
        return response


class Session(Guarded, requests.Session):
    """A requests session under the outbound rules: the only one for Microsoft's hosts."""
