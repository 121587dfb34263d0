from __future__ import annotations

from django import forms

from connections.models import ClientSecret


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
