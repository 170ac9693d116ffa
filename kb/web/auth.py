"""Staff sign-in, API tokens and the one answer to "whose view is this?": `current_audiences()`.

Patients never sign in; they get the public view. Staff sign in at /login (CSRF-protected form,
rate limited per client address through the store, so the limit is shared by every worker process and
survives restarts) or send `Authorization: Bearer <token>` to the JSON API.
Everything that decides what a request may see asks `current_audiences()`, and the search
layer and the store apply it inside their queries, so no template has to filter.

Sessions are Flask's signed cookie holding one random session id (`sid`) that is replaced at
every sign-in (no session fixation) and must also be live in the store, so signing out,
changing a password or removing a user ends a stolen cookie too.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import wraps
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired, Length

from kb import users
from kb.errors import ConfigError
from kb.models import AUDIENCES
from kb.users import User
from kb.web.app import error_response, get_store, is_api_request

log = logging.getLogger(__name__)

LOGIN_LIMIT = 10  # failed sign-ins per client address ...
LOGIN_WINDOW = 60.0  # ... within this many seconds; then 429 until the oldest of them is this old
PUBLIC: tuple[str, ...] = ("public",)
USER_KEY = "kb.auth.user"  # where the request's user is cached (WSGI environ)
SIGN_IN_FAILED = "Sign-in failed: the user name or password is not right."
SECURE_MODES = {"auto": None, "true": True, "always": True, "1": True, "yes": True, "on": True,
                "false": False, "never": False, "0": False, "no": False, "off": False}

csrf = CSRFProtect()
bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[InputRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=users.MAX_PASSWORD)])
    next = HiddenField()


class KBSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the Secure flag decided per request (SECURE_COOKIES=auto)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        mode = SECURE_MODES.get(str(app.config.get("SECURE_COOKIES", "auto")).strip().lower())
        if mode is not None:
            return mode
        return bool(has_request_context() and request.is_secure)


# -- who is asking --------------------------------------------------------------------------------------------

def current_user() -> User | None:
    """The signed-in staff user (session cookie, or a Bearer token on /api), cached for the request."""
    if not has_request_context():
        return None
    if USER_KEY in request.environ:  # per request, not `g`: an app context may outlive one request
        return request.environ[USER_KEY]
    user: User | None = None
    header = request.headers.get("Authorization", "")
    if header and is_api_request():
        scheme, _, secret = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            user = users.token_user(get_store(), secret.strip(), path=request.path)
    else:
        sid = session.get("sid")
        if sid:
            user = users.session_user(get_store(), sid)
            if user is None:  # expired, signed out elsewhere, password changed or user removed
                session.pop("sid", None)  # not clear(): a form on this page may already hold the CSRF token
    request.environ[USER_KEY] = user
    return user


def current_audiences() -> tuple[str, ...]:
    """Audiences this request may see: ("public",) for everyone, plus "staff" for signed-in staff.

    App config AUDIENCES sets what anonymous visitors see (default public only); it is not a kb
    setting, so neither kb.toml nor the environment can change it, only code building the app.
    """
    if not has_request_context():
        return PUBLIC
    user = current_user()
    if user is not None:
        return user.audiences
    base = current_app.config.get("AUDIENCES") or PUBLIC
    return tuple(a for a in AUDIENCES if a in base) or PUBLIC


def is_staff() -> bool:
    return "staff" in current_audiences()


def staff_required(view: F) -> F:
    """Only signed-in staff: pages send others to /login, the API answers 401."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or "staff" not in user.audiences:
            if is_api_request():
                return _unauthorized("Sign in, or send an API token as `Authorization: Bearer TOKEN`.")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")), code=303)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _unauthorized(message: str) -> Response:
    return error_response(401, message, "Staff create API tokens with `kb token create USER`.",
                          {"WWW-Authenticate": 'Bearer realm="kb"'})


def safe_next(target: str | None) -> str:
    """A local path to return to after signing in; anything else (other hosts, //evil, \\evil) is the home page."""
    home = url_for("pages.index")
    if not target or not isinstance(target, str) or len(target) > 2000:
        return home
    if any(ord(c) < 0x20 or c == "\\" for c in target):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return home
    return target


# -- views ----------------------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Staff sign-in form; one message for every failure, so names cannot be probed."""
    form = LoginForm()
    error = ""
    if request.method == "POST":
        store = get_store()
        attempt = _count_attempt(store)  # raises SignInLimited (429) when the address has none left
        valid = form.validate()
        name = (form.username.data or "").strip() if valid else ""
        user = users.authenticate(store, name, form.password.data or "")  # hashes even for bad input
        if user is not None:
            users.end_login_attempt(store, attempt)
            _sign_in(store, user)
            return redirect(safe_next(form.next.data), code=303)
        known = users.get_user(store, name) if name else None
        users.audit(store, "login_failed", known.name if known else "",
                    f"from {request.remote_addr or '?'}" + ("" if known else " (unknown user)"))
        error = SIGN_IN_FAILED
    elif not form.next.data:
        form.next.data = safe_next(request.args.get("next"))
    response = current_app.make_response(render_template("login.html", form=form, error=error, q=""))
    response.headers["Cache-Control"] = "no-store"
    return response


class SignInLimited(Exception):
    """This client address has used up its LOGIN_LIMIT sign-in attempts of the last LOGIN_WINDOW seconds."""


def _count_attempt(store: Any) -> int | None:
    """Count this sign-in attempt against the client address: its id (None with the limit off, for tests)."""
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return None
    attempt = users.begin_login_attempt(store, request.remote_addr, limit=LOGIN_LIMIT, window=LOGIN_WINDOW)
    if attempt is None:
        raise SignInLimited(request.remote_addr)
    return attempt


def _sign_in(store: Any, user: User) -> None:
    """Replace the whole session (new sid): a session id planted before sign-in is worth nothing after it."""
    old = session.get("sid")
    if old:
        users.end_session(store, old)
    session.clear()
    hours = float(current_app.config.get("SESSION_HOURS") or users.SESSION_HOURS)
    session["sid"] = users.start_session(store, user, hours=hours)
    session.permanent = True
    users.audit(store, "login", user.name, f"from {request.remote_addr or '?'}")
    request.environ[USER_KEY] = user


@bp.post("/logout")
def logout() -> Response:
    """End the session here and in the store (a copied cookie stops working too)."""
    user = current_user()
    sid = session.get("sid")
    if sid:
        users.end_session(get_store(), sid)
    if user is not None:
        users.audit(get_store(), "logout", user.name)
    session.clear()
    request.environ[USER_KEY] = None
    return redirect(url_for("pages.index"), code=303)


# -- wiring ---------------------------------------------------------------------------------------------------

def _check_bearer() -> Response | None:
    """Reject a wrong or revoked token at once rather than quietly answering with the public view."""
    if not is_api_request() or not request.headers.get("Authorization"):
        return None
    scheme, _, secret = request.headers["Authorization"].strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        request.environ[USER_KEY] = None
        return _unauthorized("Send the API token as `Authorization: Bearer TOKEN`.")
    if current_user() is None:
        return _unauthorized("The API token is not valid (mistyped, revoked, or its user was removed).")
    return None


def _private_when_signed_in(response: Response) -> Response:
    """Pages differ per user: shared caches must never hand a staff page to a patient."""
    if request.endpoint == "static":
        return response
    response.vary.add("Cookie")
    if is_api_request():
        response.vary.add("Authorization")
    if request.environ.get(USER_KEY) is not None:
        response.headers["Cache-Control"] = "private, no-store"
    return response


def _template_globals() -> dict[str, Any]:
    user = current_user()
    return {"kb_user": user, "staff_view": user is not None and "staff" in user.audiences}


def _csrf_error(exc: CSRFError) -> Response:
    log.info("refused a form post without a valid CSRF token: %s", exc.description)
    return error_response(400, "The form had expired or did not come from this site, so it was not accepted.",
                          "Reload the page and send the form again.")


def _rate_limited(exc: SignInLimited) -> Response:
    log.warning("sign-in rate limit reached for %s", request.remote_addr)
    return error_response(429, "Too many failed sign-in attempts from your address.",
                          "Wait a minute, then try again.", {"Retry-After": str(int(LOGIN_WINDOW))})


def init_app(app: Flask) -> None:
    """Sessions, CSRF protection and the auth views (whose sign-in form is rate limited) for one app.

    App config RATELIMIT_ENABLED = False (tests only, not a kb setting) turns the sign-in limit off.
    """
    mode = str(app.config.get("SECURE_COOKIES", "auto")).strip().lower()
    if mode not in SECURE_MODES:
        raise ConfigError(f"Setting SECURE_COOKIES={mode!r} is not one of auto, true, false.",
                          "Use auto (Secure over https), true (always) or false (plain http only).")
    hops = int(app.config.get("PROXY_HOPS") or 0)
    if hops < 0:
        raise ConfigError(f"Setting PROXY_HOPS={hops} is negative.", "Use 0 without a reverse proxy, else 1.")
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    hours = float(app.config.get("SESSION_HOURS") or users.SESSION_HOURS)
    # Flask's defaults are not these (SameSite unset, 31-day sessions), so set them outright.
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=hours))
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    app.session_interface = KBSessionInterface()

    csrf.init_app(app)
    app.register_blueprint(bp)
    for name in ("api",):  # the JSON API is GET only and takes Bearer tokens, not forms
        if name in app.blueprints:
            csrf.exempt(app.blueprints[name])

    app.before_request(_check_bearer)
    app.after_request(_private_when_signed_in)
    app.context_processor(_template_globals)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(SignInLimited, _rate_limited)
