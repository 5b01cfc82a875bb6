"""`/docs` and `/redoc` work without the internet: every asset their pages name is served by
the API itself, behind its key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from downloader.api import create_api

KEY = {"X-API-Key": "k3y"}
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


class _Links(HTMLParser):
    """Every URL an HTML page loads: `src`, `href` and ReDoc's `spec-url` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


def _loaded(page: str) -> list[str]:
    links = _Links()
    links.feed(page)
    # Swagger UI's script names the schema as `url: '...'`.
    return links.urls + re.findall(r"\burl: '([^']+)'", page)


@pytest.fixture
def api(namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DOWNLOADER_API_KEY", "k3y")
    with TestClient(create_api()) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_what_the_api_serves(api: TestClient, page: str) -> None:
    answer = api.get(page, headers=KEY)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    urls = _loaded(answer.text)
    assert len(urls) >= 3, urls  # a script, the favicon and the schema at least
    assert "googleapis" not in answer.text and "cdn." not in answer.text
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url  # same origin
        assert api.get(url).status_code == 401  # behind the key like the page itself
        served = api.get(url, headers=KEY)
        assert served.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert served.headers["content-type"].startswith(TYPES[suffix]), (url, served.headers)
        assert len(served.content) > 1000 or (suffix == ".json" and served.json()["openapi"])


def test_the_docs_pages_need_the_key(api: TestClient) -> None:
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"):
        assert api.get(page).status_code == 401, page
