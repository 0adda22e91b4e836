"""Engine and session setup: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL (psycopg 3)."""
from __future__ import annotations

import secrets
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData, create_engine, event, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata names every constraint predictably (Alembic needs it)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """Naive UTC now: every timestamp column stores UTC without tzinfo (portable across DBs)."""
    return datetime.now(UTC).replace(tzinfo=None)


def claim_leases(session: Session, model, ids: list[str], seconds: float, *conditions,
                 now: datetime | None = None, **values) -> list[str]:
    """Lease the rows of `ids` whose lease is free (never taken or lapsed) and that meet
    `conditions`, in one UPDATE (which also sets `values`); returns the ids this claim won.

    The lease expiry is unique to this claim (random microseconds on top of now + seconds):
    the rows that carry it are this claim's, not those a concurrent claimer took between the
    caller's SELECT and here."""
    now = now or utcnow()
    token = now + timedelta(seconds=seconds, microseconds=secrets.randbelow(10**6))
    session.execute(update(model).where(
        model.id.in_(ids), or_(model.lease_until.is_(None), model.lease_until < now),
        *conditions).values(lease_until=token, **values),
        execution_options={"synchronize_session": False})
    return list(session.scalars(select(model.id).where(model.id.in_(ids),
                                                       model.lease_until == token)))


def normalize_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and use the psycopg 3 driver for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn, _record):
    # pysqlite's own transaction handling is disabled (isolation_level=None) so SQLAlchemy's
    # "begin" event below emits BEGIN itself; the pragmas must run outside a transaction.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB page cache (default 2 MiB): bulk inserts of 100k items keep their indexes hot.
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


# SQLite's default: the connection whose commit leaves more WAL pages than this checkpoints.
WAL_AUTOCHECKPOINT = 1000


def defer_checkpoint(connection) -> None:
    """Let the commit of a bulk write on this pooled connection skip the WAL checkpoint.

    A checkpoint copies the whole WAL into the database file and syncs it: after a 100,000-item
    create that is ~110 MB, several hundred ms on the request that made it. Deferred, the next
    ordinary commit on another connection (a worker's, in practice) checkpoints instead, and
    this connection gets the default back when it returns to the pool."""
    cursor = connection.driver_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()
    connection.info["checkpoint_deferred"] = True


def _restore_checkpoint(dbapi_conn, record) -> None:
    if record.info.pop("checkpoint_deferred", False):
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        cursor.close()


def make_engine(url: str, begin_immediate=lambda: False, **kwargs) -> Engine:
    """Create the engine for a database URL with the settings this app relies on.

    `begin_immediate()` says whether SQLite transactions should start with the write lock: a
    deferred transaction that reads first cannot take the write lock once another connection
    has committed (SQLite answers "database is locked" at once instead of waiting)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "checkin", _restore_checkpoint)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_txn(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if begin_immediate() else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


# True while serving a request that is expected to write (POST, PUT, PATCH, DELETE): its
# SQLite transactions then begin with the write lock (see make_engine). Reads keep deferred
# transactions so that page views never queue behind the single writer.
WRITE_INTENT: ContextVar[bool] = ContextVar("write_intent", default=False)


class Database:
    """An engine plus its session factory; one per app (and one per worker process)."""

    def __init__(self, url: str):
        self.url = normalize_url(url)
        # Set for a whole worker process (its scheduler thread too): workers always write.
        self.writer = False
        self.engine = make_engine(self.url,
                                  begin_immediate=lambda: self.writer or WRITE_INTENT.get())
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextmanager
    def session(self):
        """A session that commits on success and rolls back on error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def session_for(obj) -> Session:
    """The session an ORM object belongs to (for domain helpers handed an object)."""
    return Session.object_session(obj)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, or None (how every timestamp goes on the wire)."""
    return value.isoformat(timespec="seconds") + "Z" if value else None
