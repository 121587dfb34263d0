"""One tenant cannot reach into another's syncing or data: throttle budgets and cooldowns belong to
an app registration's own row (a client id is public and can be registered twice), a
`Retry-After` is capped, the custom cloud is an operator's setting, and an app with connections
keeps its tenant (README.md, "Security")."""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection, EntraApp
from core import keys
from graphsync.client import GraphClient, shared_throttle
from graphsync.throttle import MAX_COOLDOWN_SECONDS, Grant, ThrottleWait

pytestmark = pytest.mark.django_db

MS_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MAILBOX = "0c7d8e9f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
A_YEAR = 31_536_000


@pytest.fixture
def throttle_keys():
    """Throttle state is in the shared Redis: none from before, none left behind."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)

    def clear() -> None:
        found = list(client.scan_iter(keys.THROTTLE_PREFIX + "*", count=1000))
        if found:
            client.delete(*found)

    clear()
    yield client
    clear()
    client.close()


@pytest.fixture
def throttling_host():
    """A Graph host that answers every request with 429 and a year's Retry-After."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"error": {"code": "TooManyRequests", "message": "Come back next year."}}'
            self.send_response(429)
            self.send_header("Retry-After", str(A_YEAR))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.hits = hits
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def connection_of(app: EntraApp, user) -> Connection:
    return Connection.objects.create(
        app=app,
        user=user,
        ms_tenant_id=MS_TENANT,
        ms_object_id=MAILBOX,
        access_token=f"token-of-app-{app.pk}",
        refresh_token=f"refresh-of-app-{app.pk}",
        access_token_expires_at=timezone.now() + timedelta(hours=1),
    )


@pytest.fixture
def copycat(settings, acme, globex, throttling_host):
    """Acme registers Globex's client id on a custom cloud whose Graph host Acme runs, and
    connects the same Microsoft tenant and mailbox as Globex's member."""
    settings.MICROSOFT_ALLOW_HTTP = True
    settings.MICROSOFT_ALLOW_INTERNAL_HOSTS = True  # Acme's host is on loopback in this test
    app = EntraApp.objects.create(
        tenant=acme.tenant,
        name="Globex lookalike",
        client_id=globex.app.client_id,
        cloud="custom",
        login_base_url="https://login.acme-cloud.example",
        graph_base_url=throttling_host.url,
        authority="organizations",
    )
    victim = connection_of(globex.app, globex.member)
    Connection.objects.filter(pk=globex.connection.pk).delete()
    return connection_of(app, acme.member), victim


def test_a_long_retry_after_on_one_tenants_app_leaves_another_tenants_app_free(
    copycat, throttling_host, throttle_keys
):
    attacker, victim = copycat
    client = GraphClient(attacker)
    try:
        with pytest.raises(ThrottleWait) as waited:
            client.get_page("/me/messages", client.plan("mailbox"))
    finally:
        client.close()
    assert throttling_host.hits == ["/v1.0/me/messages"]
    assert waited.value.seconds <= MAX_COOLDOWN_SECONDS

    victims = GraphClient(victim)
    throttle = shared_throttle()
    for kind in ("mailbox", "directory", "drive"):
        plan = victims.plan(kind)
        grant = throttle.acquire(plan.budgets, cost=plan.costs)
        assert isinstance(grant, Grant), (kind, grant)
        throttle.release(grant)
    victims.close()


def test_the_cooldown_a_huge_retry_after_stores_is_capped(copycat, throttle_keys):
    attacker, _ = copycat
    client = GraphClient(attacker)
    plan = client.plan("mailbox")
    try:
        with pytest.raises(ThrottleWait):
            client.get_page("/me/messages", plan)
    finally:
        client.close()

    for scope in plan.cooled:
        left = throttle_keys.pttl(shared_throttle().key(scope, "cooldown"))
        assert 0 < left <= MAX_COOLDOWN_SECONDS * 1000
    # The mailbox cools, not the app: its other mailboxes (an organisation's) carry on.
    [app_scope] = [scope for scope in plan.scopes if scope not in plan.cooled]
    assert app_scope.kind == "app"
    assert throttle_keys.pttl(shared_throttle().key(app_scope, "cooldown")) == -2


def test_apps_sharing_a_client_id_share_no_throttle_scope(copycat):
    attacker, victim = copycat
    ours, theirs = GraphClient(attacker), GraphClient(victim)
    for kind in ("mailbox", "directory", "drive"):
        assert not set(ours.plan(kind).scopes) & set(theirs.plan(kind).scopes)
    assert not set(ours.subscription_plan().scopes) & set(theirs.subscription_plan().scopes)
    ours.close()
    theirs.close()


# --- the custom cloud is an operator's setting ------------------------------------------------


def change_form(app: EntraApp, **overrides) -> dict:
    data = {
        "tenant": app.tenant_id,
        "name": app.name,
        "client_id": app.client_id,
        "directory_tenant_id": app.directory_tenant_id,
        "cloud": app.cloud,
        "login_base_url": app.login_base_url,
        "graph_base_url": app.graph_base_url,
        "authority": app.authority,
        "delegated_scopes": app.delegated_scopes,
        "graph_version": app.graph_version,
        "default_prompt": app.default_prompt,
        "response_mode": app.response_mode,
        "is_active": "on",
        "secrets-TOTAL_FORMS": "0",
        "secrets-INITIAL_FORMS": "0",
        "certificates-TOTAL_FORMS": "0",
        "certificates-INITIAL_FORMS": "0",
    }
    secrets = list(app.secrets.all())
    data["secrets-TOTAL_FORMS"] = data["secrets-INITIAL_FORMS"] = str(len(secrets))
    for i, secret in enumerate(secrets):
        data.update(
            {
                f"secrets-{i}-id": secret.pk,
                f"secrets-{i}-app": app.pk,
                f"secrets-{i}-description": secret.description,
                f"secrets-{i}-new_value": "",
                f"secrets-{i}-expires_on": secret.expires_on.isoformat(),
            }
        )
    data.update(overrides)
    return data


def post_change(client, app: EntraApp, **overrides):
    return client.post(
        reverse("admin:connections_entraapp_change", args=[app.pk]), change_form(app, **overrides)
    )


def test_a_tenant_administrator_cannot_choose_the_custom_cloud(client, acme):
    client.force_login(acme.admin)
    page = client.get(reverse("admin:connections_entraapp_add"))
    assert 'value="custom"' not in page.text
    assert 'name="login_base_url"' not in page.text

    response = post_change(
        client,
        acme.app,
        cloud="custom",
        login_base_url="https://login.acme-cloud.example",
        graph_base_url="https://graph.acme-cloud.example",
    )

    assert response.status_code == 200
    assert "Only an operator can choose the custom cloud" in response.text
    assert "Custom login URL: Only an operator" in response.text
    acme.app.refresh_from_db()
    assert (acme.app.cloud, acme.app.login_base_url) == ("global", "")


def test_custom_urls_are_read_only_for_a_tenant_administrator(client, acme):
    EntraApp.objects.filter(pk=acme.app.pk).update(
        cloud="custom",
        login_base_url="https://login.acme-cloud.example",
        graph_base_url="https://graph.acme-cloud.example",
    )
    acme.app.refresh_from_db()
    client.force_login(acme.admin)
    page = client.get(reverse("admin:connections_entraapp_change", args=[acme.app.pk]))
    assert 'name="login_base_url"' not in page.text and "login.acme-cloud.example" in page.text

    # Saving other fields works; the stored URLs stay.
    response = post_change(client, acme.app, name="Renamed")
    assert response.status_code == 302, response.text
    response = post_change(client, acme.app, graph_base_url="https://169.254.169.254")

    assert response.status_code == 200
    assert "Custom Graph URL: Only an operator" in response.text
    acme.app.refresh_from_db()
    assert acme.app.name == "Renamed"
    assert acme.app.graph_base_url == "https://graph.acme-cloud.example"


def test_an_operator_sets_the_custom_cloud(client, operator, acme):
    client.force_login(operator)
    response = post_change(
        client,
        acme.app,
        cloud="custom",
        login_base_url="https://login.acme-cloud.example/",
        graph_base_url="https://graph.acme-cloud.example",
    )

    assert response.status_code == 302, response.text
    acme.app.refresh_from_db()
    assert (acme.app.cloud, acme.app.login_base_url) == (
        "custom",
        "https://login.acme-cloud.example",
    )


# --- an app with connections keeps its tenant -------------------------------------------------


def test_an_operator_moves_an_app_without_connections(client, operator, acme, globex):
    Connection.objects.filter(app=acme.app).delete()
    client.force_login(operator)
    page = client.get(reverse("admin:connections_entraapp_change", args=[acme.app.pk]))
    assert 'name="tenant"' in page.text

    response = post_change(client, acme.app, tenant=globex.tenant.pk)

    assert response.status_code == 302, response.text
    acme.app.refresh_from_db()
    assert acme.app.tenant == globex.tenant


def test_an_apps_tenant_is_read_only_once_it_has_connections(client, operator, acme, globex):
    client.force_login(operator)
    page = client.get(reverse("admin:connections_entraapp_change", args=[acme.app.pk]))
    assert 'name="tenant"' not in page.text
    assert "The tenant cannot change once the app has connections" in page.text

    response = post_change(client, acme.app, tenant=globex.tenant.pk)

    assert response.status_code == 200
    assert "Tenant: The tenant cannot change once the app has connections" in response.text
    acme.app.refresh_from_db()
    assert acme.app.tenant == acme.tenant


def test_the_model_refuses_moving_an_app_with_connections(acme, globex):
    acme.app.tenant = globex.tenant
    with pytest.raises(ValidationError) as caught:
        acme.app.full_clean()
    assert "cannot change once the app has connections" in caught.value.message_dict["tenant"][0]

    Connection.objects.filter(app=acme.app).delete()
    acme.app.full_clean()
