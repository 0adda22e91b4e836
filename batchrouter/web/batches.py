"""Console batch pages: list, detail with a live progress fragment, items, receipts, cancel,
downloads and feedback (SPEC §9)."""
from __future__ import annotations

import functools
import hashlib

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from batchrouter import artifacts, batches, feedback, finalize
from batchrouter.errors import DomainError, NotFound
from batchrouter.extensions import db_session
from batchrouter.models import File
from batchrouter.models.batches import BATCH_TERMINAL, ITEM_TERMINAL
from batchrouter.web.console import require_scope
from batchrouter.web.htmx import is_fragment_request, redirect_to, render

bp = Blueprint("batches", __name__, url_prefix="/batches")
STATUSES = ("queued", "processing", "cancelling", "completed", "failed", "cancelled", "expired")
PAGE = 20
ITEMS_PAGE = 25  # rows per items page; with the page chrome this stays under 30 KB


def _batch(batch_id: str):
    return batches.get_batch(db_session(), current_user.workspace_id, batch_id)


def _read_batch(batch_id: str):
    """For the pages that only show the batch (see batches.read_batch)."""
    return batches.read_batch(db_session(), current_user.workspace_id, batch_id)


@bp.get("")
@require_scope("read")
def index():
    """Batches, newest first: filter by status, search by id, keyset paging."""
    status = request.args.get("status") if request.args.get("status") in STATUSES else None
    search = (request.args.get("q") or "").strip() or None
    rows = batches.list_batches(db_session(), current_user.workspace_id, status=status,
                                search=search, before=request.args.get("after"),
                                limit=PAGE + 1)
    return render("batches/index.html", "batches/_list.html", batches=rows[:PAGE],
                  more=len(rows) > PAGE, status=status, q=search or "", statuses=STATUSES,
                  progress=batches.progress)


def _detail_context(batch) -> dict:
    session = db_session()
    return {"batch": batch, "lanes": batches.unit_lanes(session, batch.id),
            "files": batches.files_of(session, batch), "terminal": batch.status in BATCH_TERMINAL,
            "progress": batches.progress(batch), "counts": batches.counts(batch)}


@bp.get("/<batch_id>")
@require_scope("read")
def detail(batch_id: str):
    """One batch: progress, lanes, items, receipts, downloads."""
    batch = _read_batch(batch_id)
    return render_template("batches/detail.html", **_detail_context(batch),
                           **_items_context(batch))


@bp.get("/<batch_id>/progress")
@require_scope("read")
def progress(batch_id: str):
    """The self-polling progress region; it stops polling once the batch is terminal.

    Polled every second by every open batch page: the browser revalidates with the ETag it
    was given, and an unchanged batch costs one row read and a 304 (no lanes, no render)."""
    batch = _read_batch(batch_id)
    if not is_fragment_request():
        return redirect(url_for("batches.detail", batch_id=batch_id))
    etag = f"{_template_version('batches/_progress.html')}-{batches.progress_etag(batch)}"
    if request.if_none_match.contains_weak(etag):
        response = current_app.response_class(status=304)
    else:
        response = render("batches/detail.html", "batches/_progress.html",
                          **_detail_context(batch))
    response.set_etag(etag, weak=True)
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "HX-Request"
    return response


@functools.cache
def _template_version(name: str) -> str:
    """A deploy that changes the template changes every ETag made from it."""
    source = current_app.jinja_env.loader.get_source(current_app.jinja_env, name)[0]
    return hashlib.blake2b(source.encode(), digest_size=4).hexdigest()


def _items_context(batch) -> dict:
    status = request.args.get("item_status")
    status = status if status in ITEM_TERMINAL + ("pending", "running") else None
    cursor = request.args.get("cursor", "-1")
    after = int(cursor) if cursor.lstrip("-").isdigit() else -1
    rows, next_cursor = batches.item_table(db_session(), batch.id, status=status, after=after,
                                           limit=ITEMS_PAGE)
    return {"items": rows, "next_cursor": next_cursor, "item_status": status,
            "item_statuses": ITEM_TERMINAL + ("pending", "running")}


@bp.get("/<batch_id>/items")
@require_scope("read")
def items(batch_id: str):
    """The items table region (status filter, paging)."""
    batch = _read_batch(batch_id)
    return render("batches/detail.html", "batches/_items.html", **_detail_context(batch),
                  **_items_context(batch))


@bp.get("/<batch_id>/receipt")
@require_scope("read")
def receipt(batch_id: str):
    """Route receipt (every attempt of every item) and billing receipt."""
    batch = _batch(batch_id)
    cursor = request.args.get("cursor", "-1")
    session = db_session()
    return render_template("batches/receipt.html", batch=batch,
                           route=finalize.route_receipt(
                               session, batch, after=int(cursor)
                               if cursor.lstrip("-").isdigit() else -1, limit=50),
                           billing=finalize.billing_receipt(session, batch))


@bp.get("/<batch_id>/download/<kind>")
@require_scope("read")
def download(batch_id: str, kind: str):
    """Mint a short-lived signed link on click and go there."""
    batch = _batch(batch_id)
    file_id = {"results": batch.results_file_id, "errors": batch.errors_file_id}.get(kind)
    if not file_id:
        raise NotFound("This file is written when the batch finishes.")
    cfg = current_app.config
    link = artifacts.sign_url(cfg["SECRET_KEY"], "", db_session().get(File, file_id),
                              cfg["BATCHROUTER_ARTIFACT_URL_TTL"])
    return redirect(link["url"], code=303)


@bp.route("/<batch_id>/cancel", methods=["GET", "POST"])
@require_scope("cancel")
def cancel(batch_id: str):
    """Confirm, then cancel: finished items are delivered, the rest released."""
    batch = _batch(batch_id)
    if request.method == "GET":
        return render_template("batches/cancel.html", batch=batch)
    session = db_session()
    try:
        batches.request_cancel(session, batch)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect_to(url_for("batches.detail", batch_id=batch_id))
    session.commit()
    flash("Cancelling: finished items will be delivered and the rest released.", "success")
    return redirect_to(url_for("batches.detail", batch_id=batch_id))


@bp.post("/<batch_id>/feedback")
@require_scope("submit")
def feedback_form(batch_id: str):
    """Rate one item's result: the items table is one form, the Rate button names the item
    and its row's select the score."""
    item = request.form.get("item", "")
    return _record_feedback(batch_id, item, request.form.get(f"score:{item}", "0"))


@bp.post("/<batch_id>/items/<path:customer_item_id>/feedback")
@require_scope("submit")
def item_feedback(batch_id: str, customer_item_id: str):
    """Rate one item's result (a form per item: score, optional label)."""
    return _record_feedback(batch_id, customer_item_id, request.form.get("score", "0"))


def _record_feedback(batch_id: str, customer_item_id: str, score: str):
    batch = _batch(batch_id)
    session = db_session()
    try:
        feedback.record(session, batch, customer_item_id, int(score),
                        label=request.form.get("label") or None, user_id=current_user.id)
    except (ValueError, DomainError) as exc:
        flash(getattr(exc, "message", "Choose a score from 1 to 5."), "error")
        return redirect_to(url_for("batches.detail", batch_id=batch_id))
    session.commit()
    flash(f"Thanks — feedback saved for {customer_item_id}.", "success")
    return redirect_to(url_for("batches.detail", batch_id=batch_id))
