"""What the operator's action does for each privacy request kind (SPEC §10): export/access
(an RQ job builds the ZIP), deletion (one transaction), correction, restriction, objection
and withdrawal of consent. Each is security-logged and answered by email."""
from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from batchrouter import accounts, consent, ledger, privacy, privacy_export, queue, teams, tokens
from batchrouter.db import utcnow
from batchrouter.errors import Conflict, NotFound, ValidationFailed
from batchrouter.models import (
    Batch,
    EmailMessage,
    File,
    Invitation,
    Item,
    PrivacyRequest,
    ProcessingRestriction,
    SupportMessage,
    User,
    UserSession,
)
from batchrouter.models.batches import BATCH_TERMINAL
from batchrouter.privacy import Operator, Settings

EXPORT_JOB = "jobs.privacy.build_export"
EXPORT_PURPOSE = "privacy-export"
KEPT = {
    "active_batches": "Batches still running finish and are billed; their items are erased "
                      "by the normal retention period after they finish.",
    "ledger": "Payment and credit ledger records must be kept under accounting and tax law.",
    "security_log": "The security log is kept for its retention period to protect the service "
                    "and to prove how accounts were used.",
    "privacy_request": "This request and our answer are kept to show we handled it.",
    "consent_records": "Records of cookie choices are kept (pseudonymised) to show consent.",
    "shared_workspaces": "Batches of workspaces that still have other members belong to that "
                         "workspace and stay with it.",
}


def _account(session: Session, request: PrivacyRequest) -> User:
    user = session.get(User, request.user_id) if request.user_id else None
    if user is None:
        raise NotFound("No account uses this email address: answer or reject the request.",
                       code="no_account")
    return user


def queue_export(session: Session, settings: Settings, request: PrivacyRequest,
                 operator: Operator) -> None:
    """Hand the archive build to a worker; the request is in progress until it is sent."""
    privacy._require_active(request)
    if request.kind not in ("access", "export"):
        raise ValidationFailed("Only access and export requests produce an archive.",
                               code="wrong_action")
    if request.status == "open":
        privacy.start(session, settings, request, operator)
    queue.add_outbox(session, EXPORT_JOB, request.id)
    privacy._log(session, "privacy_export_queued", request, operator)


def export_url(settings: Settings, request: PrivacyRequest) -> str:
    token = tokens.sign(settings.secret, EXPORT_PURPOSE, {"r": request.id,
                                                          "k": request.export_key})
    return f"{settings.base_url}/privacy/export/{token}"


def resolve_export(session: Session, settings: Settings, token: str) -> PrivacyRequest:
    """The request whose archive a link grants (expired, tampered or replaced → invalid)."""
    payload = tokens.unsign(settings.secret, EXPORT_PURPOSE, token, settings.export_ttl)
    request = session.get(PrivacyRequest, payload.get("r"))
    if request is None or not request.export_key or request.export_key != payload.get("k"):
        raise tokens.TokenInvalid("This download link is no longer valid.")
    return request


def build_export(session: Session, settings: Settings, storage, request_id: str,
                 contact: str) -> PrivacyRequest:
    """Build the ZIP, store it, email a link valid for the export TTL, close the request.
    Running twice for a finished request does nothing."""
    request = privacy.get(session, request_id)
    if request.status != "in_progress" or request.export_ready_at is not None:
        return request
    files = privacy_export.collect(session, request.email, request.user_id)
    data = privacy_export.build_zip(files, email=request.email,
                                    operator=settings.operator_name, contact=contact)
    key = f"privacy/{request.id}/export-{utcnow():%Y%m%d%H%M%S}.zip"
    storage.write_chunks(key, [data])
    request.export_key, request.export_ready_at = key, utcnow()
    days = settings.export_ttl // 86400
    operator = Operator(user_id="system", email="worker")
    privacy.close(session, settings, request, operator, status="done",
                  reply=f"Your data is ready. Download it within {days} days from:\n\n"
                        f"{export_url(settings, request)}",
                  outcome={"archive": key, "bytes": len(data),
                           "files": sorted(f"{name}.json" for name in files)})
    return request


def _erase_workspace_batches(session: Session, workspace_id: str) -> list[str]:
    """A workspace closed with the account: erase finished batches' inputs and outputs."""
    finished = select(Batch.id).where(Batch.workspace_id == workspace_id,
                                      Batch.status.in_(BATCH_TERMINAL))
    session.execute(update(Item).where(Item.batch_id.in_(finished)).values(line=b"", result=None)
                    .execution_options(synchronize_session=False))
    files = session.scalars(select(File).where(File.workspace_id == workspace_id,
                                               File.deleted_at.is_(None))).all()
    active_inputs = set(session.scalars(select(Batch.input_file_id).where(
        Batch.workspace_id == workspace_id, Batch.status.not_in(BATCH_TERMINAL))))
    keys = []
    for record in files:
        if record.id not in active_inputs:
            record.deleted_at = utcnow()
            keys.append(record.storage_key)
    return keys


def erase_account(session: Session, settings: Settings, request: PrivacyRequest,
                  operator: Operator) -> dict:
    """Deletion: erase or pseudonymise the person's data in one transaction (the caller
    commits, then removes the returned storage keys) and say what was kept and why."""
    privacy._require_active(request)
    user = _account(session, request)
    from batchrouter import profile

    blocking = profile.blocking_workspaces(session, user.id)
    if blocking:
        raise Conflict(f"They are the last owner of {', '.join(blocking)}, which has other "
                       "members: ownership must move first.", code="last_owner")
    kept, storage_keys, email = ["ledger", "security_log", "privacy_request",
                                 "consent_records"], [], user.email
    actor = teams.Actor(user_id=operator.user_id, role=None, email=operator.email,
                        ip=operator.ip)
    for membership in accounts.memberships_of(session, user.id):
        ledger.lock_workspace(session, membership.workspace_id)
        closed = teams.count_members(session, membership.workspace_id) == 1
        teams.drop_membership(session, membership, actor, reason="privacy_deletion")
        if closed:
            storage_keys += _erase_workspace_batches(session, membership.workspace_id)
            if session.scalar(select(Batch.id).where(
                    Batch.workspace_id == membership.workspace_id,
                    Batch.status.not_in(BATCH_TERMINAL)).limit(1)):
                kept.append("active_batches")
        else:
            kept.append("shared_workspaces")
    erased = {
        "sessions": session.execute(delete(UserSession).where(UserSession.user_id == user.id))
        .rowcount,
        "analytics_rows": consent.erase_visitors(session,
                                                 consent.visitor_ids_of_user(session, user.id)),
        "support_messages": session.execute(delete(SupportMessage).where(
            (SupportMessage.email == email) | (SupportMessage.user_id == user.id))).rowcount,
        "invitations": session.execute(delete(Invitation).where(Invitation.email == email))
        .rowcount,
        "emails": session.execute(delete(EmailMessage).where(EmailMessage.to == email))
        .rowcount,
        "files": len(storage_keys),
    }
    session.execute(update(ProcessingRestriction).where(ProcessingRestriction.user_id == user.id)
                    .values(lifted_at=utcnow()))
    # The row stays, without anything that identifies or authenticates the person, so kept
    # ledger and log records still join to something; no one can sign in to it.
    user.email = f"deleted-{user.id}@deleted.invalid"
    user.name, user.password_hash, user.email_verified_at = None, None, None
    user.password_changed_at = utcnow()
    outcome = {"erased": erased, "kept": [{"class": k, "why": KEPT[k]}
                                          for k in dict.fromkeys(kept)],
               "storage_keys": storage_keys}
    privacy._log(session, "privacy_account_erased", request, operator,
                 kept=[k["class"] for k in outcome["kept"]])
    reply = ("Your account is deleted and your personal data erased or pseudonymised. "
             "We kept only:\n\n" + "\n".join(f"- {k['class'].replace('_', ' ')}: {k['why']}"
                                              for k in outcome["kept"]))
    privacy.close(session, settings, request, operator, status="done", reply=reply,
                  outcome=outcome)
    return outcome


def correct_account(session: Session, settings: Settings, request: PrivacyRequest,
                    operator: Operator, *, name: str | None, email: str | None) -> dict:
    """Correction: apply the corrected name and/or email the requester asked for."""
    privacy._require_active(request)
    user = _account(session, request)
    changes = {}
    if name is not None and name.strip() != (user.name or ""):
        user.name, changes["name"] = name.strip()[:120] or None, "updated"
    if email and email.strip():
        new_email = accounts.normalize_email(email)
        if new_email != user.email:
            if accounts.find_user_by_email(session, new_email) is not None:
                raise Conflict("Another account uses that email address.", code="email_taken")
            user.email, changes["email"] = new_email, "updated"
    if not changes:
        raise ValidationFailed("Enter the corrected name or email.", code="nothing_to_correct")
    privacy._log(session, "privacy_account_corrected", request, operator, fields=sorted(changes))
    privacy.close(session, settings, request, operator, status="done",
                  reply="We corrected your " + " and ".join(sorted(changes)) + ".",
                  outcome={"corrected": sorted(changes)})
    return changes


def restrict_processing(session: Session, settings: Settings, request: PrivacyRequest,
                        operator: Operator) -> None:
    """Restriction: the account can start no new batches until an operator lifts it."""
    privacy._require_active(request)
    user = _account(session, request)
    if not privacy.is_restricted(session, user.id):
        session.add(ProcessingRestriction(user_id=user.id, request_id=request.id))
    privacy._log(session, "privacy_processing_restricted", request, operator)
    privacy.close(session, settings, request, operator, status="done",
                  reply="Processing is restricted: no new batches can be started for your "
                        "account until the restriction is lifted. Batches already running "
                        "finish.", outcome={"restricted": True})


def lift_restriction(session: Session, user_id: str, operator: Operator) -> int:
    lifted = session.execute(update(ProcessingRestriction)
                             .where(ProcessingRestriction.user_id == user_id,
                                    ProcessingRestriction.lifted_at.is_(None))
                             .values(lifted_at=utcnow())).rowcount or 0
    from batchrouter.records import log_security
    log_security(session, "privacy_restriction_lifted", user_id=user_id, email=operator.email,
                 operator_id=operator.user_id)
    return lifted


def withdraw_consent(session: Session, settings: Settings, request: PrivacyRequest,
                     operator: Operator, *, objection: bool = False) -> dict:
    """Withdraw consent (or object): consent records say no, their analytics is erased."""
    privacy._require_active(request)
    user = _account(session, request)
    result = consent.withdraw_for_user(session, user.id, settings.policy_version)
    privacy._log(session, "privacy_consent_withdrawn", request, operator, **result)
    what = "objection" if objection else "withdrawal of consent"
    privacy.close(session, settings, request, operator, status="done",
                  reply=f"We recorded your {what}: analytics is off for every browser you "
                        f"chose in, and {result['analytics_rows_erased']} analytics records "
                        "about you were erased.", outcome=result)
    return result


def perform(session: Session, settings: Settings, request: PrivacyRequest, operator: Operator,
            form: dict) -> dict | None:
    """The action the request's kind calls for."""
    if request.kind in ("access", "export"):
        queue_export(session, settings, request, operator)
        return None
    if request.kind == "deletion":
        return erase_account(session, settings, request, operator)
    if request.kind == "correction":
        return correct_account(session, settings, request, operator,
                               name=form.get("name"), email=form.get("email"))
    if request.kind == "restriction":
        restrict_processing(session, settings, request, operator)
        return None
    return withdraw_consent(session, settings, request, operator,
                            objection=request.kind == "objection")
