"""Portal logins made for people who arrive by themselves: through an invitation or their
verified directory (connections.invitations, connections.signin)."""

from __future__ import annotations

from django.contrib.auth import get_user_model


def new_login(wanted_username: str, email: str, name: str, password: str | None = None):
    """A new portal login. Usernames are labels here (people are found by their Microsoft
    account), so a taken one gets a number rather than a refusal that would tell whose it is."""
    User = get_user_model()
    base = wanted_username.strip().lower()[:140] or "member"
    username, n = base, 1
    while User.objects.filter(username__iexact=username).exists():
        n += 1
        username = f"{base}-{n}"
    first, _, last = name.strip().partition(" ")
    user = User(username=username, email=email[:254], first_name=first[:150], last_name=last[:150])
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()  # Microsoft-only: no password to guess or reset
    user.save()
    return user
