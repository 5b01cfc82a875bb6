"""A real HTTP origin for the tests, on 127.0.0.1 (or another loopback address, such as
127.0.0.2, for a second host): Range, HEAD, redirects, names, auth, errors.

Routes (`name` is a file registered with `add`):
- `/files/<name>`: the bytes, with `Accept-Ranges`, a strong ETag and 206 for a Range.
- `/cd/<name>?filename=...`: the same with `Content-Disposition: attachment; filename=...`.
- `/redirect/<name>`: 302 to `/files/<name>`; `?to=<absolute url>` redirects there instead.
- `/private/<name>`: 401 unless `Authorization: Bearer <token>` matches `token`.
- `/echo-auth?to=<url>`: 302 to `<url>` with `auth=<the bearer token it was sent>` added to its
  query, as a careless origin that puts credentials into a URL does.
- `/status/<code>`: an empty answer with that status and its standard reason phrase.
- `/gzip/<name>`: the file gzip-compressed, `Content-Encoding: gzip` (whatever was asked);
  `nolength=1` sends it without a Content-Length, closing the connection at the end.
Query `rate=<bytes per second>` sends slowly (in small pieces); `norange=1` ignores Range;
`fail=<n>&code=<status>` answers the first n GETs of that URL with `code` (default 503, with
`Retry-After: 0`); `drop=<bytes>` closes the connection after that many body bytes (first GET
of that URL only); `stall=<bytes>` stops sending after that many bytes, holding the
connection open (first GET only); `failafter=<n>` answers every GET from the (n+1)th on with
503 and `Retry-After: <retryafter>`; `extra=<n>` sends n bytes more than the Content-Length
says; `ignoreifrange=1` answers a Range with 206 whatever `If-Range` says (a broken cache);
`hold=<key>` keeps a GET waiting before it answers until the test calls `release(key)`.
`digest=repr|legacy|amz` announces the file's SHA-256 in `Repr-Digest`, `Digest` or
`x-amz-checksum-sha256` (`bad=1`: a wrong one). A name with `versions` (a list of bytes)
serves its k-th version on its k-th GET (the last one
from then on), each with its own ETag. `If-None-Match` with the current ETag gets 304.
Every request is logged in `requests` as (method, path, headers); `served` counts the body
bytes sent per path. `gate`, when set, sees
every request (logged request, query) first and may refuse it: it answers (status, headers)
or None to let it through (the hub tests' CDN checks signed URLs with it). `active` counts the
GETs being answered now and `peak` the most at once (a GET counts until its last byte is
sent), to check a cap on concurrent connections.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]
    began: float = 0.0
    """When the request came in (monotonic seconds)."""
    ended: float | None = None
    """When a GET's last byte went out (None: not yet, or not a GET)."""
    served: int = 0
    """Body bytes this request was sent (a client that hung up may still be counted a piece
    more than it read: compare the requests a run made, not totals read while others run)."""


Refusal = tuple[int, dict[str, str]]
"""A status and headers to answer instead of the file."""


MiB = 1 << 20

DIGEST_HEADERS = {"repr": "Repr-Digest", "legacy": "Digest", "amz": "x-amz-checksum-sha256"}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hang up mid-request on purpose here (cancels, skips); that is no error."""


class Origin:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[LoggedRequest] = []
        self.token = "s3cret-token"
        self.hits: dict[str, int] = {}
        self.versions: dict[str, list[bytes]] = {}
        self.name_hits: dict[str, int] = {}
        self.gate: Callable[[LoggedRequest, dict[str, str]], Refusal | None] | None = None
        self.served: dict[str, int] = {}
        self._held: dict[str, threading.Event] = {}
        self._digests: dict[int, tuple[bytes, bytes]] = {}
        """SHA-256 per payload served (keyed by identity, the payload kept with it): a file's
        hash is worked out once, not for every request (a segment each, 16 per file)."""
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.host = host
        self.server = _QuietServer((host, 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def url(self, route: str) -> str:
        return f"{self.base}{route}"

    def add(self, name: str, data: bytes) -> str:
        """Serve `data` as `name`; answers its SHA-256."""
        self.files[name] = data
        return self.sha256(data).hex()

    def sha256(self, data: bytes) -> bytes:
        """`data`'s SHA-256, worked out once per payload (a 256 MiB file takes about a second
        of CPU, which every ranged GET of it paid before)."""
        with self._lock:
            known = self._digests.get(id(data))
        if known is not None and known[0] is data:
            return known[1]
        digest = hashlib.sha256(data).digest()
        with self._lock:
            self._digests[id(data)] = (data, digest)
        return digest

    def log(self, request: LoggedRequest, target: str) -> int:
        """Record a request; answers how many GETs of this exact URL came before it."""
        with self._lock:
            self.requests.append(request)
            seen = self.hits.get(target, 0)
            if request.method == "GET":
                self.hits[target] = seen + 1
            return seen

    def version_of(self, name: str) -> bytes | None:
        """The bytes this GET of `name` serves: its next version, when it has versions."""
        with self._lock:
            versions = self.versions.get(name)
            if not versions:
                return self.files.get(name)
            seen = self.name_hits.get(name, 0)
            self.name_hits[name] = seen + 1
            return versions[min(seen, len(versions) - 1)]

    def gets(self, path_prefix: str) -> list[LoggedRequest]:
        with self._lock:
            return [
                r for r in self.requests if r.method == "GET" and r.path.startswith(path_prefix)
            ]

    def answering(self, change: int) -> None:
        """A GET begins (+1) or has sent its last byte (-1)."""
        with self._lock:
            self.active += change
            self.peak = max(self.peak, self.active)

    def hold(self, key: str) -> threading.Event:
        with self._lock:
            return self._held.setdefault(key, threading.Event())

    def release(self, key: str) -> None:
        """Let the GETs held with `hold=<key>` (and later ones) answer."""
        self.hold(key).set()

    def count(self, request: LoggedRequest, sent: int) -> None:
        with self._lock:
            self.served[request.path] = self.served.get(request.path, 0) + sent
            request.served += sent

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
            self.counted = True
            origin.answering(+1)
            try:
                self.handle_request(body=True)
            finally:
                self.done()

        def done(self) -> None:
            """The GET's last byte is out: it no longer counts as being answered."""
            if getattr(self, "counted", False):
                self.counted = False
                self.logged.ended = time.monotonic()
                origin.answering(-1)

        def handle_request(self, body: bool) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            logged = self.logged = LoggedRequest(
                self.command, url.path, dict(self.headers.items()), began=time.monotonic()
            )
            seen = origin.log(logged, self.path)
            refusal = origin.gate(logged, query) if origin.gate is not None else None
            if refusal is not None:
                return self.empty(*refusal)
            route, _, name = url.path.lstrip("/").partition("/")
            if body and "hold" in query:
                origin.hold(query["hold"]).wait(60)
            if body and seen < int(query.get("fail", 0)):
                return self.empty(int(query.get("code", 503)), {"Retry-After": "0"})
            if body and "failafter" in query and seen >= int(query["failafter"]):
                return self.empty(503, {"Retry-After": query.get("retryafter", "0")})
            if seen:  # faults below strike the first GET only, so a retry can succeed
                query.pop("drop", None)
                query.pop("stall", None)
            if route == "status":
                return self.empty(int(name))
            if route == "echo-auth":
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                glue = "&" if "?" in query["to"] else "?"
                return self.empty(302, {"Location": f"{query['to']}{glue}auth={token}"})
            if route == "redirect":
                target = query.get("to") or f"/files/{name}"
                return self.empty(302, {"Location": target})
            if route == "private" and self.headers.get("Authorization") != f"Bearer {origin.token}":
                return self.empty(401, {"WWW-Authenticate": "Bearer"})
            if route not in ("files", "cd", "private", "gzip"):
                return self.empty(404)
            data = origin.version_of(name) if body else origin.files.get(name)
            if data is None:
                return self.empty(404)
            if route == "gzip":
                return self.send_gzip(data, query, body)
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{origin.sha256(data).hex()[:16]}"',
            }
            if self.headers.get("If-None-Match") == headers["ETag"]:
                return self.empty(304, {"ETag": headers["ETag"]})
            if query.get("digest"):  # announce the file's SHA-256 (or a wrong one, `bad=1`)
                raw = hashlib.sha256(b"bad").digest() if query.get("bad") else origin.sha256(data)
                encoded = base64.b64encode(raw).decode()
                headers[DIGEST_HEADERS[query["digest"]]] = {
                    "repr": f"sha-256=:{encoded}:",
                    "legacy": f"SHA-256={encoded}",
                    "amz": encoded,
                }[query["digest"]]
            if route == "cd":
                headers["Content-Disposition"] = f'attachment; filename="{query["filename"]}"'
            self.send_file(data, headers, query, body)

        def send_file(
            self, data: bytes, headers: dict[str, str], query: dict[str, str], body: bool
        ) -> None:
            start, status = 0, 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            end = len(data)
            honour = query.get("ignoreifrange") or if_range in (None, headers["ETag"])
            if wanted and not query.get("norange") and honour:
                first_text, _, last_text = wanted.removeprefix("bytes=").partition("-")
                first = int(first_text)
                if first >= len(data):
                    return self.empty(416, {"Content-Range": f"bytes */{len(data)}"})
                start, status = first, 206
                end = min(int(last_text) + 1, len(data)) if last_text else len(data)
                headers["Content-Range"] = f"bytes {first}-{end - 1}/{len(data)}"
            if not query.get("norange"):
                headers["Accept-Ranges"] = "bytes"
            payload = memoryview(data)[start:end]  # pieces of it are sent without copies
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if query.get("nolength"):  # the body ends when the connection does
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            if query.get("extra"):
                self.wfile.write(bytes(payload) + b"X" * int(query["extra"]))
                self.wfile.flush()
                self.close_connection = True
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
                    for offset in range(0, len(payload), MiB):  # a hang-up is seen at once
                        if offset and self.client_gone(0):
                            return
                        self.wfile.write(payload[offset : offset + MiB])
                        origin.count(self.logged, len(payload[offset : offset + MiB]))
                    return
                piece = max(1, rate // 20)
                for offset in range(0, len(payload), piece):
                    self.wfile.write(payload[offset : offset + piece])
                    self.wfile.flush()
                    origin.count(self.logged, len(payload[offset : offset + piece]))
                    if offset + piece >= len(payload):
                        self.done()  # before the pause: the client has it all
                    if self.client_gone(piece / rate):
                        self.done()  # it hung up: the connection no longer counts
                        return
            except OSError:
                pass

        def client_gone(self, seconds: float) -> bool:
            """Wait `seconds` (the pace of a slow answer), or less when the client hangs up:
            answers whether it did."""
            readable, _, _ = select.select([self.connection], [], [], seconds)
            if not readable:
                return False
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(seconds)  # it sent more (a next request): keep the pace
            return False

        def send_gzip(self, data: bytes, query: dict[str, str], body: bool) -> None:
            payload = gzip.compress(data, mtime=0)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Encoding", "gzip")
            if query.get("nolength"):
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status, HTTPStatus(status).phrase)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
