"""Bulk inserts below the ORM, for the rows a big batch writes at once (items).

SQLAlchemy's per-row parameter processing costs more than SQLite's own executemany; here the
caller passes plain tuples (JSON columns already serialized) and the driver does the rest:
executemany on SQLite, COPY on PostgreSQL (reference/performance.md, rule 3)."""
from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.orm import Session

from batchrouter.db import defer_checkpoint

# From this many rows on, a SQLite commit leaves the WAL checkpoint to someone else.
BIG_WRITE = 10_000


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
        with dbapi.cursor() as cursor:
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row + tail)
        return
    if len(rows) >= BIG_WRITE:
        defer_checkpoint(connection.connection)
    values = ", ".join(["?"] * len(columns) + [_literal(v) for v in constants.values()])
    cursor = dbapi.cursor()
    try:
        cursor.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({values})', rows)
    finally:
        cursor.close()


def _literal(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"bulk constants are ints or strings, not {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"
