"""Invitations: a tenant administrator invites someone by e-mail, as a member or an
administrator; the link is signed, works once, and expires after INVITATION_VALID_DAYS.

The link carries the invitation's id and a random secret, signed with SECRET_KEY; only the
secret's hash is stored, so the database alone cannot make a working link, and resending makes a
new secret that retires the old link. Accepting (with Sign in with Microsoft, connections.signin,
or with a new password) takes the invitation with a row lock, so a link used twice at once
admits one person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from connections import audit, logins
from connections.connect import FlowError
from connections.models import AuditEvent, Invitation, Membership, MicrosoftIdentity, Tenant
from core import mail

SALT = "graphport.invitation"


class Unusable(Exception):
    """The link cannot be used; the message says why, in words for the person holding it."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_link(invitation: Invitation) -> str:
    """A fresh secret for `invitation` (not yet saved) and the link that carries it."""
    secret = secrets.token_urlsafe(32)
    invitation.secret_hash = _digest(secret)
    token = signing.dumps([invitation.pk, secret], salt=SALT, compress=False)
    return settings.PORTAL_BASE_URL + reverse("invitation", args=[token])


def _send(invitation: Invitation, link: str) -> None:
    notice = mail.render(
        "invitation",
        {
            "invitation": invitation,
            "tenant": invitation.tenant,
            "inviter": invitation.invited_by,
            "link": link,
            "days": settings.INVITATION_VALID_DAYS,
        },
        [invitation.email],
    )
    mail.send(notice)


def _refresh_and_send(invitation: Invitation) -> None:
    """A new link and validity period, saved before the mail goes (a link never names a secret
    that is not stored) and marked sent only once it went."""
    link = _new_link(invitation)
    invitation.expires_at = timezone.now() + timedelta(days=settings.INVITATION_VALID_DAYS)
    invitation.save(update_fields=["secret_hash", "expires_at"])
    _send(invitation, link)
    invitation.sent_at = timezone.now()
    invitation.times_sent += 1
    invitation.save(update_fields=["sent_at", "times_sent"])


def invite(tenant: Tenant, email: str, role: str, invited_by) -> Invitation:
    """Create the invitation and e-mail its link. The mail is sent after the row is committed,
    so a link never names an invitation that a rolled-back transaction took away."""
    email = email.strip()
    problem = refusal(tenant, email)
    if problem:
        raise ValueError(problem)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            tenant=tenant,
            email=email,
            role=role,
            invited_by=invited_by,
            expires_at=timezone.now(),
        )
        audit.record(
            AuditEvent.Kind.INVITATION_SENT,
            f"Invited {email} as {invitation.get_role_display().lower()}.",
            tenant=tenant,
            actor=invited_by,
        )
    _refresh_and_send(invitation)
    return invitation


def refusal(tenant: Tenant, email: str) -> str | None:
    """Why `email` cannot be invited to `tenant` now, or None."""
    if Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
        return f"{email} is already a member of {tenant}."
    pending = Invitation.objects.filter(
        tenant=tenant,
        email__iexact=email,
        accepted_at=None,
        revoked_at=None,
        expires_at__gt=timezone.now(),
    )
    if pending.exists():
        return f"{email} already has a pending invitation: resend it instead."
    return None


def resend(invitation: Invitation, actor) -> None:
    """A new link (the old one stops working) and a new validity period."""
    if invitation.accepted_at or invitation.revoked_at:
        raise ValueError(f"The invitation for {invitation.email} was {invitation.status}.")
    _refresh_and_send(invitation)
    audit.record(
        AuditEvent.Kind.INVITATION_SENT,
        f"Invitation for {invitation.email} sent again (time {invitation.times_sent}).",
        tenant=invitation.tenant,
        actor=actor,
    )


def revoke(invitation: Invitation, actor) -> bool:
    revoked = Invitation.objects.filter(pk=invitation.pk, accepted_at=None, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    if revoked:
        audit.record(
            AuditEvent.Kind.INVITATION_REVOKED,
            f"Invitation for {invitation.email} revoked.",
            tenant=invitation.tenant,
            actor=actor,
        )
    return bool(revoked)


# --- the link ------------------------------------------------------------------------------------


def find(token: str) -> Invitation:
    """The pending invitation a link names; Unusable otherwise."""
    try:
        pk, secret = signing.loads(token, salt=SALT)
        invitation = Invitation.objects.select_related("tenant").filter(pk=int(pk)).first()
    except (signing.BadSignature, ValueError, TypeError):
        invitation, secret = None, ""
    if invitation is None or not hmac.compare_digest(invitation.secret_hash, _digest(str(secret))):
        raise Unusable("This invitation link is not valid. It may have been sent again since.")
    _check_pending(invitation)
    return invitation


def _check_pending(invitation: Invitation) -> None:
    if invitation.accepted_at:
        raise Unusable("This invitation was already used. Sign in instead.")
    if invitation.revoked_at:
        raise Unusable("This invitation was withdrawn. Ask your administrator for a new one.")
    if invitation.expires_at <= timezone.now():
        raise Unusable("This invitation has expired. Ask your administrator to send it again.")


def _take(invitation_id: int) -> Invitation:
    """The invitation, locked for the rest of the transaction, if it is still pending."""
    invitation = (
        Invitation.objects.select_for_update().select_related("tenant").get(pk=invitation_id)
    )
    _check_pending(invitation)
    return invitation


def _accepted(invitation: Invitation, user, how: str) -> None:
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit.record(
        AuditEvent.Kind.INVITATION_ACCEPTED,
        f"{invitation.email} accepted the invitation ({how}) as {user}.",
        tenant=invitation.tenant,
        actor=user,
    )


def _member(user, invitation: Invitation) -> None:
    role = invitation.role
    Membership.objects.create(user=user, tenant=invitation.tenant, role=role)
    # Tenant administrators work in the admin; members never do.
    if role == Membership.Role.ADMIN and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])


def accept_signed_in(invitation_id: int, who, known: MicrosoftIdentity | None):
    """Accept an invitation with a Microsoft account (inside connections.signin's transaction):
    the login it already is, or a new one. Returns (user, tenant); FlowError when refused."""
    try:
        invitation = _take(invitation_id)
    except Unusable as exc:
        raise FlowError("invitation", str(exc)) from None
    tenant = invitation.tenant
    account = who.username or who.object_id
    addresses = {who.email.lower(), who.username.lower()} - {""}
    if not tenant.invitations_any_account and invitation.email.lower() not in addresses:
        raise FlowError(
            "invitation",
            f"This invitation was sent to {invitation.email}, but you signed in as {account}. "
            "Sign in with that account, or ask your administrator to invite this one.",
        )
    if known is None:
        user = logins.new_login(who.username or invitation.email, invitation.email, who.name)
    else:
        user = known.user
        if not user.is_active:
            raise FlowError("invitation", "Your Graphport login is deactivated.")
        membership = getattr(user, "membership", None)
        if user.is_superuser or (membership and membership.tenant_id != tenant.pk):
            raise FlowError(
                "invitation",
                f"The Microsoft account {account} already signs in to Graphport for another "
                "organisation; one login belongs to one organisation.",
            )
        if membership:  # already a member: the invitation may make them an administrator
            _promote(user, membership, invitation.role)
            _accepted(invitation, user, "Sign in with Microsoft")
            return user, tenant
    _member(user, invitation)
    _accepted(invitation, user, "Sign in with Microsoft")
    return user, tenant


def _promote(user, membership: Membership, role: str) -> None:
    if role == Membership.Role.ADMIN and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
        user.is_staff = True
        user.save(update_fields=["is_staff"])


def accept_with_password(token: str, username: str, password: str):
    """Accept an invitation with a new password login. Unusable when the link no longer works;
    the form has checked the username and the password's strength."""
    invitation = find(token)
    with transaction.atomic():
        invitation = _take(invitation.pk)
        user = logins.new_login(username, invitation.email, "", password=password)
        _member(user, invitation)
        _accepted(invitation, user, "password")
    return user
