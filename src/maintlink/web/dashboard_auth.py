"""Signing in to the dashboard with an admin key, and signing out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from maintlink.domain.accounts import authenticate_admin_key
from maintlink.web import session as sessions
from maintlink.web.dashboard_core import (
    DashboardRoute,
    NotSignedIn,
    current_session,
    redirect,
    render,
    rt_of,
    safe_back,
)

router = APIRouter(route_class=DashboardRoute)
HOME = "/dashboard/connections"


def _secure(request: Request) -> bool:
    """`Secure` cookies whenever browsers reach us over https (directly or via a proxy that
    uvicorn trusts, or as configured in MAINTLINK_PUBLIC_URL)."""
    public = rt_of(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _login_page(
    request: Request, nonce: str, next_url: str, *, error: str | None = None,
    status_code: int = 200,
) -> Response:
    settings = rt_of(request).settings
    response = render(request, "dashboard/login.html", {
        "login_csrf": sessions.login_csrf_token(settings, nonce), "next": next_url,
        "error": error, "signed_out": request.query_params.get("signed_out") == "1",
    }, status_code=status_code)
    response.set_cookie(sessions.LOGIN_COOKIE, nonce, max_age=sessions.LOGIN_TTL_SECONDS,
                        path="/dashboard/login", httponly=True, samesite="lax",
                        secure=_secure(request))
    return response


@router.get("/dashboard/login")
async def login_form(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    target = safe_back(next, HOME)
    try:
        await current_session(request)
        return redirect(target)  # already signed in
    except NotSignedIn:
        pass
    nonce = request.cookies.get(sessions.LOGIN_COOKIE) or sessions.new_login_nonce()
    if len(nonce) > 100:
        nonce = sessions.new_login_nonce()
    return _login_page(request, nonce, target)


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    rt = rt_of(request)
    form = await request.form()
    target = safe_back(form.get("next"), HOME)
    nonce = request.cookies.get(sessions.LOGIN_COOKIE)
    if not sessions.login_csrf_ok(rt.settings, nonce, form.get("csrf_token")):
        return _login_page(request, sessions.new_login_nonce(), target, status_code=403,
                           error="The sign-in form expired. Please try again.")
    key = str(form.get("admin_key") or "").strip()
    principal = None
    if key and len(key) < 200:
        async with rt.engine.begin() as conn:
            principal = await authenticate_admin_key(conn, key)
    if principal is None:
        return _login_page(request, str(nonce), target, status_code=401,
                           error="That admin key is unknown or revoked.")
    cookie, _ = sessions.issue(rt.settings, principal.key_id, principal.account_id)
    response = redirect(target)
    response.set_cookie(sessions.COOKIE, cookie,
                        max_age=int(rt.settings.dashboard_session_hours * 3600),
                        path=sessions.COOKIE_PATH, httponly=True, samesite="lax",
                        secure=_secure(request))
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/dashboard/login")
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    # Signing out needs the session's CSRF token (so no other site can sign you out); a
    # dead session is simply cleared.
    rt = rt_of(request)
    found = sessions.read(rt.settings, request.cookies.get(sessions.COOKIE))
    if found is not None:
        form = await request.form()
        if not sessions.csrf_ok(rt.settings, found, form.get("csrf_token")):
            return redirect(HOME)
    response = redirect("/dashboard/login?signed_out=1")
    response.delete_cookie(sessions.COOKIE, path=sessions.COOKIE_PATH, httponly=True,
                           samesite="lax", secure=_secure(request))
    return response
