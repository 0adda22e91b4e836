"""The app a worker process built once; jobs reach the database and Redis through it."""
from __future__ import annotations

_app = None


def install(app) -> None:
    """Called by the worker entry (and test workers) before the work loop."""
    global _app
    _app = app


def app():
    global _app
    if _app is None:  # an `rq worker` started without our entry point
        from batchrouter import create_app
        _app = create_app()
    return _app


def runtime():
    return app().extensions["batchrouter"]


def config() -> dict:
    return app().config
