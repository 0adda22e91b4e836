"""Loopback receivers and time travel for webhook tests."""
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from batchrouter.db import utcnow
from batchrouter.models import OutboxMessage, WebhookDelivery
from tests.factories import make_key, make_user, read, workspace_of
from tests.stubs import StubServer


@pytest.fixture
def app_overrides(request, tmp_path):
    """Loopback receivers need WEBHOOKS_ALLOW_PRIVATE_TARGETS (SPEC §7); parametrize with
    indirect=True to change it."""
    return {"WEBHOOKS_ALLOW_PRIVATE_TARGETS": True,
            "BATCHROUTER_STORAGE_ROOT": str(tmp_path / "storage"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0,
            **dict(getattr(request, "param", {}))}


@pytest.fixture
def receiver():
    """A loopback receiver; `plan` is a list of (status, body[, headers]) played in turn,
    the last one repeating."""
    stub = StubServer()
    stub.plan = [(200, {"ok": True})]
    stub.times = []

    def handle(req):
        stub.times.append(time.monotonic())
        return stub.plan.pop(0) if len(stub.plan) > 1 else stub.plan[0]
    stub.route("POST", "/hook", handle)
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
def owner(session):
    user = make_user(session)
    _key, secret = make_key(session, user)
    workspace_id = workspace_of(session, user)
    session.rollback()  # end the read snapshot: SQLite refuses a later write from a stale one
    return {"user": user, "workspace_id": workspace_id, "secret": secret}


def travel(db) -> None:
    """Make every pending retry (and its wake-up) due now."""
    past = utcnow() - timedelta(seconds=1)
    with db.session() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.status == "pending")
                  .values(next_attempt_at=past))
        s.execute(update(OutboxMessage).where(OutboxMessage.enqueued_at.is_(None))
                  .values(available_at=past))


def deliveries(db):
    return read(db, lambda s: s.scalars(select(WebhookDelivery)
                                        .order_by(WebhookDelivery.id)).all())


class Listener:
    """A raw loopback TCP listener that only counts connections."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()
