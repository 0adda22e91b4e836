"""Shared steps for the privacy tests: submit and confirm a request as a visitor would."""
from __future__ import annotations

import re

from sqlalchemy import select

from batchrouter.models import EmailMessage, PrivacyRequest
from tests.factories import get_csrf, read

CONFIRM_RE = re.compile(r"http://\S+/privacy/request/confirm/\S+")


def submit(client, kind, email="owner@example.com", **extra):
    data = {"kind": kind, "email": email, "workspace_name": "Owner", "details": "please",
            "csrf_token": get_csrf(client, "/privacy/request"), **extra}
    return client.post("/privacy/request", data=data)


def confirm_link(db, email="owner@example.com") -> str:
    text = read(db, lambda s: s.scalars(select(EmailMessage.text).where(
        EmailMessage.to == email, EmailMessage.template == "privacy_confirm")
        .order_by(EmailMessage.created_at.desc())).first())
    return CONFIRM_RE.search(text).group(0)


def confirm(client, db, email="owner@example.com"):
    path = "/" + confirm_link(db, email).split("/", 3)[3]
    token = get_csrf(client, path)
    return client.post(path, data={"csrf_token": token})


def latest_request(db) -> PrivacyRequest:
    return read(db, lambda s: s.scalars(select(PrivacyRequest)
                                        .order_by(PrivacyRequest.created_at.desc())).first())


def operator_post(client, request_id, action, **data):
    path = f"/operator/privacy/{request_id}"
    token = get_csrf(client, path)
    return client.post(f"{path}/{action}", data={"csrf_token": token, **data})
