"""Bulk inserts below the ORM, for the rows a big batch writes at once (items).

SQLAlchemy's per-row parameter processing costs more than SQLite's own executemany; here the
caller passes plain tuples (JSON columns already serialized) and the driver does the rest:
multi-row INSERTs on SQLite, COPY on PostgreSQL (reference/performance.md, rule 3)."""
from __future__ import annotations

from itertools import chain

from sqlalchemy import Table
from sqlalchemy.orm import Session

from batchrouter.db import defer_checkpoint

# From this many rows on, a SQLite commit leaves the WAL checkpoint to someone else.
BIG_WRITE = 10_000
# SQLite: rows per multi-row INSERT. One statement step per 200 rows instead of one per row
# (executemany) cut 100,000 items from 0.54 s to 0.41 s; SQLite (≥ 3.32) binds at most 32,766
# parameters per statement.
ROWS_PER_STATEMENT = 200
MAX_PARAMETERS = 32_000


def insert_rows(session: Session, table: Table, columns: list[str], rows: list[tuple],
                constants: dict | None = None) -> None:
    """Insert `rows` (tuples in `columns` order) into `table` inside the session's transaction.

    `constants` are column values shared by every row (ints and strings): on SQLite they go
    into the statement once instead of being bound 100,000 times."""
    if not rows:
        return
    constants = constants or {}
    connection = session.connection()
    dbapi = connection.connection.driver_connection
    names = ", ".join(f'"{c}"' for c in [*columns, *constants])
    if connection.dialect.name == "postgresql":
        tail = tuple(constants.values())
        with dbapi.cursor() as cursor, \
                cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row + tail)
        return
    if len(rows) >= BIG_WRITE:
        defer_checkpoint(connection.connection)
    one = "(" + ", ".join(["?"] * len(columns) + [_literal(v) for v in constants.values()]) + ")"
    head = f'INSERT INTO "{table.name}" ({names}) VALUES '
    per = max(1, min(ROWS_PER_STATEMENT, MAX_PARAMETERS // len(columns)))
    full = head + ", ".join([one] * per)
    cursor = dbapi.cursor()
    try:
        for start in range(0, len(rows), per):
            block = rows[start:start + per]
            sql = full if len(block) == per else head + ", ".join([one] * len(block))
            cursor.execute(sql, list(chain.from_iterable(block)))
    finally:
        cursor.close()


def _literal(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"bulk constants are ints or strings, not {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"
