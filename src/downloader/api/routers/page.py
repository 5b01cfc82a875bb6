"""The operator's page: `/` and its assets under `/ui/`, files of this package.

They are the only routes besides `/health` served without the key (`auth.OPEN_PATHS`,
`auth.OPEN_PREFIXES`): the page holds no data, asks for the key and sends it with every
request it makes. It needs nothing from the internet, and its policy forbids it anything
from anywhere else (`Content-Security-Policy`: this origin only, no inline script), so a job's
URL or error shown on it can never run as code or send the key elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

UI = Path(__file__).resolve().parent.parent / "ui"
"""The page's files: HTML, CSS and ES modules, no build step."""

ASSETS = "/ui"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated, so a new version of the page is seen at once
}

router = APIRouter(include_in_schema=False)


class _Assets(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


@router.get("/")
def index() -> FileResponse:
    return FileResponse(UI / "index.html", headers=HEADERS)


def install(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `ASSETS`."""
    app.include_router(router)
    app.mount(ASSETS, _Assets(directory=UI), name="ui")
