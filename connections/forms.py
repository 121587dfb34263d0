from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from django import forms

from connections import credentials
from connections.models import AppCertificate, ClientSecret


class ClientSecretForm(forms.ModelForm):
    """Secrets are write-only: a new secret's value is typed once and never shown again."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=True,
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
        return value

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
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Kept encrypted and never shown again.",
    )

    class Meta:
        model = AppCertificate
        fields = ("description", "certificate_pem", "new_private_key")
        widgets = {"certificate_pem": forms.Textarea(attrs={"rows": 3})}

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
