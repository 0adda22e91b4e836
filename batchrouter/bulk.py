"""Bulk inserts below the ORM, for the rows a big batch writes at once (items).

SQLAlchemy's per-row parameter processing costs more than SQLite's own executemany; here the
caller passes plain tuples (JSON columns already serialized) and the driver does the rest:
executemany on SQLite, COPY on PostgreSQL (reference/performance.md, rule 3)."""
from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.orm import Session


def insert_rows(session: Session, table: Table, columns: list[str], rows: list[tuple]) -> None:
    """Insert `rows` (tuples in `columns` order) into `table` inside the session's transaction."""
    if not rows:
        return
    connection = session.connection()
    dbapi = connection.connection.driver_connection
    names = ", ".join(f'"{c}"' for c in columns)
    if connection.dialect.name == "postgresql":
        with dbapi.cursor() as cursor:
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    cursor = dbapi.cursor()
    try:
        cursor.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', rows)
    finally:
        cursor.close()
