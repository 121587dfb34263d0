"""A small synchronous client for the control API, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

import requests


class ControlError(RuntimeError):
    pass


class Control:
    def __init__(self, login_url: str, session: requests.Session | None = None) -> None:
        self.base = login_url.rstrip("/") + "/_emulator"
        self.http = session or requests.Session()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.http.request(
            method, self.base + path, json=body, params=params or None, timeout=30
        )
        if response.status_code >= 400:
            raise ControlError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    # scenario and directory

    def state(self) -> dict[str, Any]:
        return self.call("GET", "/state")

    def load_scenario(self, scenario: dict[str, Any]) -> dict[str, Any]:
        return self.call("PUT", "/scenario", scenario)

    def add_tenant(self, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/tenants", fields)

    def add_user(self, tenant: str, **fields: Any) -> dict[str, Any]:
        return self.call("POST", f"/tenants/{tenant}/users", fields)

    def update_user(self, user: str, **fields: Any) -> dict[str, Any]:
        """fields: display_name, job_title, office_location, mobile_phone, given_name,
        surname, department, mailbox, mailbox_inactive, account_enabled, admin."""
        return self.call("PATCH", f"/users/{user}", fields)

    def add_population(
        self,
        tenant: str,
        users: int,
        data: dict[str, int] | None = None,
        departments: int | list[str] | None = None,
        all_staff_group: bool | str = True,
        without_mailbox: int = 0,
        disabled: int = 0,
    ) -> dict[str, Any]:
        """Generated users `first.last.N@domain` with `data` item counts each (messages,
        sent_messages, events, contacts, files), in one group per department and an all-staff
        group. Returns {users, first_upn, last_upn, groups: [{id, display_name, members}],
        seconds}."""
        body: dict[str, Any] = {
            "users": users,
            "all_staff_group": all_staff_group,
            "without_mailbox": without_mailbox,
            "disabled": disabled,
        }
        if data is not None:
            body["data"] = data
        if departments is not None:
            body["departments"] = departments
        return self.call("POST", f"/tenants/{tenant}/population", body)

    def delete_user(self, user: str) -> None:
        self.call("DELETE", f"/users/{user}")

    def add_group(self, tenant: str, **fields: Any) -> dict[str, Any]:
        return self.call("POST", f"/tenants/{tenant}/groups", fields)

    def update_group(self, group_id: str, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/groups/{group_id}", fields)

    def delete_group(self, group_id: str) -> None:
        self.call("DELETE", f"/groups/{group_id}")

    def add_app(self, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/apps", fields)

    def update_app(self, client_id: str, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/apps/{client_id}", fields)

    def add_secret(self, client_id: str, **fields: Any) -> dict[str, Any]:
        return self.call("POST", f"/apps/{client_id}/secrets", fields)

    def set_secret_expiry(self, client_id: str, secret: str, **fields: Any) -> dict[str, Any]:
        """fields: expired=True, expires_in=seconds or expires_at=ISO/epoch."""
        return self.call("PATCH", f"/apps/{client_id}/secrets/{secret}", fields)

    def add_certificate(self, client_id: str, pem: str, thumbprint: str | None = None) -> str:
        body = {"pem": pem, "thumbprint": thumbprint}
        return self.call("POST", f"/apps/{client_id}/certificates", body)["thumbprint"]

    def grant_consent(
        self, tenant: str, client_id: str, user: str | None = None, scopes: list[str] | None = None
    ) -> None:
        self.call(
            "POST",
            "/consents",
            {
                "tenant": tenant,
                "client_id": client_id,
                "admin": user is None,
                "user": user,
                "scopes": scopes or [],
            },
        )

    def revoke_admin_consent(self, tenant: str, client_id: str) -> bool:
        return self.call("POST", "/consents/revoke", {"tenant": tenant, "client_id": client_id})[
            "revoked"
        ]

    def set_access_policy(
        self,
        client_id: str,
        deny: list[str] | None = None,
        restrict_to: list[str] | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any] | None:
        """Exchange's application access policy for the app in one tenant: mailboxes as user
        ids or UPNs, or groups by id or mail address. Neither list removes the app's policy
        (in `tenant`, else everywhere). Returns {tenant, mode, users, groups} or None."""
        body: dict[str, Any] = {}
        if deny is not None:
            body["deny"] = deny
        if restrict_to is not None:
            body["restrict_to"] = restrict_to
        if tenant is not None:
            body["tenant"] = tenant
        return self.call("PUT", f"/apps/{client_id}/access-policy", body)["policy"]

    def revoke_grant(
        self, user: str, client_id: str | None = None, access_tokens: bool = False
    ) -> int:
        body = {"user": user, "client_id": client_id, "access_tokens": access_tokens}
        return self.call("POST", "/grants/revoke", body)["revoked_grants"]

    def require_mfa(
        self, user: str, required: bool = True, error: str = "interaction_required"
    ) -> None:
        self.call("POST", f"/users/{user}/mfa", {"required": required, "error": error})

    # policies and faults

    def settings(self, **values: Any) -> dict[str, Any]:
        """access_token_lifetime, refresh_rotation, code_lifetime, token_latency_ms, ..."""
        return self.call("PATCH", "/settings", values)

    def token_outage(
        self,
        status: int = 503,
        count: int | None = None,
        duration: float | None = None,
        error: str = "temporarily_unavailable",
        retry_after: float | None = None,
    ) -> None:
        self.call(
            "PUT",
            "/token-endpoint/outage",
            {
                "status": status,
                "count": count,
                "duration": duration,
                "error": error,
                "retry_after": retry_after,
            },
        )

    def clear_token_outage(self) -> None:
        self.call("DELETE", "/token-endpoint/outage")

    def rotate_keys(self, keep_old: bool = True) -> str:
        return self.call("POST", "/keys/rotate", {"keep_old": keep_old})["kid"]

    def throttle(self, scope: str, **body: Any) -> dict[str, Any]:
        """Set one throttling scope's limit: app, mailbox, tenant (directory), drive or
        subscriptions; `client_id` defaults to `*` (any app). Returns the policy."""
        return self.call("PUT", f"/throttling/{scope}", body)

    def throttle_app(
        self, client_id: str = "*", budget: int = 130_000, window_seconds: float = 10
    ) -> dict[str, Any]:
        """Requests per window for the app across all tenants."""
        return self.throttle(
            "app", client_id=client_id, budget=budget, window_seconds=window_seconds
        )

    def throttle_mailbox(
        self, client_id: str = "*", mailbox: str = "*", **policy: Any
    ) -> dict[str, Any]:
        """policy: budget, window_seconds, max_in_flight, rate_429, rate_503, rate_504,
        retry_after (seconds|date|none), retry_after_seconds, latency_ms."""
        return self.throttle("mailbox", client_id=client_id, mailbox=mailbox, **policy)

    def throttle_tenant(
        self,
        client_id: str,
        tenant: str,
        ru_budget: int | None,
        window_seconds: float | None = None,
    ) -> None:
        """Directory resource units per window (10 s) for the app in the tenant; None: by
        the tenant's size, as Microsoft."""
        body: dict[str, Any] = {"client_id": client_id, "tenant": tenant, "ru_budget": ru_budget}
        if window_seconds is not None:
            body["window_seconds"] = window_seconds
        self.throttle("tenant", **body)

    def throttle_drive(
        self,
        client_id: str = "*",
        tenant: str = "*",
        ru_budget: int | None = None,
        window_seconds: float | None = None,
    ) -> dict[str, Any]:
        """OneDrive resource units per window (60 s) for the app in the tenant; None: by
        the tenant's licence count, as Microsoft."""
        body: dict[str, Any] = {"client_id": client_id, "tenant": tenant, "ru_budget": ru_budget}
        if window_seconds is not None:
            body["window_seconds"] = window_seconds
        return self.throttle("drive", **body)

    def throttle_subscriptions(self, client_id: str = "*", **policy: Any) -> dict[str, Any]:
        """policy: app_budget (2,000), tenant_budget (500), window_seconds (20)."""
        return self.throttle("subscriptions", client_id=client_id, **policy)

    def throttling(self) -> dict[str, Any]:
        """The limits set, by scope and `client:target`."""
        return self.call("GET", "/throttling")

    # sign-in without a browser

    def sign_in(
        self, authorize_url: str, user: str, action: str = "accept", mfa: bool = True
    ) -> dict[str, Any]:
        """{"type": "redirect", "url", "params"} | {"type": "form_post", "action", "fields"} |
        {"type": "error_page", "status", "error_code", "message"}."""
        return self.call(
            "POST",
            "/sign-in",
            {"authorize_url": authorize_url, "user": user, "action": action, "mfa": mfa},
        )

    # data

    def items(
        self, user: str, kind: str, folder: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if folder:
            params["folder"] = folder
        return self.call("GET", f"/users/{user}/{kind}", None, **params)

    def add_items(
        self,
        user: str,
        kind: str,
        count: int = 1,
        folder: str | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> list[str]:
        body = {"count": count, "folder": folder, "items": items}
        return self.call("POST", f"/users/{user}/{kind}", body)["ids"]

    def add_contact_folder(self, user: str, display_name: str, count: int = 0) -> dict[str, str]:
        """A subfolder of the user's default Contacts folder: its `id`, and the default
        folder's (`default_folder_id`)."""
        body = {"display_name": display_name, "count": count}
        return self.call("POST", f"/users/{user}/contact-folders", body)

    def update_item(self, user: str, kind: str, item_id: str, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/users/{user}/{kind}/{item_id}", fields)

    def delete_item(self, user: str, kind: str, item_id: str) -> None:
        self.call("DELETE", f"/users/{user}/{kind}/{item_id}")

    def invalidate_delta(self, **target: Any) -> list[str]:
        """token= or link=, or user= + resource= (messages|events|contacts|drive),
        or tenant= + resource= (users|groups), or all=True."""
        return self.call("POST", "/delta/invalidate", target)["invalidated"]

    # observation

    def counters(self) -> dict[str, Any]:
        return self.call("GET", "/counters")

    def mailbox_counters(self, client_id: str, user_id: str) -> dict[str, Any]:
        return self.counters()["mailboxes"].get(f"{client_id}:{user_id}", {})

    def app_counters(self, client_id: str) -> dict[str, Any]:
        return self.counters()["apps"].get(client_id, {})

    def drive_counters(self, client_id: str, tenant_id: str) -> dict[str, Any]:
        return self.counters()["drives"].get(f"{client_id}:{tenant_id}", {})

    def reset_counters(self) -> None:
        self.call("DELETE", "/counters")

    def requests(self, host: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if host:
            params["host"] = host
        return self.call("GET", "/requests", None, **params)["requests"]

    def token_requests(
        self, client_id: str | None = None, grant_type: str | None = None
    ) -> list[dict[str, Any]]:
        rows = self.call("GET", "/token-requests")["token_requests"]
        return [
            r
            for r in rows
            if client_id in (None, r["client_id"]) and grant_type in (None, r["grant_type"])
        ]

    def token_request_count(
        self,
        client_id: str | None = None,
        grant_type: str | None = None,
        user_id: str | None = None,
    ) -> int:
        return sum(
            r["count"]
            for r in self.token_requests(client_id, grant_type)
            if user_id in (None, r["user_id"])
        )

    def introspect(self, access_token: str) -> dict[str, Any]:
        return self.call("POST", "/access-tokens/introspect", {"token": access_token})

    def expire_access_tokens(self, token: str | None = None, client_id: str | None = None) -> int:
        body = {"token": token, "client_id": client_id}
        return self.call("POST", "/access-tokens/expire", body)["expired"]

    def subscriptions(self) -> dict[str, Any]:
        return self.call("GET", "/subscriptions")

    def fire_lifecycle(self, subscription_id: str, event: str) -> int:
        return self.call("POST", f"/subscriptions/{subscription_id}/lifecycle", {"event": event})[
            "status"
        ]

    def fire_change(
        self, subscription_id: str, change_type: str = "updated", item_id: str | None = None
    ) -> int:
        body = {"changeType": change_type, "item_id": item_id}
        return self.call("POST", f"/subscriptions/{subscription_id}/notify", body)["status"]
