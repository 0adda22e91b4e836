"""The security log: append-only, no secrets (SPEC §10)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from batchrouter.models import SecurityEvent

LABELS = {
    "login_succeeded": "Signed in",
    "login_failed": "Failed sign-in",
    "logout": "Signed out",
    "signup": "Account created",
    "email_verified": "Email verified",
    "password_reset_requested": "Password reset requested",
    "password_reset": "Password reset",
    "password_changed": "Password changed",
    "api_key_created": "API key created",
    "api_key_revoked": "API key revoked",
    "session_revoked": "Session signed out",
    "credits_granted": "Credits granted",
    "workspace_created": "Workspace created",
    "workspace_renamed": "Workspace renamed",
    "member_invited": "Teammate invited",
    "invitation_revoked": "Invitation withdrawn",
    "invitation_accepted": "Invitation accepted",
    "member_role_changed": "Role changed",
    "member_removed": "Member removed",
    "member_left": "Left the workspace",
    "ownership_transferred": "Ownership transferred",
    "email_change_requested": "Email change requested",
    "email_changed": "Email changed",
    "account_deleted": "Account deleted",
    "agent_registered": "Agent registered",
    "credits_purchased": "Credits purchased",
    "credits_refunded": "Credits refunded",
    "billing_flagged": "Billing flagged for review",
    "billing_settings_changed": "Billing settings changed",
    "stripe_webhook_rejected": "Stripe webhook rejected",
    "reconciliation_finding": "Billing reconciliation finding",
    "provider_access_saved": "Provider access saved",
    "provider_key_removed": "Provider key removed",
    "provider_registered": "Provider registered",
}


def log_security(session: Session, kind: str, *, user_id=None, workspace_id=None, email=None,
                 ip=None, user_agent=None, **details) -> SecurityEvent:
    """Append one security event; callers never pass secrets in `details`."""
    event = SecurityEvent(kind=kind, user_id=user_id, workspace_id=workspace_id, email=email,
                          ip=ip, user_agent=(user_agent or "")[:300] or None, details=details)
    session.add(event)
    return event


def recent_activity(session: Session, user_id: str, limit: int = 20) -> list[SecurityEvent]:
    """The user's latest security events, newest first."""
    stmt = (select(SecurityEvent).where(SecurityEvent.user_id == user_id)
            .order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc()).limit(limit))
    return list(session.scalars(stmt))


def label(kind: str) -> str:
    return LABELS.get(kind, kind.replace("_", " ").capitalize())
