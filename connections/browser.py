"""What ties a trip to Microsoft to the browser that started it, and where it may come back to."""

from __future__ import annotations

from django.utils.http import url_has_allowed_host_and_scheme

# The states of the sign-ins and connect sessions this browser started, newest last (a few, for
# several tabs): the callback completes only those when nobody is signed in
# (connections.connect.claim).
SESSION_STATES = "graphport.connect_session_states"
SESSION_STATES_KEPT = 5


def remember_state(request, state: str) -> None:
    kept = list(request.session.get(SESSION_STATES, ()))[-(SESSION_STATES_KEPT - 1) :]
    request.session[SESSION_STATES] = [*kept, state]


def forget_state(request, state: str) -> None:
    request.session[SESSION_STATES] = [
        s for s in request.session.get(SESSION_STATES, ()) if s != state
    ]


def states(request) -> frozenset[str]:
    return frozenset(request.session.get(SESSION_STATES, ()))


def safe_return_path(request, candidate: str | None, default: str) -> str:
    """Same-origin paths only: anything else (another host, a scheme, //evil) is dropped."""
    if (
        candidate
        and url_has_allowed_host_and_scheme(candidate, allowed_hosts=None, require_https=False)
        and candidate.startswith("/")
        and not candidate.startswith("//")
    ):
        return candidate
    return default
