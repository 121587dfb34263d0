"""Sign in with Microsoft (docs/architecture.md, "Signing in"): the OpenID Connect code flow
through the connect flow's machinery, finding people by (`tid`, `oid`) only."""

from __future__ import annotations

#: Set in the session when a Microsoft sign-in's ID token said multi-factor (`amr` holds
#: "mfa"): that sign-in counts as the second factor (portal.twofactor).
MICROSOFT_MFA_SESSION_KEY = "graphport.signin.microsoft_mfa"
