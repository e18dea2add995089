"""What every dashboard page shares: templates and their filters, the signed-in session as a
dependency, CSRF checks, security headers, and error pages instead of JSON errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from maintlink.errors import MaintlinkError
from maintlink.runtime import Runtime
from maintlink.web import session as sessions

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
PAGE_SIZE = 50

SECURITY_HEADERS = {
    # No inline script or style anywhere: the one script and stylesheet are static files.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show live state and sometimes a secret shown once: never from a cache.
    "Cache-Control": "no-store",
}


class NotSignedIn(Exception):
    pass


class CsrfRejected(Exception):
    pass


# --- templates ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Badge:
    label: str
    tone: str  # ok | warn | bad | info | muted
    glyph: str  # a shape as well as a colour: never colour alone


BADGES: dict[str, dict[str, Badge]] = {
    "connection": {
        "active": Badge("Active", "ok", "●"),
        "offline": Badge("Offline", "warn", "▲"),
        "reauth_required": Badge("Reauthorization required", "bad", "✕"),
        "disconnected": Badge("Disconnected", "muted", "○"),
    },
    "sync": {
        "running": Badge("Running", "info", "◐"),
        "completed": Badge("Completed", "ok", "●"),
        "partial": Badge("Partly failed", "warn", "▲"),
        "failed": Badge("Failed", "bad", "✕"),
    },
    "delivery": {
        "succeeded": Badge("Delivered", "ok", "●"),
        "pending": Badge("Pending", "info", "◐"),
        "retrying": Badge("Retrying", "warn", "▲"),
        "delivering": Badge("Sending", "info", "◐"),
        "failed": Badge("Failed", "bad", "✕"),
    },
    "endpoint": {
        "enabled": Badge("Enabled", "ok", "●"),
        "failing": Badge("Failing", "warn", "▲"),
        "disabled": Badge("Disabled", "bad", "✕"),
    },
    "attempt": {
        "ok": Badge("Succeeded", "ok", "●"),
        "failed": Badge("Failed", "bad", "✕"),
    },
    "link": {
        "open": Badge("Open", "ok", "●"),
        "used": Badge("Used", "muted", "○"),
        "expired": Badge("Expired", "muted", "○"),
        "revoked": Badge("Revoked", "muted", "○"),
        "locked": Badge("Locked", "bad", "✕"),
    },
}


def badge(kind: str, value: str | None, label: str | None = None) -> Markup:
    spec = BADGES.get(kind, {}).get(value or "", Badge(str(value or "unknown"), "muted", "○"))
    return Markup(
        '<span class="badge badge-{tone}"><span class="glyph" aria-hidden="true">{glyph}'
        "</span>{label}</span>"
    ).format(tone=spec.tone, glyph=spec.glyph, label=label or spec.label)


def http_badge(code: int | None) -> Markup:
    if code is None:
        return Markup('<span class="badge badge-muted">no answer</span>')
    tone = "ok" if 200 <= code < 300 else "warn" if code < 500 and code != 401 else "bad"
    return Markup('<span class="badge badge-{tone} code">{code}</span>').format(
        tone=tone, code=code)


def _relative(delta_seconds: float) -> str:
    s = abs(delta_seconds)
    if s < 45:
        return "just now" if delta_seconds >= 0 else "in a few seconds"
    if s < 57 * 60:
        n, unit = max(1, round(s / 60)), "min"
    elif s < 23 * 3600:
        n, unit = round(s / 3600), "hour"
    else:
        n, unit = round(s / 86400), "day"
    word = unit if n == 1 or unit == "min" else unit + "s"
    return f"{n} {word} ago" if delta_seconds >= 0 else f"in {n} {word}"


def utc(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "—"


def make_when(now: datetime) -> Callable[[datetime | None, str], Markup]:
    def when(dt: datetime | None, empty: str = "never") -> Markup:
        if dt is None:
            return Markup('<span class="muted">{}</span>').format(empty)
        return Markup('<time datetime="{iso}" title="{full}">{rel}</time>').format(
            iso=dt.isoformat(), full=utc(dt), rel=_relative((now - dt).total_seconds()))
    return when


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    return f"{ms / 1000:.1f} s"


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=False, default=str, ensure_ascii=False)


def integration_name(slug: str) -> str:
    from maintlink.connectors.registry import CONNECTORS

    cls = CONNECTORS.get(slug)
    return cls.name if cls is not None else slug


@lru_cache(maxsize=8)
def _asset_version(name: str) -> str:
    """Cache-busting suffix for a static file (its content hash)."""
    try:
        return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:10]
    except OSError:
        return "0"


def asset(name: str) -> str:
    return f"/static/{name}?v={_asset_version(name)}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(badge=badge, http_badge=http_badge, asset=asset,
                       integration_name=integration_name, utc=utc)
    env.filters.update(duration=duration, pretty_json=pretty_json, urlq=quote)
    return env


templates = _environment()


# --- pages ---------------------------------------------------------------------------------------

def rt_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def current_session(request: Request) -> sessions.Session:
    """The signed-in session, re-checked against the store on every request."""
    rt = rt_of(request)
    found = sessions.read(rt.settings, request.cookies.get(sessions.COOKIE))
    if found is None:
        raise NotSignedIn
    async with rt.engine.connect() as conn:
        checked = await sessions.still_valid(conn, found)
    if checked is None:
        raise NotSignedIn
    return checked


SessionDep = Annotated[sessions.Session, Depends(current_session)]


async def checked_form(request: Request, session: SessionDep) -> Mapping[str, Any]:
    """The posted form of a signed-in session, after its CSRF token was checked."""
    form = await request.form()
    if not sessions.csrf_ok(rt_of(request).settings, session, form.get("csrf_token")):
        raise CsrfRejected
    return form


FormDep = Annotated[Mapping[str, Any], Depends(checked_form)]


def is_fragment(request: Request) -> bool:
    return request.query_params.get("fragment") == "1"


# Messages after an action (Post/Redirect/Get): fixed texts chosen by a code in the URL, so
# nothing a link could carry is ever shown as a message.
NOTICES: dict[str, tuple[str, str]] = {
    "sync-requested": ("ok", "Sync requested: a worker starts it within seconds."),
    "sync-refused": ("warn", "Only an active connection can sync. Reconnect it first."),
    "disconnected": ("ok", "Disconnected. Its token no longer works and syncs stopped; "
                           "the synced data is kept until you delete it."),
    "link-revoked": ("ok", "The reconnect link was revoked."),
    "resent": ("ok", "Resent: {n} new deliveries queued."),
    "endpoint-disabled": ("warn", "That endpoint is disabled: enable it first."),
    "enabled": ("ok", "The endpoint is enabled again ({n} failed deliveries re-queued)."),
    "recovered": ("ok", "{n} failed deliveries re-queued."),
    "test-sent": ("ok", "Test event {id} queued for this endpoint."),
}


def notice_of(request: Request) -> tuple[str, str] | None:
    spec = NOTICES.get(request.query_params.get("notice", ""))
    if spec is None:
        return None
    n = request.query_params.get("n", "")
    ident = request.query_params.get("id", "")
    tone, text = spec
    return tone, text.format(n=n if n.isdigit() else "some",
                             id=ident if ident.replace("_", "").isalnum() else "")


def render(
    request: Request, template: str, context: Mapping[str, Any], *, status_code: int = 200,
    session: sessions.Session | None = None, section: str = "",
) -> HTMLResponse:
    rt = rt_of(request)
    now = rt.clock()
    ctx: dict[str, Any] = {
        "request": request, "session": session, "section": section, "now": now,
        "when": make_when(now), "page_url": page_url(request),
        "csrf": sessions.csrf_token(rt.settings, session) if session else "",
        "settings": rt.settings, "notice": notice_of(request),
    }
    ctx.update(context)
    html = templates.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code)


def page_url(request: Request, **changes: str | None) -> str:
    """This page's URL with some query parameters changed (None removes one); the fragment
    switch and cursors are never carried over unless given."""
    params = {k: v for k, v in request.query_params.items()
              if k not in ("fragment", "after", "notice", "n", "id") and v}
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def safe_back(value: object, default: str) -> str:
    """A return address after a form: only a path inside the dashboard (no open redirect)."""
    if isinstance(value, str) and value.startswith("/dashboard") and "//" not in value \
            and "\\" not in value and len(value) < 2000 and not any(c in value for c in "\r\n"):
        return value
    return default


def with_notice(path: str, notice: str, **extra: str) -> str:
    """`path` with a notice code in its query (before any #fragment)."""
    path, hash_mark, fragment = path.partition("#")
    sep = "&" if "?" in path else "?"
    return f"{path}{sep}{urlencode({'notice': notice, **extra})}{hash_mark}{fragment}"


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def clean_after(value: str | None) -> str | None:
    """A cursor is the last id of the previous page (ids sort by time); anything else is
    ignored rather than refused, so a mangled URL still shows the first page."""
    if value and len(value) <= 40 and value.replace("_", "").isalnum():
        return value
    return None


# --- errors and headers --------------------------------------------------------------------------

_ERROR_TITLES = {404: "Not found", 400: "Bad request", 403: "Not allowed", 409: "Conflict",
                 422: "Bad request"}


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    if is_fragment(request):
        return HTMLResponse(f'<p class="notice notice-bad">{escape(message)}</p>',
                            status_code=status)
    return render(request, "dashboard/error.html", {
        "status": status, "title": _ERROR_TITLES.get(status, "Something went wrong"),
        "message": message}, status_code=status)


def _login_redirect(request: Request) -> Response:
    if is_fragment(request):
        # The script stops polling and says so; a full page goes to the sign-in form.
        return HTMLResponse('<p class="notice notice-warn">Signed out.</p>', status_code=401)
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    return redirect(f"/dashboard/login?next={quote(target, safe='')}")


class DashboardRoute(APIRoute):
    """Dashboard routes answer with pages: sign-in redirects and HTML errors, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotSignedIn:
                response = _login_redirect(request)
            except CsrfRejected:
                response = error_page(
                    request, 403,
                    "This form has expired or was not sent from the dashboard. "
                    "Go back, reload the page and try again.")
            except MaintlinkError as exc:
                response = error_page(request, exc.status if exc.status < 500 else 500,
                                      exc.message)
            except RequestValidationError:
                response = error_page(request, 400, "Some of the page's parameters are "
                                                    "not valid.")
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return wrapped
