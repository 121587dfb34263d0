"""What the API answers and accepts, field by field (also the OpenAPI schema's source)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from connections import connect_sessions
from connections.models import Connection, ConnectSession, EntraApp
from graphsync.models import SyncJob, SyncRun


class EndUserSerializer(serializers.Serializer):
    id = serializers.CharField(source="end_user_id")
    email = serializers.CharField(source="end_user_email")
    display_name = serializers.CharField(source="end_user_name")


class TokenHealthSerializer(serializers.Serializer):
    """How the connection's tokens stand; never a token."""

    access_token_expires_at = serializers.DateTimeField(allow_null=True)
    last_refreshed_at = serializers.DateTimeField(allow_null=True)
    refresh_token_updated_at = serializers.DateTimeField(allow_null=True)
    failure_streak = serializers.IntegerField()
    next_refresh_at = serializers.DateTimeField(allow_null=True)


class ConnectionSerializer(serializers.ModelSerializer):
    app = serializers.PrimaryKeyRelatedField(read_only=True)
    app_name = serializers.CharField(source="app.name", read_only=True)
    end_user = serializers.SerializerMethodField()
    scopes_granted = serializers.SerializerMethodField()
    token_health = serializers.SerializerMethodField()

    class Meta:
        model = Connection
        fields = [
            "id",
            "app",
            "app_name",
            "kind",
            "status",
            "status_reason",
            "end_user",
            "display_name",
            "user_principal_name",
            "email",
            "ms_tenant_id",
            "ms_object_id",
            "scopes_granted",
            "token_health",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(EndUserSerializer(allow_null=True))
    def get_end_user(self, connection: Connection) -> dict | None:
        if not connection.end_user_id:
            return None
        return EndUserSerializer(connection).data

    def get_scopes_granted(self, connection: Connection) -> list[str]:
        return connection.granted_scopes.split()

    @extend_schema_field(TokenHealthSerializer)
    def get_token_health(self, connection: Connection) -> dict:
        return TokenHealthSerializer(connection).data


class SyncRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncRun
        fields = [
            "id",
            "trigger",
            "outcome",
            "started_at",
            "finished_at",
            "pages",
            "requests",
            "created",
            "updated",
            "deleted",
            "throttled",
            "error",
        ]


class SyncJobSerializer(serializers.ModelSerializer):
    connection = serializers.PrimaryKeyRelatedField(read_only=True)
    records = serializers.IntegerField(source="live_count", read_only=True)
    last_run = serializers.SerializerMethodField()

    @extend_schema_field(SyncRunSerializer(allow_null=True))
    def get_last_run(self, job: SyncJob) -> dict | None:
        runs = self.context.get("last_runs")
        run = runs.get(job.pk) if runs is not None else job.runs.order_by("-started_at").first()
        return SyncRunSerializer(run).data if run else None

    class Meta:
        model = SyncJob
        fields = [
            "id",
            "connection",
            "resource",
            "folder",
            "enabled",
            "disabled_reason",
            "state",
            "interval_seconds",
            "next_run_at",
            "last_run_at",
            "last_success_at",
            "last_error",
            "failure_streak",
            "records",
            "last_run",
        ]


class ConnectSessionInSerializer(serializers.Serializer):
    app = serializers.IntegerField(help_text="The id of the tenant's app registration to use.")
    end_user_id = serializers.CharField(
        max_length=255, help_text="Your own id for the end user: connections carry it."
    )
    end_user_email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    end_user_name = serializers.CharField(required=False, allow_blank=True, max_length=256)
    return_url = serializers.CharField(
        max_length=2000,
        help_text="Where the browser comes back with the outcome; its origin must be one the "
        "tenant's administrator allowed.",
    )

    def validate_app(self, value: int) -> EntraApp:
        tenant = self.context["tenant"]
        app = EntraApp.objects.filter(pk=value, tenant=tenant).first()
        if app is None:
            raise serializers.ValidationError("No app registration with this id.")
        if not app.is_active:
            raise serializers.ValidationError(f"{app.name} is switched off.")
        return app

    def validate_return_url(self, value: str) -> str:
        problem = connect_sessions.return_url_problem(self.context["tenant"], value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class ConnectSessionOutSerializer(serializers.ModelSerializer):
    url = serializers.CharField(read_only=True, help_text="Single use; send the end user here.")

    class Meta:
        model = ConnectSession
        fields = ["id", "url", "expires_at", "app", "end_user_id", "return_url"]
