"""Small ways of putting numbers and states into words, shared by pages, the admin and notices."""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.text import Truncator

#: what a badge's tone looks like; every status in the product maps to one of these
TONE_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "bad": "#cf222e", "none": "#57606a"}


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """`1 day`, `2 days`, `0 days`; `plural_noun` for nouns that do not just take an s."""
    word = noun if count == 1 else (plural_noun or f"{noun}s")
    return f"{count:,} {word}"


def days_left(days: int) -> str:
    """How an expiry `days` ahead reads: `expires today`, `expires in 1 day`, `in 7 days`."""
    return "expires today" if days == 0 else f"expires in {plural(days, 'day')}"


def interval(seconds: int) -> str:
    """A schedule interval in its roundest unit: `6 h`, `15 min`, `90 s`."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def short(text: str, length: int = 80) -> str:
    """One line of a long text for a list column; a dash for none."""
    return Truncator(text).chars(length) if text else "—"


def badge(text: str, tone: str) -> str:
    """A small coloured label (admin lists and pages); `tone` is a key of TONE_COLOURS."""
    return format_html(
        '<span class="gp-badge" style="background:{};color:#fff;border-radius:8px;'
        'padding:1px 8px;white-space:nowrap">{}</span>',
        TONE_COLOURS[tone],
        text,
    )
