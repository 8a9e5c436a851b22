"""The web pages: the dashboard (jobs, their live metric curves, sample grids, the attention
explorer) and the API docs (Swagger UI at /docs, ReDoc at /redoc), all from files the app ships:
static/vendor/ holds uPlot, Swagger UI and ReDoc as npm installed them (frontend/), no CDN."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])
STATIC = Path(__file__).resolve().parent.parent / "static"  # mounted at /static by create_app
PAGE = STATIC / "index.html"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# The pages load nothing from elsewhere; the browser holds them to it (ReDoc's bundle, for one,
# asks a CDN for the logo of its "API docs by Redocly" link: blocked, it hides the image).
LOCAL_ONLY = "default-src 'self' 'unsafe-inline' blob: data:; frame-ancestors 'self'"


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = LOCAL_ONLY
    return page


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> HTMLResponse:
    """A single page over the public API (it calls the same routes a user's curl does)."""
    return _local_only(HTMLResponse(_page()))


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, its script and style served by the app itself."""
    root = _prefix(request)
    page = get_swagger_ui_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}/static/vendor/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/vendor/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/favicon.svg",
        oauth2_redirect_url=root + OAUTH2_REDIRECT,
        # no validator badge: it would ask validator.swagger.io about the document
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )
    return _local_only(page)


@router.get(OAUTH2_REDIRECT, include_in_schema=False)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json, from the vendored bundle, without Google Fonts."""
    root = _prefix(request)
    page = get_redoc_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/static/vendor/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/favicon.svg",
        with_google_fonts=False,
    )
    return _local_only(page)
