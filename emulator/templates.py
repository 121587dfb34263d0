"""The few HTML pages of the login host: sign-in + consent, admin consent, errors, form_post."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """<style>
body{font-family:"Segoe UI",Arial,sans-serif;background:#f2f2f2;margin:0}
main{background:#fff;max-width:440px;margin:60px auto;padding:44px;box-shadow:0 2px 6px #0003}
h1{font-size:24px;font-weight:600;margin:0 0 16px}label{display:block;padding:8px 0}
.small{font-size:13px;color:#555}button{padding:8px 24px;margin:16px 8px 0 0;font-size:15px}
#accept{background:#0067b8;color:#fff;border:0}code{word-break:break-all}
</style>"""


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title>{STYLE}</head><body><main>{body}</main></body></html>"
    )


def sign_in_page(
    app_name: str,
    users: list[Any],
    scopes: list[str],
    params: str,
    selected: str | None,
    admin_consent: bool = False,
) -> str:
    rows = []
    for i, user in enumerate(users):
        checked = " checked" if (user.id == selected or (selected is None and i == 0)) else ""
        mfa = " (multi-factor authentication)" if user.mfa_required_since is not None else ""
        admin = " · administrator" if user.is_admin else ""
        rows.append(
            f'<label><input type="radio" name="user" value="{escape(user.id)}"{checked}> '
            f'{escape(user.display_name)} <span class="small">{escape(user.upn)}{admin}{mfa}'
            "</span></label>"
        )
    if not rows:
        rows.append("<p>No account in this directory can sign in to this application.</p>")
    title = "Permissions requested" + (" for your organisation" if admin_consent else "")
    items = "".join(f"<li>{escape(s)}</li>" for s in scopes)
    return page(
        "Sign in to your account",
        f'<h1>Sign in</h1><p class="small">Microsoft identity platform emulator</p>'
        f'<form method="post"><input type="hidden" name="params" value="{escape(params)}">'
        f"<fieldset><legend>Pick an account</legend>{''.join(rows)}</fieldset>"
        f"<h2>{title}</h2><p><b>{escape(app_name)}</b> would like to:</p><ul>{items}</ul>"
        '<button id="accept" type="submit" name="action" value="accept">Accept</button>'
        '<button id="cancel" type="submit" name="action" value="cancel">Cancel</button></form>',
    )


def error_page(code: int, message: str) -> str:
    return page(
        "Sign in to your account",
        "<h1>Sorry, but we're having trouble signing you in.</h1>"
        f'<p id="error-code">AADSTS{code}: {escape(message)}</p>',
    )


def form_post_page(action: str, fields: dict[str, str]) -> str:
    inputs = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    return (
        "<html><head><title>Working...</title></head><body>"
        f'<form method="POST" name="hiddenform" action="{escape(action)}">{inputs}'
        "<noscript><p>Script is disabled. Click Submit to continue.</p>"
        '<input type="submit" value="Submit"></noscript></form>'
        "<script>window.setTimeout(function(){document.forms[0].submit()},0)</script>"
        "</body></html>"
    )


def signed_out_page() -> str:
    return page("Signed out", "<h1>You signed out of your account</h1>")
