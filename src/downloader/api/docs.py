"""`/docs` (Swagger UI) and `/redoc` (ReDoc), with every asset served by the API itself.

FastAPI's own pages load their scripts, styles, favicon and fonts from CDNs, so they are
blank on a machine without internet access, and tell those CDNs who reads the docs. The
`fastapi-offline` package ships the same Swagger UI 5 and ReDoc 2 bundles; they are served
under `ASSETS`, behind the API key like every route but `/health`, and the pages are
FastAPI's (`get_swagger_ui_html`, `get_redoc_html`) pointed at them.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
"""Where the bundles are served: `swagger-ui-bundle.js`, `swagger-ui.css`,
`redoc.standalone.js`, `favicon.png`."""

SWAGGER_PARAMETERS = {"validatorUrl": None}
"""Swagger UI would otherwise send the schema's address to validator.swagger.io for a badge."""


def add_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the docs pages and their assets on `app`, made with `docs_url=None` and
    `redoc_url=None` (so FastAPI adds no CDN pages of its own)."""
    openapi_url = app.openapi_url
    assert openapi_url is not None, "the docs need the OpenAPI schema"
    redirect_url = app.swagger_ui_oauth2_redirect_url
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            swagger_ui_parameters={**SWAGGER_PARAMETERS, **(app.swagger_ui_parameters or {})},
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    if redirect_url:
        app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)
