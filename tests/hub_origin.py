"""A local Hugging Face hub and its CDN on 127.0.0.1, speaking the parts of the hub's HTTP API
the downloader uses, shaped after the answers huggingface_hub reads:

- `GET /api/{models|datasets|spaces}/<owner>/<name>/revision/<revision>`: `{"id", "sha",
  "private", "gated", "siblings": [{"rfilename", "size", "blobId", "lfs": {"sha256", "size",
  "pointerSize"}}]}` (size, blobId and lfs only with `blobs=true`, as on the hub).
- `GET /api/<kind>/<owner>/<name>/tree/<revision>[/<folder>][?recursive=true]`: `[{"type":
  "file"|"directory", "oid", "size", "path", "lfs": {"oid", "size", "pointerSize"}}]`,
  `page_size` entries a page, the next page in `Link: <...>; rel="next"` (or, with
  `next_page_at` set, a hostile hub's link to anywhere).
- `GET|HEAD /[datasets/|spaces/]<owner>/<name>/resolve/<revision>/<path>`: a small git file in
  the body (`ETag` its blob id), an LFS file as a 302 to a signed URL on the CDN, with
  `X-Linked-Etag` (its SHA-256), `X-Linked-Size` and `X-Repo-Commit`.
- Errors with the hub's `X-Error-Code`/`X-Error-Message`: `RepoNotFound` (401 without a token,
  404 with one) for a missing or private repo, `RevisionNotFound`, `EntryNotFound`, and
  `GatedRepo` for a gated repo's files (401 without a token, 403 with one not granted),
  except `README.md` and `.gitattributes`, which the hub serves to anyone (the model card).
  With `failing` set, it is a mirror that fails: every answer is a 503.

The CDN is an `Origin` (Range, ETag, `drop=`) whose gate admits only URLs the hub signed and
refuses expired ones with 403, as S3/CloudFront do. `expire_after_bytes` makes the first link
of each file expire while it is being sent (the connection is cut after that many bytes), and
`stale_redirects` makes the hub hand out an expired link again that many times, as a hub whose
redirects are cached at its edge does. `stall_after_bytes` makes the first link of each file stop
sending after that many bytes and hold the connection (a download to interrupt; the next
request of the link gets the file). Which host saw which `Authorization` header is in `seen`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from tests.origin import LoggedRequest, Origin, Refusal, _QuietServer

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".gguf", ".pt", ".onnx", ".parquet")
"""What the hub's default .gitattributes stores with LFS."""
_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass
class Seen:
    host: str  # "hub" or "cdn"
    method: str
    path: str
    authorization: str | None
    range: str | None = None
    status: int | None = None


UNGATED = frozenset({"README.md", ".gitattributes"})
"""The files of a gated repo the hub serves without access: its card and attributes."""


@dataclass
class HubRepo:
    repo_id: str
    repo_type: str
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    private: bool = False
    gated: bool = False
    announced: dict[str, str] = field(default_factory=dict)
    """SHA-256s the listing announces instead of the true one (a corrupt listing)."""

    def commit(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


@dataclass
class _Link:
    blob: str
    url: str
    expired: bool = False


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


class HubOrigin:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.token = "hf_localTestToken0123456789"
        self.granted: set[str] = {self.token}
        self.page_size = 2
        self.expire_after_bytes: int | None = None
        self.stall_after_bytes: int | None = None
        self.stale_redirects = 0
        self.failing = False
        """A mirror that fails: every answer is a 503."""
        self.next_page_at: str | None = None
        """A hostile hub: the listing's next page is said to be at this URL."""
        self.seen: list[Seen] = []
        self._links: dict[str, _Link] = {}
        self._cached: dict[tuple[str, str], str] = {}
        self._signed_blobs: set[str] = set()
        self._lock = threading.Lock()
        self.cdn = Origin()
        self.cdn.gate = self._gate
        self.server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HubOrigin:
        self.cdn.start()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.cdn.stop()

    # -- content --------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        private: bool = False,
        gated: bool = False,
        commit: str | None = None,
    ) -> str:
        """A repo whose `main` holds `files`; answers the commit (`commit` when given, so a
        second hub can mirror the first)."""
        self.repos[(repo_type, repo_id)] = HubRepo(repo_id, repo_type, private=private, gated=gated)
        return self.push(repo_id, files, repo_type=repo_type, commit=commit)

    def push(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        commit: str | None = None,
    ) -> str:
        """A new commit on `main` holding `files`; answers it."""
        repo = self.repos[(repo_type, repo_id)]
        commit = (
            commit
            or hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{uuid.uuid4()}".encode()).hexdigest()
        )
        repo.commits[commit] = dict(files)
        repo.refs["main"] = commit
        for path, data in files.items():
            if is_lfs(path):
                self.cdn.add(hashlib.sha256(data).hexdigest(), data)
        return commit

    def hub_seen(self, host: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.host == host]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    # -- signed links ---------------------------------------------------------------------

    def link(self, commit: str, path: str, blob: str) -> str:
        """The CDN URL for a file: the cached one while it is fresh (or allowed stale)."""
        with self._lock:
            cached = self._links.get(self._cached.get((commit, path), ""))
            if cached is not None and cached.expired and self.stale_redirects > 0:
                self.stale_redirects -= 1
                return cached.url
            if cached is not None and not cached.expired:
                return cached.url
            signature = uuid.uuid4().hex
            url = self.cdn.url(f"/files/{blob}?X-Amz-Expires=3600&X-Amz-Signature={signature}")
            if blob not in self._signed_blobs and self.expire_after_bytes is not None:
                url += f"&drop={self.expire_after_bytes}"
            if blob not in self._signed_blobs and self.stall_after_bytes is not None:
                url += f"&stall={self.stall_after_bytes}"
            self._signed_blobs.add(blob)
            self._links[signature] = _Link(blob, url)
            self._cached[(commit, path)] = signature
            return url

    def _gate(self, request: LoggedRequest, query: dict[str, str]) -> Refusal | None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen = Seen("cdn", request.method, request.path, headers.get("authorization"))
        seen.range = headers.get("range")
        with self._lock:
            link = self._links.get(query.get("X-Amz-Signature", ""))
            if link is None or request.path != f"/files/{link.blob}" or link.expired:
                seen.status = 403
            else:
                seen.status = 206 if seen.range else 200
                if "drop" in query:
                    link.expired = True  # its expiry passes while it is being sent
        self.record(seen)
        if seen.status == 403:
            return 403, {"Content-Type": "application/xml", "X-Cache": "Error from cloudfront"}
        return None


def _handler_for(hub: HubOrigin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.route(body=False)

        def do_GET(self) -> None:
            self.route(body=True)

        def route(self, body: bool) -> None:
            url = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self.body = body
            self.seen = Seen("hub", self.command, url.path, self.headers.get("Authorization"))
            hub.record(self.seen)
            if hub.failing:
                return self.json({"error": "upstream unavailable"}, {}, 503)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if parts[0] == "api" and len(parts) >= 6 and parts[1] in _KINDS:
                repo = self.repo(_KINDS[parts[1]], f"{parts[2]}/{parts[3]}")
                if repo is None:
                    return
                if parts[4] == "revision":
                    return self.revision(repo, "/".join(parts[5:]))
                if parts[4] == "tree":
                    return self.tree(repo, parts[5], "/".join(parts[6:]))
            kind = "model"
            if parts[0] in ("datasets", "spaces"):
                kind = _KINDS[parts.pop(0)]
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = self.repo(kind, f"{parts[0]}/{parts[1]}")
                if repo is not None:
                    self.resolve(repo, parts[3], "/".join(parts[4:]))
                return
            self.error(404, "", "Not Found")

        # -- answers ---------------------------------------------------------------------

        def allowed(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return auth.removeprefix("Bearer ") in hub.granted

        def repo(self, kind: str, repo_id: str) -> HubRepo | None:
            repo = hub.repos.get((kind, repo_id))
            if repo is None or (repo.private and not self.allowed()):
                status = 404 if self.headers.get("Authorization") else 401
                message = "Repository not found"
                self.error(status, "RepoNotFound", message)
                return None
            return repo

        def commit_of(self, repo: HubRepo, revision: str) -> str | None:
            commit = repo.commit(revision)
            if commit is None:
                self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def revision(self, repo: HubRepo, revision: str) -> None:
            commit = self.commit_of(repo, revision)
            if commit is None:
                return
            siblings = []
            for path, data in sorted(repo.commits[commit].items()):
                sibling: dict[str, object] = {"rfilename": path}
                if self.query.get("blobs") == "true":
                    sibling.update(size=len(data), blobId=git_blob_id(data))
                    if is_lfs(path):
                        sha = repo.announced.get(path, hashlib.sha256(data).hexdigest())
                        sibling["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
                siblings.append(sibling)
            self.json(
                {
                    "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                    "id": repo.repo_id,
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "sha": commit,
                    "siblings": siblings,
                }
            )

        def tree(self, repo: HubRepo, revision: str, folder: str) -> None:
            commit = self.commit_of(repo, revision)
            if commit is None:
                return
            recursive = self.query.get("recursive") == "true"
            entries = _entries(repo, commit, folder, recursive)
            start = int(self.query.get("cursor", 0))
            page = entries[start : start + hub.page_size]
            headers = {}
            if start + hub.page_size < len(entries):
                rest = f"recursive={str(recursive).lower()}&cursor={start + hub.page_size}"
                following = hub.next_page_at or f"{hub.endpoint}{urlsplit(self.path).path}?{rest}"
                headers["Link"] = f'<{following}>; rel="next"'
            self.json(page, headers)

        def resolve(self, repo: HubRepo, revision: str, path: str) -> None:
            commit = self.commit_of(repo, revision)
            if commit is None:
                return
            if repo.gated and path not in UNGATED and not self.allowed():
                status = 403 if self.headers.get("Authorization") else 401
                message = (
                    f"Access to model {repo.repo_id} is restricted and you are not in the "
                    "authorized list."
                    if status == 403
                    else f"Access to model {repo.repo_id} is restricted. You must have access "
                    "to it and be authenticated to access it. Please log in."
                )
                return self.error(status, "GatedRepo", message)
            data = repo.commits[commit].get(path)
            if data is None:
                return self.error(404, "EntryNotFound", f"{path} does not exist on {revision}")
            headers = {"X-Repo-Commit": commit, "Content-Length": str(len(data))}
            if not is_lfs(path):
                headers.update({"ETag": f'"{git_blob_id(data)}"', "Content-Type": "text/plain"})
                return self.answer(200, headers, data)
            sha = hashlib.sha256(data).hexdigest()
            headers.update(
                {
                    "ETag": f'"{sha}"',
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                    "Location": hub.link(commit, path, sha),
                    "Content-Length": "0",
                }
            )
            self.answer(302, headers, b"")

        def error(self, status: int, code: str, message: str) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            if status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="Authentication required"'
            self.json({"error": message}, headers, status)

        def json(self, payload: object, headers: dict[str, str] | None = None, status=200) -> None:
            data = json.dumps(payload).encode()
            self.answer(status, {**(headers or {}), "Content-Type": "application/json"}, data)

        def answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.seen.status = status
            self.send_response(status, HTTPStatus(status).phrase)
            headers.setdefault("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.body and data:
                self.wfile.write(data)

    return Handler


def _entries(repo: HubRepo, commit: str, folder: str, recursive: bool) -> list[dict[str, object]]:
    """The tree listing under `folder`, directories and files, as the hub lists them."""
    prefix = f"{folder}/" if folder else ""
    files = {p: d for p, d in repo.commits[commit].items() if p.startswith(prefix)}
    entries: dict[str, dict[str, object]] = {}
    for path, data in files.items():
        below = path[len(prefix) :].split("/")
        if len(below) > 1:
            for depth in range(1, len(below) if recursive else 2):
                directory = prefix + "/".join(below[:depth])
                entries[directory] = {
                    "type": "directory",
                    "oid": git_blob_id(b""),
                    "size": 0,
                    "path": directory,
                }
            if not recursive:
                continue
        entry: dict[str, object] = {
            "type": "file",
            "oid": git_blob_id(data),
            "size": len(data),
            "path": path,
        }
        if is_lfs(path):
            sha = repo.announced.get(path, hashlib.sha256(data).hexdigest())
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
        entries[path] = entry
    return [entries[key] for key in sorted(entries)]
