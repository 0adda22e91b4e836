"""Alembic, driven from code: `flask db upgrade`, tests and /readyz share this."""
from __future__ import annotations

import functools

from alembic import command
from alembic.config import Config

from batchrouter.config import ROOT
from batchrouter.db import normalize_url


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return cfg


def _quiet() -> None:
    # Alembic logs every plugin at INFO through the app's root handler; keep start-up readable.
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)


def upgrade(database_url: str, revision: str = "head") -> None:
    _quiet()
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    _quiet()
    command.downgrade(alembic_config(database_url), revision)


@functools.cache
def code_heads() -> frozenset[str]:
    """The migration head(s) this code expects (read once per process)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def at_head(database_url: str) -> bool:
    """True when the database's alembic_version is this code's migration head."""
    from sqlalchemy import text

    from batchrouter.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version"))
            current = {row[0] for row in rows}
    except Exception:  # noqa: BLE001 - no alembic_version table: an empty database is behind
        return False
    finally:
        engine.dispose()
    return current == code_heads()
