"""The hosted connection flow at /connect/{link_token}.

Server-rendered pages that work without JavaScript: plain links and form POSTs answered
with redirects (JavaScript only adds the search filter, the "verifying" state, the OAuth
popup when embedded, and `postMessage` to the embedding page). Every page carries the
link token in its path, so every answer forbids caching and referrers, and only the
token's own `allowed_origin` may frame it.

Screens: picker -> credentials form (or OAuth2 redirect) -> success, which returns the
browser to the developer's `redirect_uri` with a one-time code, or posts the code to the
embedding page. Errors are typed: the system's own reason for refused credentials, an
unreachable system, a missing permission, an expired, used or locked link.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import Row

from maintlink.api.errors import request_id_of
from maintlink.api.routes.link_tokens import public_base
from maintlink.api.schemas import ConnectionSettings
from maintlink.connectors.base import Connector, ConnectorError, CredentialField
from maintlink.connectors.registry import CONNECTORS
from maintlink.domain import connections as conns
from maintlink.domain import link_tokens as links
from maintlink.domain.endpoints import check_url
from maintlink.errors import MaintlinkError
from maintlink.runtime import Runtime

log = logging.getLogger("maintlink.connect")
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

CALLBACK_PATH = "/connect/oauth/callback"
AUTH_LABELS = {"api_key": "API key", "oauth2": "Sign in with your account",
               "basic": "User name and password"}
# Names an OAuth2 connector keeps in its credentials that come from the token endpoint,
# never from the customer.
OAUTH_TOKEN_FIELDS = frozenset({
    "access_token", "refresh_token", "expires_at", "expires_in", "token_type", "scope",
    "id_token", "client_id", "client_secret", "token_url",
})


def _inline_code(text: str | None) -> Markup:
    """Help texts use `backticks` for literal values; show them as <code>."""
    escaped = html.escape(text or "")
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))  # noqa: S704 - escaped


templates.env.filters["inline_code"] = _inline_code


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


# --- responses ----------------------------------------------------------------------------

def _secure(response: Response, frame_origin: str | None) -> Response:
    """Headers of every flow answer. No `form-action`: Chromium applies it to the redirect
    that follows a POST, and the OAuth step redirects to an authorization server known
    only once the form is submitted."""
    ancestors = frame_origin or "'none'"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if frame_origin is None:
        response.headers["X-Frame-Options"] = "DENY"
    return response


def _page(
    request: Request, name: str, context: dict[str, Any], *, status: int = 200,
    frame_origin: str | None = None, headers: Mapping[str, str] | None = None,
) -> Response:
    base = {"request_id": request_id_of(request),
            "static": request.scope.get("root_path", "") + "/static"}
    response = templates.TemplateResponse(
        request, f"connect/{name}", {**base, **context}, status_code=status,
        headers=dict(headers or {}))
    return _secure(response, frame_origin)


def _redirect(url: str, frame_origin: str | None) -> Response:
    return _secure(RedirectResponse(url, status_code=303), frame_origin)


# Page wording per error code: (title, hint). The message comes from the error itself.
_ERROR_PAGES: dict[str, tuple[str, str]] = {
    "LINK_TOKEN_INVALID": ("This link is not valid",
                           "Ask the application that sent you here for a new link."),
    "LINK_TOKEN_EXPIRED": ("This link has expired",
                           "Links are valid for a limited time. Go back to the application "
                           "and start again to get a new one."),
    "LINK_TOKEN_USED": ("This link was already used",
                        "Each link connects once. Go back to the application; start again "
                        "there if you need to connect another system."),
    "LINK_TOKEN_LOCKED": ("This link is closed",
                          "It was closed after too many failed attempts, to protect your "
                          "account. Go back to the application and start again."),
    "RATE_LIMIT_EXCEEDED": ("Too many attempts",
                            "Wait a minute, then try again."),
    "FORBIDDEN": ("This page cannot continue", "Reload the page and try again."),
    "INTEGRATION_NOT_FOUND": ("Unknown system", "Go back and pick a system from the list."),
    "INTEGRATION_NOT_CONFIGURED": ("This system is not available",
                                   "The server has no sign-in set up for it yet."),
}
_RETURN_ERRORS = {"LINK_TOKEN_EXPIRED": "link_expired", "LINK_TOKEN_USED": "link_used",
                  "LINK_TOKEN_LOCKED": "link_locked"}


def _error_page(
    request: Request, exc: MaintlinkError, link: Row[Any] | None = None, *,
    embed: bool = False, retry_href: str | None = None,
) -> Response:
    title, hint = _ERROR_PAGES.get(exc.code, ("Something went wrong", "Try again later."))
    return_href = None
    if link is not None and exc.code in _RETURN_ERRORS:
        return_href = links.with_query(
            link.redirect_uri, {"error": _RETURN_ERRORS[exc.code], "state": link.state})
    frame_origin = link.allowed_origin if link is not None else None
    context = {
        "step": "error", "title": title, "message": exc.message, "hint": hint,
        "error_code": exc.code, "retry_href": retry_href, "return_href": return_href,
        "embed": embed and frame_origin is not None, "allowed_origin": frame_origin,
        "account_name": link.account_name if link is not None else None,
        "cancel_href": None,
    }
    return _page(request, "error.html", context, status=exc.status,
                 frame_origin=frame_origin, headers=exc.headers)


# --- the link in hand -----------------------------------------------------------------------

@dataclass
class Flow:
    """One request's view of a link token."""

    request: Request
    rt: Runtime
    token: str
    link: Row[Any]
    embed: bool
    target: Row[Any] | None = None  # reconnect mode: the connection

    def href(self, suffix: str = "", **params: str | None) -> str:
        query = {k: v for k, v in params.items() if v}
        if self.embed:
            query["embed"] = "1"
        path = f"{self.request.scope.get('root_path', '')}/connect/{quote(self.token)}{suffix}"
        return f"{path}?{urlencode(query)}" if query else path

    def page(self, name: str, context: dict[str, Any], *, status: int = 200) -> Response:
        base = {
            "embed": self.embed, "allowed_origin": self.link.allowed_origin,
            "account_name": self.link.account_name,
            "cancel_href": self.href("/exit"), "status_href": self.href("/status"),
        }
        return _page(self.request, name, {**base, **context}, status=status,
                     frame_origin=self.link.allowed_origin)

    def error(self, exc: MaintlinkError, retry: bool = False) -> Response:
        return _error_page(self.request, exc, self.link, embed=self.embed,
                           retry_href=self.href() if retry else None)

    def redirect(self, url: str) -> Response:
        return _redirect(url, self.link.allowed_origin)


async def _load(
    request: Request, token: str, embed: bool
) -> tuple[Flow | None, Response | None]:
    """The flow for an open link token, else the page that explains why not (a used one
    leads to its success page)."""
    rt = _rt(request)
    async with rt.engine.connect() as conn:
        link = await links.find_link(conn, token)
        target = None
        if link is not None and link.connection_id:
            target = await conns.get_connection(conn, link.connection_id)
    flow = Flow(request, rt, token, link, embed, target) if link is not None else None
    if link is not None and link.status == links.LinkStatus.USED:
        return None, flow.redirect(flow.href("/success")) if flow else None
    try:
        links.ensure_open(link, rt.clock())
    except MaintlinkError as exc:
        return None, _error_page(request, exc, link, embed=embed)
    assert flow is not None
    if embed and not link.allowed_origin:
        return None, _error_page(request, MaintlinkError(
            "FORBIDDEN", "This link was not created for embedding: open it in its own window, "
            "or create the link token with `allowed_origin`."), None)
    return flow, None


def _system(flow: Flow, slug: str | None) -> type[Connector] | None:
    if not slug:
        return None
    cls = CONNECTORS.get(slug)
    if cls is None or not links.is_connectable(flow.rt.settings, cls):
        return None
    return cls


def _asked_fields(cls: type[Connector]) -> list[CredentialField]:
    """What the customer types: every field, or for OAuth2 systems only the ones the
    token endpoint does not provide (the instance URL)."""
    if cls.auth_type != "oauth2":
        return list(cls.credential_fields)
    return [f for f in cls.credential_fields
            if f.name not in OAUTH_TOKEN_FIELDS and not f.secret]


def _instance_url(cls: type[Connector], fields: Mapping[str, str]) -> str | None:
    """The customer's instance URL, which OAuth2 connectors build their endpoints from."""
    for f in cls.credential_fields:
        if f.type == "url" and fields.get(f.name):
            return fields[f.name]
    return fields.get("base_url")


def _input_type(f: CredentialField) -> str:
    if f.secret or f.type == "password":
        return "password"
    return "url" if f.type == "url" else "text"


def _stored_values(flow: Flow) -> dict[str, str]:
    """Reconnect mode: the stored non-secret values, to pre-fill (never secrets)."""
    if flow.target is None:
        return {}
    try:
        stored = flow.rt.cipher.decrypt_json(flow.target.credentials_encrypted)
    except Exception:  # a rotated-away key: nothing to pre-fill, the form still works
        log.warning("cannot decrypt credentials of %s to pre-fill", flow.target.id)
        return {}
    cls = CONNECTORS.get(flow.target.integration)
    public = {f.name for f in cls.credential_fields if not f.secret} if cls else set()
    return {k: str(v) for k, v in stored.items() if k in public and isinstance(v, str)}


def _entity_names(names: tuple[str, ...]) -> str:
    return ", ".join(n.replace("_", " ") for n in names)


# --- screens --------------------------------------------------------------------------------

def _picker(flow: Flow, q: str | None, error: str | None = None) -> Response:
    query = (q or "").strip().lower()
    systems = [
        {"slug": cls.slug, "name": cls.name,
         "auth_label": AUTH_LABELS.get(cls.auth_type, cls.auth_type),
         "href": flow.href(integration=cls.slug)}
        for cls in links.flow_integrations(flow.rt.settings)
        if not query or query in cls.name.lower() or query in cls.slug
    ]
    return flow.page("picker.html", {
        "step": "picker", "systems": systems, "q": q or "", "search_href": flow.href(),
        "picker_error": error, "total": len(links.flow_integrations(flow.rt.settings)),
    }, status=200 if error is None else 404)


@dataclass
class FormState:
    values: dict[str, str] = field(default_factory=dict)
    field_errors: dict[str, str] = field(default_factory=dict)
    error: dict[str, str] | None = None
    webhook_url: str = ""
    attempts_left: int | None = None


def _form(flow: Flow, cls: type[Connector], state: FormState, *, status: int = 200) -> Response:
    settings = flow.rt.settings
    values = {**_stored_values(flow), **state.values}
    fields = []
    for f in _asked_fields(cls):
        fields.append({
            "name": f.name, "label": f.label, "help": f.help, "placeholder": f.placeholder,
            "required": f.required, "input_type": _input_type(f),
            # Secrets are never sent back to the browser, not even the customer's own.
            "value": "" if f.secret else values.get(f.name, ""),
            "error": state.field_errors.get(f.name),
            "autocomplete": "url" if f.type == "url" else "off",
        })
    link = flow.link
    reconnect = None
    if link.mode == links.Mode.RECONNECT and flow.target is not None:
        reason = flow.target.last_error_message or flow.target.status_reason
        reconnect = {
            "needed": flow.target.status == conns.Status.REAUTH_REQUIRED,
            "reason": reason,
            "remote": (flow.target.remote_account or {}).get("name"),
        }
    webhook_errors = {"webhook_url": state.field_errors["webhook_url"]} \
        if "webhook_url" in state.field_errors else {}
    summary = [{"name": f["name"], "label": f["label"], "message": f["error"]}
               for f in fields if f["error"]]
    if webhook_errors:
        summary.append({"name": "webhook_url", "label": "Webhook URL",
                        "message": webhook_errors["webhook_url"]})
    attempts_left = state.attempts_left
    if attempts_left is None and link.failed_attempts:
        attempts_left = settings.link_token_max_failed_attempts - link.failed_attempts
    return flow.page("form.html", {
        "step": "form", "system": cls, "fields": fields, "oauth": cls.auth_type == "oauth2",
        "reconnect": reconnect, "error": state.error, "field_summary": summary,
        "csrf": links.csrf_token(settings, link.id), "post_href": flow.href(),
        "back_href": None if (link.integration or link.mode == links.Mode.RECONNECT)
        else flow.href(),
        "success_href": flow.href("/success"),
        "webhook": {"fixed": link.webhook_url, "collect": bool(link.collect_webhook_url)
                    and not link.webhook_url, "value": state.webhook_url,
                    "error": webhook_errors.get("webhook_url")},
        "reads": _entity_names(cls.entities), "writes": _entity_names(cls.writable_entities),
        "attempts_left": attempts_left,
    }, status=status)


def _typed_error(cls: type[Connector], code: str, message: str) -> dict[str, str]:
    """A refusal as the customer reads it: what happened, the system's reason, what to do."""
    name = cls.name
    titles = {
        "INVALID_CREDENTIALS": (f"{name} rejected these credentials",
                                "Check the values and try again."),
        "PROVIDER_PERMISSION_DENIED": (
            "These credentials lack a permission",
            f"Ask your {name} administrator to grant it, or use an account that has it."),
        "PROVIDER_UNAVAILABLE": (f"{name} could not be reached",
                                 "Check the instance URL; if it is right, the system may be "
                                 "down: try again in a few minutes."),
        "PROVIDER_RATE_LIMITED": (f"{name} is busy", "Wait a minute, then try again."),
        "PROVIDER_ERROR": (f"{name} answered with an error", "Try again in a few minutes."),
        "OAUTH_DENIED": (f"Access was not granted in {name}",
                         "Sign in again and approve the access to connect."),
    }
    title, hint = titles.get(code, ("The connection could not be made", "Try again."))
    return {"code": code, "title": title, "message": message, "hint": hint}


@router.get(CALLBACK_PATH)
async def oauth_callback(request: Request) -> Response:
    """Where the system's authorization page returns the browser: check the state (one
    use), trade the code with the PKCE verifier, check the account, finish the flow."""
    rt = _rt(request)
    params = request.query_params
    taken = await links.take_oauth(rt, params.get("state", ""))
    if taken is None:
        return _error_page(request, MaintlinkError(
            "LINK_TOKEN_INVALID", "This sign-in is unknown or was already finished."))
    link, pending = taken
    flow = Flow(request, rt, pending["link_token"], link, bool(pending.get("embed")))
    if link.connection_id:
        async with rt.engine.connect() as conn:
            flow.target = await conns.get_connection(conn, link.connection_id)
    try:
        links.ensure_open(link, rt.clock())
    except MaintlinkError as exc:
        return flow.error(exc)
    cls = _system(flow, pending["integration"])
    if cls is None:
        return flow.error(MaintlinkError("INTEGRATION_NOT_CONFIGURED"), retry=True)
    fields: dict[str, str] = pending.get("fields", {})
    state = FormState(values=fields, webhook_url=pending.get("webhook_url") or "")
    if params.get("error") or not params.get("code"):
        # The customer declined, or the system refused: not a failed credential check.
        reason = params.get("error_description") or params.get("error") or "no code returned"
        code = "OAUTH_DENIED" if params.get("error") == "access_denied" else "PROVIDER_ERROR"
        state.error = _typed_error(cls, code, reason[:300])
        return _form(flow, cls, state, status=400)
    client = links.oauth_client(rt.settings, cls.slug)
    assert client is not None  # _system checked it
    try:
        tokens = await cls.exchange_code(  # type: ignore[attr-defined]
            rt.http, _instance_url(cls, fields), client.client_id, client.client_secret,
            params["code"], pending["redirect_uri"], pending["code_verifier"])
    except ConnectorError as exc:
        return await _refused(flow, cls, state, conns.provider_error(exc))
    credentials = {**fields, **tokens}
    return await _finish(flow, cls, state, credentials, pending.get("webhook_url"),
                         popup=bool(pending.get("popup")))


@router.get("/connect/{link_token}")
async def start(request: Request, link_token: str) -> Response:
    embed = request.query_params.get("embed") == "1"
    flow, refusal = await _load(request, link_token, embed)
    if flow is None:
        assert refusal is not None
        return refusal
    slug = flow.link.integration or request.query_params.get("integration")
    if not slug:
        return _picker(flow, request.query_params.get("q"))
    cls = _system(flow, slug)
    if cls is None:
        return _picker(flow, None, error="That system is not available here: pick one from "
                                         "the list.")
    return _form(flow, cls, FormState())


@router.post("/connect/{link_token}")
async def submit(request: Request, link_token: str) -> Response:
    form = await request.form()
    value = {k: v for k, v in form.items() if isinstance(v, str)}
    flow, refusal = await _load(request, link_token, value.get("embed") == "1")
    if flow is None:
        assert refusal is not None
        return refusal
    rt, link = flow.rt, flow.link
    if not links.csrf_ok(rt.settings, link.id, value.get("csrf")):
        return flow.error(MaintlinkError(
            "FORBIDDEN", "The form could not be verified (it may be from an older page)."),
            retry=True)
    try:
        await request.app.state.rate_limiter.check(
            f"lt:{link.id}", rt.settings.link_token_attempts_per_minute)
    except MaintlinkError as exc:
        return flow.error(exc, retry=True)
    cls = _system(flow, link.integration or value.get("integration"))
    if cls is None:
        return _picker(flow, None, error="That system is not available here: pick one from "
                                         "the list.")
    asked = _asked_fields(cls)
    state = FormState(values={f.name: value.get(f"field_{f.name}", "").strip() for f in asked},
                      webhook_url=value.get("webhook_url", "").strip())
    for f in asked:
        if f.required and not state.values[f.name]:
            state.field_errors[f.name] = f"Enter the {f.label.lower()}."
    webhook_url = None
    if link.collect_webhook_url and not link.webhook_url and state.webhook_url:
        try:
            webhook_url = check_url(rt, state.webhook_url)
        except MaintlinkError as exc:
            state.field_errors["webhook_url"] = exc.message
    if state.field_errors:
        state.error = {"code": "VALIDATION_ERROR", "title": "Some fields need attention",
                       "message": "Correct the fields listed below.", "hint": ""}
        return _form(flow, cls, state, status=422)
    credentials = {k: v for k, v in state.values.items() if v}
    if cls.auth_type == "oauth2":
        return await _authorize(flow, cls, state, credentials, webhook_url,
                                popup=value.get("popup") == "1")
    return await _finish(flow, cls, state, credentials, webhook_url)


async def _refused(
    flow: Flow, cls: type[Connector], state: FormState, exc: MaintlinkError
) -> Response:
    left = await links.record_failure(flow.rt, flow.link.id)
    if left == 0:
        return flow.error(MaintlinkError(
            "LINK_TOKEN_LOCKED", f"{cls.name} refused the last attempt too: {exc.message}"))
    state.error = _typed_error(cls, exc.code, exc.message)
    state.attempts_left = left
    return _form(flow, cls, state, status=exc.status)


async def _finish(
    flow: Flow, cls: type[Connector], state: FormState, credentials: dict[str, Any],
    webhook_url: str | None, *, popup: bool = False,
) -> Response:
    """Check the credentials live (outside any transaction), then claim the link token
    and store the connection in one transaction."""
    rt = flow.rt
    settings = ConnectionSettings().model_dump()
    if flow.target is not None:
        settings = dict(flow.target.settings or settings)
    try:
        info = await conns.validate_credentials(rt, cls.slug, credentials, settings)
    except MaintlinkError as exc:
        return await _refused(flow, cls, state, exc)
    try:
        async with rt.engine.begin() as conn:
            await links.complete(
                conn, rt, flow.link, integration=cls.slug, credentials=credentials,
                account_info=info, connection_settings=settings, webhook_url=webhook_url)
    except MaintlinkError as exc:
        if exc.code.startswith("LINK_TOKEN_"):
            return flow.error(exc)
        log.warning("connection flow could not finish: %s", exc)
        state.error = _typed_error(cls, exc.code, exc.message)
        return _form(flow, cls, state, status=exc.status)
    return flow.redirect(flow.href("/success", popup="1" if popup else None))


async def _authorize(
    flow: Flow, cls: type[Connector], state: FormState, fields: dict[str, str],
    webhook_url: str | None, *, popup: bool,
) -> Response:
    """OAuth2: remember the form server-side, send the browser to the system's
    authorization page with state and a PKCE (S256) challenge."""
    rt = flow.rt
    client = links.oauth_client(rt.settings, cls.slug)
    assert client is not None
    redirect_uri = public_base(flow.request, rt.settings.public_url) + CALLBACK_PATH
    pending = {"link_token": flow.token, "integration": cls.slug, "fields": fields,
               "webhook_url": webhook_url, "redirect_uri": redirect_uri,
               "embed": flow.embed, "popup": popup}
    async with rt.engine.begin() as conn:
        oauth_state, challenge = await links.begin_oauth(conn, rt, flow.link, pending)
    try:
        url = cls.authorization_url(  # type: ignore[attr-defined]
            _instance_url(cls, fields), client.client_id, redirect_uri, oauth_state,
            challenge)
    except ConnectorError as exc:
        for f in _asked_fields(cls):
            if f.type == "url":
                state.field_errors[f.name] = exc.message
        error = conns.provider_error(exc)
        state.error = _typed_error(cls, error.code, error.message)
        return _form(flow, cls, state, status=422)
    return flow.redirect(str(url))


@router.get("/connect/{link_token}/success")
async def success(request: Request, link_token: str) -> Response:
    rt = _rt(request)
    embed = request.query_params.get("embed") == "1"
    popup = request.query_params.get("popup") == "1"
    async with rt.engine.connect() as conn:
        link = await links.find_link(conn, link_token)
        result = await links.outcome(conn, rt, link) if link is not None else None
    if link is None:
        return _error_page(request, MaintlinkError("LINK_TOKEN_INVALID"))
    flow = Flow(request, rt, link_token, link, embed and link.allowed_origin is not None)
    if link.status == links.LinkStatus.OPEN:
        return flow.redirect(flow.href())
    if result is None:
        return _error_page(request, links.closed_error(links.status_of(link, rt.clock())),
                           link, embed=embed)
    cls = CONNECTORS.get(result.connection.integration)
    continue_href = None
    if result.code is not None:
        continue_href = links.with_query(link.redirect_uri,
                                         {"code": result.code, "state": link.state})
    return flow.page("success.html", {
        "step": "success", "system_name": cls.name if cls else result.connection.integration,
        "integration": result.connection.integration,
        "remote_name": (result.connection.remote_account or {}).get("name"),
        "reconnect": link.mode == links.Mode.RECONNECT, "code": result.code,
        "continue_href": continue_href, "popup": popup, "cancel_href": None,
    })


@router.get("/connect/{link_token}/exit")
async def exit_flow(request: Request, link_token: str) -> Response:
    """Cancel: back to the developer's page with `error=cancelled` (redirect mode; an
    embedded flow tells its page by `postMessage` instead)."""
    rt = _rt(request)
    async with rt.engine.connect() as conn:
        link = await links.find_link(conn, link_token)
    if link is None:
        return _error_page(request, MaintlinkError("LINK_TOKEN_INVALID"))
    return _redirect(links.with_query(link.redirect_uri,
                                      {"error": "cancelled", "state": link.state}),
                     link.allowed_origin)


@router.get("/connect/{link_token}/status")
async def flow_status(request: Request, link_token: str) -> Response:
    """The link's status only, polled by the embedded page while the OAuth popup is open."""
    rt = _rt(request)
    async with rt.engine.connect() as conn:
        link = await links.find_link(conn, link_token)
    status = links.status_of(link, rt.clock()).value if link is not None else "invalid"
    response = JSONResponse({"status": status}, status_code=200 if link else 404)
    return _secure(response, None)

