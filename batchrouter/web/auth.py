"""Sign up, verify email, sign in/out, forgot and reset password (SPEC §9, §12 fixed paths)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from batchrouter import accounts
from batchrouter.errors import ValidationFailed
from batchrouter.extensions import account_settings, client, client_ip, db_session, limiter
from batchrouter.models import User
from batchrouter.tokens import TokenExpired, TokenInvalid
from batchrouter.web.consent import track_event
from batchrouter.web.htmx import redirect_to
from batchrouter.web.session import sign_in, sign_out

bp = Blueprint("auth", __name__)

GENERIC_LOGIN_ERROR = "Invalid email or password."


def _login_account_key() -> str:
    return "login-account:" + (request.form.get("email") or "").strip().lower()[:320]


def _limit(name: str):
    return lambda: current_app.config[name]


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths, so ?next= cannot send people elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") \
            and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("console.dashboard")


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(_limit("BATCHROUTER_RECOVERY_LIMIT_IP"), key_func=client_ip, methods=["POST"])
def signup():
    """Create an account; the answer is the same whether or not the email is taken."""
    if request.method == "GET":
        return render_template("auth/signup.html", form={})
    form = request.form
    session = db_session()
    try:
        user = accounts.sign_up(session, form.get("email", ""), form.get("password", ""),
                                account_settings(), client(), name=form.get("name"),
                                workspace_name=form.get("workspace_name"))
    except ValidationFailed as exc:
        session.rollback()
        return render_template("auth/signup.html", form=form, error=exc.message), 422
    session.commit()
    if user is not None:
        track_event("signed_up")
    return render_template("auth/check_inbox.html", email=form.get("email", "").strip())


@bp.get("/verify-email/<token>")
def verify_email(token: str):
    """Open the emailed link: verify once, then sign in (or go on if already signed in)."""
    session = db_session()
    try:
        accounts.verify_email(session, token, account_settings())
    except (TokenInvalid, TokenExpired) as exc:
        session.rollback()
        return render_template("auth/verify_failed.html", message=exc.message), 400
    session.commit()
    flash("Your email address is verified.", "success")
    target = "console.dashboard" if current_user.is_authenticated else "auth.login"
    return redirect(url_for(target), code=303)


@bp.post("/verify-email/resend")
@login_required
@limiter.limit(_limit("BATCHROUTER_RECOVERY_LIMIT_IP"), key_func=client_ip)
def resend_verification():
    """Send a fresh verification link to the signed-in user."""
    session = db_session()
    user = session.get(User, current_user.id)
    if not user.is_verified:
        accounts.send_verification(session, user, account_settings())
        session.commit()
    flash(f"We sent a new verification link to {user.email}.", "info")
    return redirect_to(url_for("console.dashboard"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_limit("BATCHROUTER_LOGIN_LIMIT_IP"), key_func=client_ip, methods=["POST"])
@limiter.limit(_limit("BATCHROUTER_LOGIN_LIMIT_ACCOUNT"), key_func=_login_account_key,
               methods=["POST"])
def login():
    """Sign in with email and password; one message for every failure."""
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(url_for("console.dashboard"))
        return render_template("auth/login.html", email="", next=request.args.get("next"))
    session = db_session()
    user = accounts.authenticate(session, request.form.get("email", ""),
                                 request.form.get("password", ""), client())
    session.commit()
    if user is None:
        return render_template("auth/login.html", email=request.form.get("email", ""),
                               error=GENERIC_LOGIN_ERROR, next=request.form.get("next")), 401
    sign_in(user)
    return redirect_to(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    """End this session on the server too (a copied cookie stops working)."""
    if current_user.is_authenticated:
        sign_out(current_user._get_current_object())
    flash("You are signed out.", "info")
    return redirect_to(url_for("auth.login"))


@bp.route("/forgot-password", methods=["GET", "POST"])
@limiter.limit(_limit("BATCHROUTER_RECOVERY_LIMIT_IP"), key_func=client_ip, methods=["POST"])
def forgot_password():
    """Ask for a reset link; the answer never says whether the account exists."""
    if request.method == "GET":
        return render_template("auth/forgot.html")
    session = db_session()
    accounts.request_password_reset(session, request.form.get("email", ""), account_settings(),
                                    client())
    session.commit()
    return render_template("auth/forgot_sent.html")


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    """Choose a new password from an emailed link (single use, expiring)."""
    g.no_store = True
    session = db_session()
    try:
        accounts.user_for_reset_token(session, token, account_settings())
    except (TokenInvalid, TokenExpired) as exc:
        return _no_referrer(render_template("auth/reset_failed.html", message=exc.message), 400)
    if request.method == "GET":
        return _no_referrer(render_template("auth/reset.html", token=token), 200)
    password = request.form.get("password", "")
    if password != request.form.get("password_confirm", ""):
        return _no_referrer(render_template("auth/reset.html", token=token,
                                            error="The two passwords differ."), 422)
    try:
        accounts.reset_password(session, token, password, account_settings(), client())
    except ValidationFailed as exc:
        session.rollback()
        return _no_referrer(render_template("auth/reset.html", token=token,
                                            error=exc.message), 422)
    session.commit()
    if current_user.is_authenticated:
        from flask_login import logout_user
        logout_user()
    flash("Your password is changed and every session was signed out. Sign in again.",
          "success")
    return redirect(url_for("auth.login"), code=303)


def _no_referrer(body: str, status: int):
    from flask import make_response

    response = make_response(body, status)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
