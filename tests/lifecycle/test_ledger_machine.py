"""Ledger invariants (SPEC §8, checklist §3 / B4) as a Hypothesis state machine on real sessions.

A model of lots, holds and settlements runs beside the real ledger. Every step commits through
its own database session; after every step the database must agree with the model and with
double-entry bookkeeping, computed here from the rows themselves (not only through
ledger.verify_balances()).
"""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from batchrouter import ledger, money
from batchrouter.db import utcnow
from batchrouter.errors import InsufficientCredits
from batchrouter.models import (
    CreditLot,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Reservation,
    Workspace,
)
from tests.factories import bearer, make_key, make_user, workspace_of

pytestmark = pytest.mark.pg

KINDS = ("purchase", "promo", "starter")
# Hours from the machine's clock to a lot's expiry (None: never expires).
EXPIRIES = (None, None, 1, 6, 48, 24 * 30)


class LedgerMachine(RuleBasedStateMachine):
    """Set up by `machine_for(db, clock)` below (the machine needs the test's database)."""

    db = None
    clock = None

    reservations = Bundle("reservations")

    def __init__(self):
        super().__init__()
        self.clock["now"] = utcnow()
        self.workspaces: list[str] = []
        # lot id -> {"ws", "kind", "expires_at", "remaining", "seq"}
        self.lots: dict[str, dict] = {}
        # batch id -> {"ws", "amount", "settled", "released", "alloc": [[lot, held]], "units"}
        self.holds: dict[str, dict] = {}
        self.grant_keys: dict[str, list[str]] = {}
        self.seq = 0

    # --- helpers ------------------------------------------------------------------------

    def session(self):
        return self.db.sessionmaker()

    def live_lots(self, ws: str) -> list[str]:
        """The model's spend order: promo/starter before purchase, earliest expiry first,
        lots without expiry after expiring ones, then oldest first."""
        now = self.clock["now"]
        live = [(lid, lot) for lid, lot in self.lots.items()
                if lot["ws"] == ws and lot["remaining"] > 0
                and (lot["expires_at"] is None or lot["expires_at"] > now)]
        live.sort(key=lambda p: (p[1]["kind"] == "purchase", p[1]["expires_at"] is None,
                                 p[1]["expires_at"] or now, p[1]["seq"]))
        return [lid for lid, _lot in live]

    def db_snapshot(self, ws: str) -> tuple:
        with self.session() as s:
            lots = dict(s.execute(select(CreditLot.id, CreditLot.remaining)
                                  .where(CreditLot.workspace_id == ws)).all())
            txns = s.scalar(select(func.count()).select_from(LedgerTransaction)
                            .where(LedgerTransaction.workspace_id == ws))
            return ledger.balances(s, ws), lots, txns

    # --- rules ---------------------------------------------------------------------------

    @initialize(first=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 20_000_000),
                                         st.sampled_from(EXPIRIES)), min_size=2, max_size=2))
    def make_workspaces(self, first):
        with self.session() as s:
            for _ in range(2):
                ws = Workspace(name=f"ledger machine {uuid.uuid4().hex[:8]}")
                s.add(ws)
                s.flush()
                self.workspaces.append(ws.id)
                self.grant_keys[ws.id] = []
            s.commit()
        for ws, (kind, amount, expiry) in enumerate(first):
            self.grant(ws, kind, amount, expiry)

    @rule(ws=st.integers(0, 1), kind=st.sampled_from(KINDS),
          amount=st.integers(1, 20_000_000), expiry=st.sampled_from(EXPIRIES))
    def grant(self, ws, kind, amount, expiry):
        ws = self.workspaces[ws]
        expires_at = None if expiry is None else self.clock["now"] + timedelta(hours=expiry)
        key = f"grant:{uuid.uuid4().hex}"
        with self.session() as s:
            txn = ledger.grant(s, ws, amount, kind=kind, reason="machine", idempotency_key=key,
                               expires_at=expires_at)
            s.commit()
            lot = s.scalars(select(CreditLot).where(CreditLot.transaction_id == txn.id)).one()
            assert (lot.kind, lot.amount, lot.remaining) == (kind, amount, amount)
            lot_id = lot.id
        self.seq += 1
        self.lots[lot_id] = {"ws": ws, "kind": kind, "expires_at": expires_at,
                             "remaining": amount, "seq": self.seq}
        self.grant_keys[ws].append(key)

    @rule(ws=st.integers(0, 1), data=st.data())
    def grant_again_with_the_same_key(self, ws, data):
        ws = self.workspaces[ws]
        if not self.grant_keys[ws]:
            return
        key = data.draw(st.sampled_from(self.grant_keys[ws]))
        before = self.db_snapshot(ws)
        with self.session() as s:
            ledger.grant(s, ws, 7_000_000, kind="promo", reason="retried webhook",
                         idempotency_key=key)
            s.commit()
        assert self.db_snapshot(ws) == before, "a repeated grant key must post nothing"

    @rule(target=reservations, ws=st.integers(0, 1), fits=st.booleans(),
          share=st.integers(1, 1000), excess=st.integers(1, 5_000_000))
    def reserve(self, ws, fits, share, excess):
        """Either a hold that fits (a share of what is spendable) or one that does not."""
        ws = self.workspaces[ws]
        batch_id = f"bat_machine_{uuid.uuid4().hex[:12]}"
        order = self.live_lots(ws)
        usable = sum(self.lots[lid]["remaining"] for lid in order)
        amount = max(1, usable * share // 1000) if fits and usable else usable + excess
        before = self.db_snapshot(ws)
        with self.session() as s:
            if amount > usable:
                with pytest.raises(InsufficientCredits) as raised:
                    ledger.reserve(s, ws, batch_id, amount)
                s.rollback()
                assert raised.value.status == 402
                assert raised.value.details["shortfall"] == money.to_wire(amount - usable)
                assert raised.value.details["available"] == money.to_wire(usable)
                assert s.scalar(select(func.count()).select_from(Reservation)
                                .where(Reservation.batch_id == batch_id)) == 0
            else:
                ledger.reserve(s, ws, batch_id, amount)
                s.commit()
        if amount > usable:
            assert self.db_snapshot(ws) == before, "a refused reservation must change nothing"
            return multiple()
        alloc, left = [], amount
        for lid in order:
            if left == 0:
                break
            take = min(self.lots[lid]["remaining"], left)
            self.lots[lid]["remaining"] -= take
            left -= take
            alloc.append([lid, take])
        self.holds[batch_id] = {"ws": ws, "amount": amount, "settled": 0, "released": 0,
                                "alloc": alloc, "units": set()}
        return batch_id

    @rule(batch_id=reservations)
    def reserve_the_same_batch_again(self, batch_id):
        hold = self.holds[batch_id]
        before = self.db_snapshot(hold["ws"])
        with self.session() as s:
            again = ledger.reserve(s, hold["ws"], batch_id, hold["amount"] + 1)
            s.commit()
            assert again.amount == hold["amount"]
        assert self.db_snapshot(hold["ws"]) == before

    @rule(batch_id=reservations, unit=st.integers(0, 2), share=st.integers(0, 700))
    def settle(self, batch_id, unit, share):
        """A work unit's usage: a share of the hold (over 1/4 of it can exceed what is left)."""
        hold = self.holds[batch_id]
        amount = hold["amount"] * share // 1000
        unit_id = f"wu_machine_{unit}"
        before = self.db_snapshot(hold["ws"])
        with self.session() as s:
            ledger.settle(s, hold["ws"], batch_id, unit_id, amount)
            s.commit()
        if unit_id in hold["units"]:
            assert self.db_snapshot(hold["ws"]) == before, "a repeated settle posted twice"
            return
        hold["units"].add(unit_id)
        held = hold["amount"] - hold["settled"] - hold["released"]
        take_total = min(amount, held)
        left = take_total
        for part in hold["alloc"]:
            take = min(part[1], left)
            part[1] -= take
            left -= take
        hold["settled"] += take_total

    @rule(batch_id=reservations, share=st.integers(0, 1000), data=st.data())
    def settle_a_settled_unit_again(self, batch_id, share, data):
        """A retried job settles its unit again, maybe with another amount: no effect."""
        units = sorted(self.holds[batch_id]["units"])
        if units:
            unit = int(data.draw(st.sampled_from(units)).rsplit("_", 1)[1])
            self.settle(batch_id, unit, share)

    @rule(batch_id=reservations)
    def release(self, batch_id):
        hold = self.holds[batch_id]
        before = self.db_snapshot(hold["ws"])
        with self.session() as s:
            ledger.release(s, hold["ws"], batch_id)
            s.commit()
        if hold["released"] or hold.get("closed"):
            assert self.db_snapshot(hold["ws"]) == before, "a repeated release posted twice"
            return
        held = hold["amount"] - hold["settled"]
        for part in hold["alloc"]:
            self.lots[part[0]]["remaining"] += part[1]
            part[1] = 0
        hold["released"] = held
        hold["closed"] = True

    @rule(hours=st.sampled_from((2, 12, 24 * 3)))
    def time_passes(self, hours):
        self.clock["now"] += timedelta(hours=hours)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def books_balance(self):
        with self.session() as s:
            assert ledger.verify_balances(s) == []
            # Independently of verify_balances: every transaction sums to zero, every cached
            # balance is the sum of its entries, and all accounts together sum to zero.
            unbalanced = s.execute(select(LedgerEntry.transaction_id)
                                   .group_by(LedgerEntry.transaction_id)
                                   .having(func.sum(LedgerEntry.amount) != 0)).all()
            assert unbalanced == []
            sums = dict(s.execute(select(LedgerEntry.account_id, func.sum(LedgerEntry.amount))
                                  .group_by(LedgerEntry.account_id)).all())
            for acct in s.scalars(select(LedgerAccount)):
                assert acct.balance == int(sums.get(acct.id) or 0), acct.kind
            assert int(s.scalar(select(func.coalesce(func.sum(LedgerAccount.balance), 0)))) == 0

    @invariant()
    def workspaces_match_the_model(self):
        with self.session() as s:
            for ws in self.workspaces:
                bal = ledger.balances(s, ws)
                assert min(bal.available, bal.reserved, bal.spent) >= 0, bal
                holds = [h for h in self.holds.values() if h["ws"] == ws]
                assert bal.reserved == sum(h["amount"] - h["settled"] - h["released"]
                                           for h in holds)
                assert bal.spent == sum(h["settled"] for h in holds)
                model_lots = {lid: lot["remaining"] for lid, lot in self.lots.items()
                              if lot["ws"] == ws}
                db_lots = dict(s.execute(select(CreditLot.id, CreditLot.remaining)
                                         .where(CreditLot.workspace_id == ws)).all())
                # Spend order: each lot has exactly what the model's order leaves in it.
                assert db_lots == model_lots
                # Available is what can be reserved: lots past their expiry do not count.
                now = self.clock["now"]
                assert bal.available == sum(
                    lot["remaining"] for lot in self.lots.values() if lot["ws"] == ws
                    and (lot["expires_at"] is None or lot["expires_at"] > now))
                assert all(v >= 0 for v in db_lots.values())

    @invariant()
    def released_batches_hold_nothing(self):
        with self.session() as s:
            for batch_id, hold in self.holds.items():
                row = s.scalars(select(Reservation).where(Reservation.batch_id == batch_id)).one()
                assert row.settled == hold["settled"] and row.released == hold["released"]
                if hold.get("closed"):
                    assert row.closed_at is not None
                    assert row.amount == row.settled + row.released
                    assert sum(row.allocations.values()) == 0
            for ws in self.workspaces:
                if all(h.get("closed") for h in self.holds.values() if h["ws"] == ws):
                    assert ledger.balances(s, ws).reserved == 0


def test_ledger_state_machine(db, monkeypatch):
    clock = {"now": utcnow()}
    monkeypatch.setattr(ledger, "utcnow", lambda: clock["now"])
    LedgerMachine.db, LedgerMachine.clock = db, clock
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=30, stateful_step_count=15, deadline=None, database=None,
        # No shrinking: each step is a few real transactions; the failing steps are printed.
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=list(HealthCheck)))


def test_spend_order_promo_and_starter_by_expiry_then_purchase(db, monkeypatch):
    """A concrete walk through the order SPEC §8 names, on one workspace."""
    now = utcnow()
    with db.sessionmaker() as s:
        ws = Workspace(name="spend order")
        s.add(ws)
        s.flush()
        ws = ws.id
        lots = {}
        for name, kind, hours in (("purchase_old", "purchase", None),
                                  ("promo_late", "promo", 72), ("starter_none", "starter", None),
                                  ("promo_soon", "promo", 2), ("purchase_new", "purchase", None)):
            txn = ledger.grant(s, ws, 1_000_000, kind=kind, reason=name,
                               idempotency_key=f"{name}:{ws}",
                               expires_at=None if hours is None else now + timedelta(hours=hours))
            s.flush()
            lots[name] = s.scalars(select(CreditLot.id)
                                   .where(CreditLot.transaction_id == txn.id)).one()
        s.commit()
        order = [lot.id for lot in ledger.spendable_lots(s, ws)]
        assert order == [lots[n] for n in ("promo_soon", "promo_late", "starter_none",
                                           "purchase_old", "purchase_new")]
        # 3.5 lots' worth: the three promotional lots and half of the older purchase.
        ledger.reserve(s, ws, "bat_spend_order", 3_500_000)
        s.commit()
        remaining = dict(s.execute(select(CreditLot.id, CreditLot.remaining)
                                   .where(CreditLot.workspace_id == ws)).all())
        assert remaining == {lots["promo_soon"]: 0, lots["promo_late"]: 0,
                             lots["starter_none"]: 0, lots["purchase_old"]: 500_000,
                             lots["purchase_new"]: 1_000_000}
        # Settling 1.2 consumes the held promo credit first; release returns the rest to the
        # lots it came from, so only unspent purchased credit stays refundable.
        ledger.settle(s, ws, "bat_spend_order", "wu_1", 1_200_000)
        ledger.release(s, ws, "bat_spend_order")
        s.commit()
        remaining = dict(s.execute(select(CreditLot.id, CreditLot.remaining)
                                   .where(CreditLot.workspace_id == ws)).all())
        assert remaining == {lots["promo_soon"]: 0, lots["promo_late"]: 800_000,
                             lots["starter_none"]: 1_000_000, lots["purchase_old"]: 1_000_000,
                             lots["purchase_new"]: 1_000_000}
        assert ledger.balances(s, ws) == ledger.Balances(3_800_000, 0, 1_200_000)
        assert ledger.verify_balances(s) == []


def test_an_expired_lot_is_not_spendable_and_not_shown_as_available(db, client):
    """What the account shows as available must be what a batch can reserve."""
    with db.sessionmaker() as s:
        user = make_user(s)  # $5.00 starter credit, no expiry
        ws = workspace_of(s, user)
        _key, secret = make_key(s, user)
        ledger.grant(s, ws, 4_000_000, kind="promo", reason="trial",
                     idempotency_key=f"trial:{ws}", expires_at=utcnow() + timedelta(seconds=1))
        s.commit()
    assert client.get("/v1/auth/account", headers=bearer(secret)).get_json()[
        "credit_balance"] == "9.000000"
    time.sleep(1.5)  # the promo lot expires
    with db.sessionmaker() as s:
        with pytest.raises(InsufficientCredits) as raised:
            ledger.reserve(s, ws, "bat_after_expiry", 6_000_000)
        s.rollback()
    assert raised.value.details["available"] == "5.000000"
    account = client.get("/v1/auth/account", headers=bearer(secret)).get_json()
    assert account["credit_balance"] == "5.000000"
