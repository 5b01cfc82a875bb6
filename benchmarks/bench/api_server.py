"""A `downloader api` process on a namespace of the run, with an API key, for the cases that
measure the REST surface; stopped on the way out, whatever happens."""

from __future__ import annotations

import contextlib
import importlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import requests

from .config import NotAvailable
from .context import Context, clean_env
from .processes import free_port, wait_until
from .tools import downloader_command


@dataclass
class ApiServer:
    base: str
    session: requests.Session

    def queue_url(self, route: str, queue_id: str = "default") -> str:
        return f"{self.base}/api/v1/queue/{queue_id}/{route}"


@contextlib.contextmanager
def api_server(ctx: Context, namespace: str) -> Iterator[ApiServer]:
    """`downloader api` on `namespace`, answering; its session sends the key with every call."""
    try:
        importlib.import_module("downloader.api")
    except ImportError as exc:
        raise NotAvailable(f"downloader.api cannot be imported ({exc})") from exc
    assert ctx.redis_url is not None
    port, key = free_port(), secrets.token_urlsafe(16)
    env = clean_env(
        redis_url=ctx.redis_url,
        namespace=namespace,
        download_root=ctx.fresh_dest(),
        api_key=key,
    )
    process = ctx.procs.start(
        downloader_command("api", "--port", str(port)), ctx.log(f"api-{namespace}"), env
    )
    session = requests.Session()
    session.headers["X-API-Key"] = key
    try:
        server = ApiServer(f"http://127.0.0.1:{port}", session)
        wait_until(lambda: _answers(session, f"{server.base}/openapi.json"), 30, "the REST API")
        yield server
    finally:
        session.close()
        ctx.procs.stop(process)


def _answers(session: requests.Session, url: str) -> bool:
    try:
        return session.get(url, timeout=5).ok
    except requests.RequestException:
        return False
