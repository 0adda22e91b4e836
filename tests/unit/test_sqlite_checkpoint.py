"""A bulk create's commit on SQLite leaves the WAL checkpoint to the next ordinary commit (a
worker's), and its pooled connection gets SQLite's default back when it returns to the pool."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, text

from batchrouter import bulk
from batchrouter.db import WAL_AUTOCHECKPOINT, Database

ROWS = Table("rows", MetaData(), Column("id", Integer, primary_key=True), Column("v", String))
ROW_COUNT = 10_000


def autocheckpoint(connection) -> int:
    return connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()


def database(tmp_path) -> tuple[Database, str]:
    path = f"{tmp_path}/wal.db"
    db = Database(f"sqlite:///{path}")
    ROWS.metadata.create_all(db.engine)
    return db, path


def insert(db: Database) -> int:
    """Insert the rows in one commit; the wal_autocheckpoint setting while it ran."""
    with db.session() as s:
        bulk.insert_rows(s, ROWS, ["id", "v"], [(i, "x" * 1000) for i in range(ROW_COUNT)])
        during = autocheckpoint(s.connection())
    return during


@pytest.mark.parametrize("big_write, deferred", [(ROW_COUNT, True), (ROW_COUNT + 1, False)])
def test_big_bulk_insert_defers_the_checkpoint(tmp_path, monkeypatch, big_write, deferred):
    monkeypatch.setattr(bulk, "BIG_WRITE", big_write)
    db, path = database(tmp_path)
    during = insert(db)
    assert during == (0 if deferred else WAL_AUTOCHECKPOINT)
    # ~10 MB of rows (more than the default 1,000 WAL pages): in the main file only if the commit checkpointed them.
    assert (os.path.getsize(path) < 500_000) == deferred
    with db.engine.connect() as conn:  # the same pooled connection, back to the default
        assert autocheckpoint(conn) == WAL_AUTOCHECKPOINT
        assert conn.execute(text("SELECT count(*) FROM rows")).scalar() == ROW_COUNT


def test_next_ordinary_commit_checkpoints(tmp_path):
    db, path = database(tmp_path)
    insert(db)
    with db.session() as s:
        s.execute(ROWS.insert().values(id=-1, v="small"))
    assert os.path.getsize(path) > 5_000_000
