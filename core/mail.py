"""Notices by e-mail: rendered from templates, sent one by one or as a batch.

A notice named `name` is two Django templates, `emails/<name>_subject.txt` and
`emails/<name>.txt`. Both are plain text, so they are rendered without HTML escaping: an app
called "R&D" stays "R&D". The subject is put on one line and prefixed with SUBJECT_PREFIX.
Notices go from DEFAULT_FROM_EMAIL, and sending errors are raised, not swallowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.mail import send_mail, send_mass_mail
from django.template import Context
from django.template.loader import get_template

SUBJECT_PREFIX = "[Graphport] "


@dataclass(frozen=True)
class Notice:
    """One rendered notice and who it goes to."""

    subject: str
    body: str
    recipients: tuple[str, ...]


def _render(template_name: str, context: Mapping[str, Any]) -> str:
    # The Django engine's own template, rendered with autoescaping off: these are not HTML.
    template = get_template(template_name).template
    return template.render(Context(dict(context), autoescape=False))


def render(name: str, context: Mapping[str, Any], recipients: Iterable[str]) -> Notice:
    """The notice `name` rendered with `context`, addressed to `recipients`."""
    subject = " ".join(_render(f"emails/{name}_subject.txt", context).split())
    body = _render(f"emails/{name}.txt", context).strip("\n") + "\n"
    return Notice(SUBJECT_PREFIX + subject, body, tuple(recipients))


def send(notice: Notice) -> int:
    """Send one notice as one message to all its recipients; nothing when it has none."""
    if not notice.recipients:
        return 0
    return send_mail(
        notice.subject, notice.body, None, list(notice.recipients), fail_silently=False
    )


def send_batch(notices: Iterable[Notice]) -> int:
    """Send notices over one connection (`send_mass_mail`), one message per notice; those
    without recipients are left out. Returns how many messages went out."""
    messages = [
        (notice.subject, notice.body, None, list(notice.recipients))
        for notice in notices
        if notice.recipients
    ]
    if not messages:
        return 0
    return send_mass_mail(messages, fail_silently=False)
