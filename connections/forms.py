from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils import timezone
from django.utils.text import capfirst

from connections import credentials
from connections.clouds import Cloud
from connections.models import AppCertificate, ClientSecret, EntraApp
from connections.models.apps import PEM_MAX_LENGTH, SECRET_MAX_LENGTH

#: Why only an operator sets the custom cloud: its URLs decide where the app's secrets and
#: tokens are sent, and what the portal's own network is asked (docs/microsoft.md, "Endpoints
#: and clouds").
CUSTOM_CLOUD_OPERATORS_ONLY = (
    "Only an operator can choose the custom cloud or change its login and Graph URLs: they "
    "decide where Graphport sends the app's secrets and tokens. Ask your Graphport operator."
)


class WriteOnlyTextarea(forms.Textarea):
    """A text area that never renders its value back: a form with an error comes back empty
    here rather than with the private key in the page."""

    def format_value(self, value):
        return None


class ClientSecretForm(forms.ModelForm):
    """Secrets are write-only: a new secret's value is typed once and never shown again."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=True,
        max_length=SECRET_MAX_LENGTH,
        error_messages={
            "max_length": "The secret's value is at most %(limit_value)d characters (Azure's are "
            "40); this is %(show_value)d. Paste only the Value column."
        },
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The secret's Value column in the Azure portal (not its Secret ID).",
    )

    class Meta:
        model = ClientSecret
        fields = ("description", "new_value", "expires_on")

    def clean_new_value(self) -> str:
        value = self.cleaned_data["new_value"]
        if self.instance.pk:
            if value:
                raise forms.ValidationError(
                    "A stored secret cannot be changed: add the new secret as a new row, then "
                    "delete this one once the new one is verified."
                )
            return value
        if not value and self.has_changed():
            raise forms.ValidationError("Paste the secret's value.")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise forms.ValidationError(
                "The secret's value has spaces, line breaks or control characters: paste only "
                "the Value column, in one piece."
            )
        return value

    def clean_expires_on(self):
        expires_on = self.cleaned_data["expires_on"]
        new = not self.instance.pk or "expires_on" in self.changed_data
        if new and expires_on is not None and expires_on < timezone.localdate():
            raise forms.ValidationError(
                f"Expires on {expires_on:%Y-%m-%d}: that date has passed, and Microsoft refuses "
                "an expired secret. Add a new secret in the Azure portal (Certificates & "
                "secrets) and enter its value and expiry here."
            )
        return expires_on

    def save(self, commit: bool = True) -> ClientSecret:
        value = self.cleaned_data.get("new_value")
        if value:
            self.instance.value = value
            self.instance.hint = value[:3]
        return super().save(commit=commit)


class AppCertificateForm(forms.ModelForm):
    """The private key is write-only, like a secret; the certificate's thumbprints and expiry
    are read from it."""

    new_private_key = forms.CharField(
        label="Private key (PEM)",
        required=False,
        max_length=PEM_MAX_LENGTH,
        error_messages={
            "max_length": "The private key is at most %(limit_value)d characters of PEM; this is "
            "%(show_value)d. Paste only the key (-----BEGIN PRIVATE KEY----- ...)."
        },
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Kept encrypted and never shown again, not even when the form has an error.",
    )

    class Meta:
        model = AppCertificate
        fields = ("description", "certificate_pem", "new_private_key")
        widgets = {"certificate_pem": forms.Textarea(attrs={"rows": 3})}
        error_messages = {
            "certificate_pem": {
                "max_length": "The certificate is at most %(limit_value)d characters of PEM; "
                "this is %(show_value)d. Paste only the certificate (-----BEGIN CERTIFICATE-----"
                " ...), without its chain."
            }
        }

    def clean(self):
        cleaned = super().clean()
        pem = cleaned.get("certificate_pem", "")
        key_pem = cleaned.get("new_private_key", "")
        if self.instance.pk:
            if key_pem or (pem and pem.strip() != self.instance.certificate_pem.strip()):
                raise forms.ValidationError(
                    "A stored certificate cannot be changed: add the new one as a new row."
                )
            return cleaned
        if not pem:
            return cleaned
        try:
            facts = credentials.describe_certificate(pem)
        except ValueError as exc:
            self.add_error("certificate_pem", str(exc))
            return cleaned
        if not key_pem:
            self.add_error("new_private_key", "Paste the certificate's private key.")
            return cleaned
        try:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError):
            self.add_error(
                "new_private_key", "This is not an unencrypted PEM private key (-----BEGIN ...)."
            )
            return cleaned
        if key.public_key().public_numbers() != facts["public_key"].public_numbers():
            self.add_error(
                "new_private_key", "This private key does not belong to the certificate."
            )
            return cleaned
        self.instance.thumbprint_sha256 = facts["thumbprint_sha256"]
        self.instance.thumbprint_sha1 = facts["thumbprint_sha1"]
        self.instance.expires_on = facts["expires_on"]
        self.instance.private_key = key_pem.strip()
        return cleaned


class EntraAppForm(forms.ModelForm):
    """An app registration in the admin. Some fields are read-only for some people: the custom
    cloud's URLs for a tenant administrator, and the tenant of an app with connections for
    everyone. The admin names them in `locked`, with the reason; a POST that changes one anyway
    is refused with that reason rather than silently ignored."""

    #: set by the admin for each request
    operator: bool = False
    locked: dict[str, str] = {}

    class Meta:
        model = EntraApp
        fields = ["delegated_scopes"]  # the admin adds the rest
        error_messages = {
            "delegated_scopes": {
                "max_length": "The scopes are at most %(limit_value)d characters; these are "
                "%(show_value)d. List only the Microsoft Graph permissions the app's syncs use."
            }
        }

    def clean_cloud(self) -> str:
        cloud = self.cleaned_data["cloud"]
        if cloud == Cloud.CUSTOM and not self.operator and self.instance.cloud != Cloud.CUSTOM:
            raise ValidationError(CUSTOM_CLOUD_OPERATORS_ONLY)
        return cloud

    def clean(self):
        cleaned = super().clean()
        for name, reason in self.locked.items():
            if name in self.data and self._posted(name) != self._stored(name):
                self.add_error(None, f"{self._label(name)}: {reason}")
        if not self.operator and cleaned.get("cloud") not in (None, Cloud.CUSTOM):
            # A tenant administrator may leave the custom cloud; its URLs, read-only for them,
            # go with it (they are only for the custom cloud).
            self.instance.login_base_url = self.instance.graph_base_url = ""
        return cleaned

    def _posted(self, name: str) -> str:
        return str(self.data.get(name) or "").strip().rstrip("/")

    def _stored(self, name: str) -> str:
        value = self.instance.tenant_id if name == "tenant" else getattr(self.instance, name)
        return str(value or "").strip().rstrip("/")

    def _label(self, name: str) -> str:
        return capfirst(str(EntraApp._meta.get_field(name).verbose_name))

    def _update_errors(self, errors: ValidationError) -> None:
        # EntraApp.clean() may name a field this form shows read-only (a tenant administrator's
        # custom URLs, a locked tenant), and Django refuses errors for fields a form lacks: keep
        # them, with the field's name, among the form's own errors.
        if hasattr(errors, "error_dict"):
            for name in [n for n in errors.error_dict if n != NON_FIELD_ERRORS]:
                if name not in self.fields:
                    messages = ValidationError(errors.error_dict.pop(name)).messages
                    errors.error_dict.setdefault(NON_FIELD_ERRORS, []).extend(
                        ValidationError(f"{self._label(name)}: {message}") for message in messages
                    )
        super()._update_errors(errors)
