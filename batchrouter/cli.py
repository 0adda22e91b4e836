"""Flask commands of SPEC §12: db upgrade, seed, worker, users create, keys create."""
from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from batchrouter import accounts, apikeys, catalog, ledger
from batchrouter.errors import DomainError
from batchrouter.extensions import account_settings, runtime

DEMO_EMAIL = "demo@batchrouter.local"
DEMO_PASSWORD = "batchrouter-demo"


def _fail(message: str):
    raise click.ClickException(message)


db_cli = AppGroup("db", help="Database schema.")
users_cli = AppGroup("users", help="Manage users.")
keys_cli = AppGroup("keys", help="Manage API keys.")
catalog_cli = AppGroup("catalog", help="Providers, models and prices.")
credits_cli = AppGroup("credits", help="Operator credit grants.")
billing_cli = AppGroup("billing", help="Stripe billing.")


@billing_cli.command("reconcile")
def billing_reconcile():
    """Compare recent Stripe Checkout Sessions with purchases and grants; apply missing
    grants once and report grants without a paid session (exit 1 if there are problems)."""
    from batchrouter import reconcile

    run = reconcile.run(runtime().db, current_app.config)
    click.echo(f"reconciliation {run.status}: {run.sessions_checked} sessions checked, "
               f"{run.grants_applied} missing grants applied")
    for finding in run.findings:
        click.echo(f"- {finding['kind']}: {finding['message']}")
    if run.status in ("problems", "failed"):
        raise SystemExit(1)


@credits_cli.command("grant")
@click.option("--workspace", "workspace_id", default=None, help="Workspace id (org_…).")
@click.option("--email", default=None, help="Or: the owner's email (their first workspace).")
@click.option("--amount", required=True, help="USD as a decimal string, e.g. 100.00")
@click.option("--reason", required=True)
def credits_grant(workspace_id, email, amount, reason):
    """Grant promo credits to a workspace (recorded in the ledger and the security log)."""
    import uuid

    from batchrouter import money
    from batchrouter.models import Workspace
    from batchrouter.records import log_security

    try:
        micros = money.parse(amount)
    except money.MoneyFormatError as exc:
        _fail(str(exc))
    with runtime().db.session() as session:
        if email and not workspace_id:
            user = accounts.find_user_by_email(session, accounts.normalize_email(email))
            if user is None:
                _fail(f"no user with email {email}")
            workspace_id = accounts.memberships_of(session, user.id)[0].workspace_id
        if not workspace_id or session.get(Workspace, workspace_id) is None:
            _fail("give --workspace org_… or --email of an existing user")
        try:
            ledger.grant(session, workspace_id, micros, kind="promo", reason=reason,
                         idempotency_key=f"cli-grant:{uuid.uuid4()}")
        except DomainError as exc:
            _fail(exc.message)
        log_security(session, "credits_granted", workspace_id=workspace_id,
                     amount=money.to_wire(micros), reason=reason, via="cli")
        available = ledger.balances(session, workspace_id).available
    click.echo(f"granted {money.to_wire(micros)} to {workspace_id}; "
               f"available {money.to_wire(available)}")


@db_cli.command("upgrade")
@click.option("--revision", default="head")
def db_upgrade(revision: str):
    """Apply migrations up to REVISION (default: head)."""
    from batchrouter.migrate import upgrade

    upgrade(current_app.config["DATABASE_URL"], revision)
    click.echo("database at " + revision)


@db_cli.command("check")
def db_check():
    """Exit 0 when the schema is at this code's migration head, 1 when it is behind."""
    from batchrouter.migrate import at_head

    if not at_head(current_app.config["DATABASE_URL"]):
        _fail("the database is not at the migration head; run `flask --app app db upgrade`")
    click.echo("database at head")


def seed_demo(session, settings: accounts.Settings, demo_credits: int):
    """Create the demo owner (verified operator) and top its workspace up once (idempotent)."""
    user = accounts.find_user_by_email(session, DEMO_EMAIL)
    if user is None:
        user = accounts.create_user(session, DEMO_EMAIL, DEMO_PASSWORD,
                                    accounts.Settings(settings.secret, settings.base_url, 0),
                                    name="Demo owner", workspace_name="Demo workspace",
                                    verified=True, operator=True)
    workspace_id = accounts.memberships_of(session, user.id)[0].workspace_id
    ledger.grant(session, workspace_id, demo_credits, kind="promo", reason="Demo credits",
                 idempotency_key=f"demo-credits:{workspace_id}")
    return user, workspace_id


@click.command("seed")
@with_appcontext
def seed():
    """Seed the demo workspace and owner login (safe to run again)."""
    with runtime().db.session() as session:
        catalog.seed(session)
        _user, workspace_id = seed_demo(session, account_settings(),
                                       current_app.config["BATCHROUTER_DEMO_CREDITS"])
    click.echo(f"demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (workspace {workspace_id})")


@click.command("worker")
@with_appcontext
@click.option("--burst", is_flag=True, help="Drain the queues and exit.")
@click.option("--queues", default=None, help="Comma-separated queue names.")
def worker(burst: bool, queues: str | None):
    """Run an RQ worker with the scheduler tick (outbox drain, periodic jobs, heartbeat)."""
    from jobs.worker import run_worker

    names = tuple(q for q in (queues or "").split(",") if q) or \
        current_app.config["BATCHROUTER_QUEUES"]
    if not burst:  # a burst run is a one-off (tests, cron): it keeps the caller's priority
        _lower_priority(int(current_app.config["BATCHROUTER_WORKER_NICE"]))
    run_worker(current_app._get_current_object(), names, burst=burst)


def _lower_priority(increment: int) -> None:
    """Background work yields the CPU to web requests on a shared machine (docs/operations.md)."""
    import os

    if increment > 0:
        os.nice(increment)


@click.command("metrics")
@with_appcontext
@click.option("--bind", default=None, help="host:port (default BATCHROUTER_METRICS_BIND).")
def metrics_serve(bind: str | None):
    """Serve /metrics without a token on an internal address (all processes of this machine)."""
    from batchrouter import metrics
    from batchrouter.api.metrics import state_collector

    bind = bind or current_app.config["BATCHROUTER_METRICS_BIND"]
    if not bind:
        _fail("give --bind host:port or set BATCHROUTER_METRICS_BIND")
    metrics.serve(bind, state_collector(current_app._get_current_object()))


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--workspace", default=None, help="Name of the user's new workspace.")
@click.option("--operator", is_flag=True, help="Site-wide operator.")
@click.option("--verified", is_flag=True, help="Mark the email verified.")
def users_create(email, password, workspace, operator, verified):
    """Create a user with their own workspace."""
    try:
        with runtime().db.session() as session:
            if accounts.find_user_by_email(session, accounts.normalize_email(email)):
                _fail(f"a user with email {email} exists")
            user = accounts.create_user(session, email, password, account_settings(),
                                        workspace_name=workspace, verified=verified,
                                        operator=operator)
            click.echo(user.id)
    except DomainError as exc:
        _fail(exc.message)


@keys_cli.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--scopes", default=None, help="Comma-separated; default: all the role allows.")
@click.option("--test", "test_mode", is_flag=True, help="A br_test_ key (sandbox only).")
def keys_create(email, name, scopes, test_mode):
    """Create an API key for a user's first workspace; prints only the secret."""
    try:
        with runtime().db.session() as session:
            user = accounts.find_user_by_email(session, accounts.normalize_email(email))
            if user is None:
                _fail(f"no user with email {email}")
            membership = accounts.memberships_of(session, user.id)[0]
            _key, secret = apikeys.create_key(
                session, workspace_id=membership.workspace_id, creator_id=user.id,
                creator_role=membership.role, name=name,
                scopes=[s.strip() for s in scopes.split(",")] if scopes else None,
                mode="test" if test_mode else "live", verified=True)
        click.echo(secret)
    except DomainError as exc:
        _fail(exc.message)


@catalog_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def catalog_import(path):
    """Replace catalog rows with those in PATH (the seed file's format); bumps the version."""
    try:
        with runtime().db.session() as session:
            written = catalog.apply_document(session, catalog.load_document(path),
                                             overwrite=True)
    except (DomainError, KeyError, ValueError) as exc:
        _fail(f"catalog not imported: {getattr(exc, 'message', exc)}")
    click.echo(f"imported {written} rows")


@catalog_cli.command("export")
def catalog_export():
    """Print the catalog as JSON (importable)."""
    with runtime().db.session() as session:
        click.echo(json.dumps(catalog.export_document(session), indent=1))


def register_cli(app: Flask) -> None:
    for command in (db_cli, users_cli, keys_cli, catalog_cli, credits_cli, billing_cli, seed,
                    worker, metrics_serve):
        app.cli.add_command(command)
