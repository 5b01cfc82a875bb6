"""A real HTTP origin for the tests, on 127.0.0.1: Range, HEAD, redirects, names, auth, errors.

Routes (`name` is a file registered with `add`):
- `/files/<name>`: the bytes, with `Accept-Ranges`, a strong ETag and 206 for a Range.
- `/cd/<name>?filename=...`: the same with `Content-Disposition: attachment; filename=...`.
- `/redirect/<name>`: 302 to `/files/<name>`; `?to=<absolute url>` redirects there instead.
- `/private/<name>`: 401 unless `Authorization: Bearer <token>` matches `token`.
- `/status/<code>`: an empty answer with that status and its standard reason phrase.
Query `rate=<bytes per second>` sends slowly (in small pieces); `norange=1` ignores Range;
`fail=<n>&code=<status>` answers the first n GETs of that URL with `code` (default 503, with
`Retry-After: 0`); `drop=<bytes>` closes the connection after that many body bytes (first GET
of that URL only); `stall=<bytes>` stops sending after that many bytes, holding the
connection open (first GET only).
Every request is logged in `requests` as (method, path, headers); `served` counts the body
bytes sent per path.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hang up mid-request on purpose here (cancels, skips); that is no error."""


class Origin:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[LoggedRequest] = []
        self.token = "s3cret-token"
        self.hits: dict[str, int] = {}
        self.served: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, route: str) -> str:
        return f"{self.base}{route}"

    def add(self, name: str, data: bytes) -> str:
        """Serve `data` as `name`; answers its SHA-256."""
        self.files[name] = data
        return hashlib.sha256(data).hexdigest()

    def log(self, request: LoggedRequest, target: str) -> int:
        """Record a request; answers how many GETs of this exact URL came before it."""
        with self._lock:
            self.requests.append(request)
            seen = self.hits.get(target, 0)
            if request.method == "GET":
                self.hits[target] = seen + 1
            return seen

    def gets(self, path_prefix: str) -> list[LoggedRequest]:
        with self._lock:
            return [
                r for r in self.requests if r.method == "GET" and r.path.startswith(path_prefix)
            ]

    def count(self, path: str, sent: int) -> None:
        with self._lock:
            self.served[path] = self.served.get(path, 0) + sent

    def start(self) -> Origin:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.handle_request(body=False)

        def do_GET(self) -> None:
            self.handle_request(body=True)

        def handle_request(self, body: bool) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            seen = origin.log(
                LoggedRequest(self.command, url.path, dict(self.headers.items())), self.path
            )
            route, _, name = url.path.lstrip("/").partition("/")
            if body and seen < int(query.get("fail", 0)):
                return self.empty(int(query.get("code", 503)), {"Retry-After": "0"})
            if seen:  # faults below strike the first GET only, so a retry can succeed
                query.pop("drop", None)
                query.pop("stall", None)
            if route == "status":
                return self.empty(int(name))
            if route == "redirect":
                target = query.get("to") or f"/files/{name}"
                return self.empty(302, {"Location": target})
            if route == "private" and self.headers.get("Authorization") != f"Bearer {origin.token}":
                return self.empty(401, {"WWW-Authenticate": "Bearer"})
            data = origin.files.get(name)
            if route not in ("files", "cd", "private") or data is None:
                return self.empty(404)
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{hashlib.sha256(data).hexdigest()[:16]}"',
            }
            if route == "cd":
                headers["Content-Disposition"] = f'attachment; filename="{query["filename"]}"'
            self.send_file(data, headers, query, body)

        def send_file(
            self, data: bytes, headers: dict[str, str], query: dict[str, str], body: bool
        ) -> None:
            start, status = 0, 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted and not query.get("norange") and if_range in (None, headers["ETag"]):
                first = int(wanted.removeprefix("bytes=").split("-")[0])
                if first >= len(data):
                    return self.empty(416, {"Content-Range": f"bytes */{len(data)}"})
                start, status = first, 206
                headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
            if not query.get("norange"):
                headers["Accept-Ranges"] = "bytes"
            payload = data[start:]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            rate = int(query.get("rate", 0))
            cut = query.get("drop") or query.get("stall")
            try:
                if cut:
                    self.wfile.write(payload[: int(cut)])
                    self.wfile.flush()
                    if query.get("stall"):
                        time.sleep(30)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if not rate:
                    self.wfile.write(payload)
                    origin.count(urlsplit(self.path).path, len(payload))
                    return
                piece = max(1, rate // 20)
                for offset in range(0, len(payload), piece):
                    self.wfile.write(payload[offset : offset + piece])
                    self.wfile.flush()
                    origin.count(urlsplit(self.path).path, len(payload[offset : offset + piece]))
                    time.sleep(piece / rate)
            except OSError:
                pass

        def empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status, HTTPStatus(status).phrase)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
