"""Alembic, driven from code: `flask db upgrade`, tests and /readyz share this."""
from __future__ import annotations

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
