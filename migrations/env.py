"""Alembic environment: plain, target_metadata = Base.metadata."""
from __future__ import annotations

import os

from alembic import context

from batchrouter.config import Defaults
from batchrouter.db import make_engine, normalize_url
from batchrouter.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    return normalize_url(config.get_main_option("sqlalchemy.url")
                         or os.environ.get("DATABASE_URL") or Defaults.DATABASE_URL)


def run_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        # render_as_batch lets ALTER-style changes work on SQLite too.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
