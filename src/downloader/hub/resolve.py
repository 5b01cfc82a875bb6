"""Model hubs as sources: `hf://` addresses and whole repos, resolved once to a pinned commit.

A repo download must come from one commit even if someone pushes while it runs, and every LFS
file must be checked against the hash the hub announces. So a hub source is resolved here,
once, in the client (the service, the REST API, the CLI): the revision becomes the commit the
hub answers, the files become `RemoteModelFile`s whose URL is the hub's `resolve` URL at that
commit and whose `sha256` is the hub's LFS hash. From there on it is a plain job, and every
retry asks the hub again for a fresh signed CDN URL; the only hub knowledge a worker needs is
how to read the hub's headers on those answers (see `headers`), which it hands the engine.
With hub mirrors configured (`DOWNLOADER_HF_MIRRORS`), each file also names the same
`resolve` URL on every mirror as its `mirrors`, which the worker uses when they match the
hub's hash.

The hub's token (see `tokens`) goes with requests to the hub's own origin only, and not past a
redirect to another (its CDN). Nothing here logs or repeats a token.

Everything the hub answers is treated as hostile: commits and hashes must look like hex
digests, paths must stay inside the destination, and pagination links must stay on the hub.
That last rule, and the caller's own `requests` session, are why the listing is not
huggingface_hub's `HfApi.list_repo_tree`: its paging sends the token to whatever host a
`Link: next` names, and it speaks httpx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urljoin

import requests
from pydantic import ValidationError

from downloader.config import Settings
from downloader.engine.origins import BearerAuth, origin
from downloader.engine.resolver import host_not_found
from downloader.hub.errors import HubError
from downloader.hub.headers import error_code
from downloader.hub.refs import HubRef, is_hub_source, parse_hf_url
from downloader.hub.refusals import (
    EntryNotFoundError,
    GatedRepoError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from downloader.hub.tokens import hf_token, implicit_token_disabled
from downloader.jobs.models import RemoteModelFile

_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_KIND = {"model": "models", "dataset": "datasets", "space": "spaces"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_PAGES = 10_000
"""A hub whose listing never ends is broken or hostile; stop following it."""
_SERVED_TO_ANYONE = frozenset({"README.md", ".gitattributes"})
"""Files the hub serves even from a gated repo, so their answer says nothing of access."""


@dataclass
class ResolvedRepo:
    """A repo pinned to one commit, with the files to fetch from it."""

    ref: HubRef
    commit: str
    files: list[RemoteModelFile] = field(default_factory=list)
    """Each under `<repo name>/`, with the resolve URL at `commit`, size and LFS SHA-256."""


# -- resolving ------------------------------------------------------------------------------


class _Hub:
    """One resolution's connection to the hub: endpoint, token and session."""

    def __init__(
        self, ref: HubRef, token: str | None, settings: Settings, session: requests.Session
    ) -> None:
        self.ref, self.token, self.session = ref, token, session
        self.endpoint = settings.hf_endpoint.rstrip("/")
        self.mirrors = [str(mirror).rstrip("/") for mirror in settings.hf_mirrors]
        self.timeout = (settings.connect_timeout, settings.read_timeout)

    @property
    def repo_url(self) -> str:
        return self.repo_url_on(self.endpoint)

    def repo_url_on(self, endpoint: str) -> str:
        return f"{endpoint}/{_URL_PREFIX[self.ref.repo_type]}{self.ref.repo_id}"

    def api_url(self, *parts: str) -> str:
        kind = _API_KIND[self.ref.repo_type]
        return "/".join((f"{self.endpoint}/api/{kind}/{self.ref.repo_id}", *parts))

    def resolve_url(self, commit: str, path: str, endpoint: str | None = None) -> str:
        return f"{self.repo_url_on(endpoint or self.endpoint)}/resolve/{commit}/{quote(path)}"

    def get(self, url: str, what: str, **params: str) -> requests.Response:
        return self.request("GET", url, what, params=params)

    def request(self, method: str, url: str, what: str, **options: Any) -> requests.Response:
        """One request to the hub with the token; refuses any other origin, so a hostile
        answer (a pagination link elsewhere) cannot take the token with it."""
        if origin(url) != origin(self.endpoint):
            raise HubError(f"the hub at {self.endpoint} pointed {what} to another host; refused")
        auth = BearerAuth(self.token, self.endpoint) if self.token else None
        try:
            response = self.session.request(method, url, auth=auth, timeout=self.timeout, **options)
        except requests.RequestException as exc:
            missing = host_not_found(exc, url)
            if missing is not None:  # no later try can mend a name that does not exist
                raise HubError(
                    f"the hub's host {missing.host} was not found (DOWNLOADER_HF_ENDPOINT is "
                    f"{self.endpoint})"
                ) from None
            raise HubError(
                f"could not reach the hub at {self.endpoint} for {what} ({type(exc).__name__}); "
                "try again later, or set DOWNLOADER_HF_ENDPOINT to another mirror"
            ) from None
        self.check(response, what)
        return response

    def json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise HubError(f"the hub at {self.endpoint} answered {what} with no JSON") from None

    def commit(self) -> str:
        """The commit the revision points at now: everything else is fetched at it."""
        what = f"revision {self.ref.revision!r} of {self.ref.repo_id}"
        info = self.json(
            self.get(self.api_url("revision", quote(self.ref.revision, safe="")), what), what
        )
        sha = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(sha, str) or not _COMMIT.fullmatch(sha):
            raise HubError(f"the hub at {self.endpoint} gave no commit for {what}")
        return sha

    def tree(
        self, commit: str, folder: str = "", recursive: bool = True
    ) -> Iterator[dict[str, Any]]:
        """The file entries under `folder` at `commit`, following the listing's pages: each
        through `request`, which refuses a page on any other origin, and no more than
        `_MAX_PAGES` of them."""
        url: str | None = self.api_url("tree", commit, *([quote(folder)] if folder else []))
        params = {"recursive": "true"} if recursive else {}
        what = f"the file list of {self.ref.repo_id}"
        seen: set[str] = set()
        while url is not None and url not in seen and len(seen) < _MAX_PAGES:
            seen.add(url)
            response = self.get(url, what, **params)
            entries = self.json(response, what)
            if not isinstance(entries, list):
                raise HubError(f"the hub at {self.endpoint} answered {what} with no list")
            yield from (e for e in entries if isinstance(e, dict) and e.get("type") == "file")
            following = response.links.get("next", {}).get("url")
            url, params = (urljoin(url, following), {}) if following else (None, params)

    def part(self, commit: str, entry: dict[str, Any]) -> RemoteModelFile:
        """One listing entry as a part under `<repo name>/`; refuses what does not add up."""
        path, size, lfs = entry.get("path"), entry.get("size"), entry.get("lfs")
        sha256 = None
        if isinstance(lfs, dict):
            sha256 = lfs.get("oid") or lfs.get("sha256")
            size = lfs.get("size", size)
            if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                raise HubError(f"the hub announced no valid SHA-256 for {path!r}")
        if not isinstance(path, str) or not isinstance(size, int) or size < 0:
            raise HubError(f"the hub listed a file it did not describe: {entry!r:.200}")
        try:
            return RemoteModelFile(
                url=self.resolve_url(commit, path),
                path=PurePosixPath(self.ref.name, path).as_posix(),
                size=size,
                sha256=sha256,
                mirrors=[self.resolve_url(commit, path, mirror) for mirror in self.mirrors],
            )
        except ValidationError as exc:
            raise HubError(f"the hub listed a file path that is not safe: {path!r:.200}") from exc

    def check_access(self, url: str) -> None:
        """Ask for one file without following the CDN redirect: a gated repo answers here,
        before any job is queued, rather than in every part's worker."""
        self.request("HEAD", url, f"a file of {self.ref.repo_id}", allow_redirects=False)

    def token_hint(self) -> str:
        """What the token had to do with a refusal, for its message."""
        if self.token:
            return "the token in use (HF_TOKEN or the huggingface token file) does not give access"
        if implicit_token_disabled():
            return (
                "HF_HUB_DISABLE_IMPLICIT_TOKEN is set, so no Hugging Face token was sent: give "
                "one explicitly (access_token, or --token-file)"
            )
        return "no Hugging Face token is set: set HF_TOKEN or run `hf auth login`"

    def check(self, response: requests.Response, what: str) -> None:
        """Turn the hub's error answers (its `X-Error-Code`) into errors that say what to do."""
        if response.status_code < 400:
            return
        code = error_code(response)
        ref, kind = self.ref, self.ref.repo_type
        token_hint = self.token_hint()
        if code == "GatedRepo":
            raise GatedRepoError(
                f"{kind} {ref.repo_id} is gated and {token_hint}: accept its terms at "
                f"{self.repo_url} with the account the token belongs to (some repos also wait "
                "for the authors to approve), then run the download again",
                response=response,
            )
        if code == "RepoNotFound" or (response.status_code == 401 and not code):
            raise RepoNotFoundError(
                f"{kind} {ref.repo_id} was not found on {self.endpoint}, or it is private and "
                f"{token_hint}: check the name, and for a private repo use a token of an "
                "account that can read it",
                response=response,
            )
        if code == "RevisionNotFound":
            raise RevisionNotFoundError(
                f"{kind} {ref.repo_id} has no revision {ref.revision!r}: name a branch, tag or "
                "commit that exists",
                response=response,
            )
        if code == "EntryNotFound" or response.status_code == 404:
            raise EntryNotFoundError(
                f"{kind} {ref.repo_id} has no {ref.path or 'such file'!r} at "
                f"{ref.revision!r}: check the path"
            )
        raise HubError(
            f"the hub at {self.endpoint} answered HTTP {response.status_code} for {what}; "
            "try again later, or set DOWNLOADER_HF_ENDPOINT to another mirror"
        )


def _selected(
    entries: Iterator[dict[str, Any]],
    allow_patterns: Sequence[str] | str | None,
    ignore_patterns: Sequence[str] | str | None,
) -> Iterator[dict[str, Any]]:
    """huggingface_hub's filter: fnmatch on the repo path, allow-list then deny-list; a
    pattern ending in `/` means everything under that folder, as in its snapshot_download."""
    allow = _patterns(allow_patterns)
    ignore = _patterns(ignore_patterns)
    for entry in entries:
        path = str(entry.get("path", ""))
        if allow is not None and not any(fnmatch(path, p) for p in allow):
            continue
        if ignore is not None and any(fnmatch(path, p) for p in ignore):
            continue
        yield entry


def _patterns(patterns: Sequence[str] | str | None) -> list[str] | None:
    if patterns is None:
        return None
    listed = [patterns] if isinstance(patterns, str) else list(patterns)
    return [p + "*" if p.endswith("/") else p for p in listed]


def resolve_repo(
    repo: str | HubRef,
    *,
    revision: str = "main",
    repo_type: str = "model",
    allow_patterns: Sequence[str] | str | None = None,
    ignore_patterns: Sequence[str] | str | None = None,
    token: str | None = None,
    settings: Settings | None = None,
    session: requests.Session | None = None,
) -> ResolvedRepo:
    """Pin a repo at a revision to a commit and list the files to fetch; nothing is queued (the
    service, the REST API and the CLI call this, then queue the files).

    Args:
        repo: `owner/name`, an `hf://` address (whose own kind, revision and folder then
            apply), or a `HubRef`.
        revision: a branch, tag or commit, for an `owner/name`.
        repo_type: `model`, `dataset` or `space`, for an `owner/name`.
        allow_patterns: huggingface_hub's: `fnmatch` patterns on the path in the repo, a
            file must match one; a pattern ending in `/` means everything under it.
        ignore_patterns: likewise; a file matching one is left out.
        token: the HF token to send; default: the one found as huggingface_hub finds it.
        settings: the hub's endpoint, its mirrors and the timeouts; default: the environment.
        session: the session to ask with (the caller's, e.g. with mounted test adapters);
            default: one for this call.

    Returns:
        The repo, the commit, and each file as a `RemoteModelFile` under `<repo name>/`
        with its `resolve` URL at the commit, its size, the hub's SHA-256 for an LFS file,
        and the same file on every hub mirror.

    Raises:
        GatedRepoError, RepoNotFoundError, RevisionNotFoundError: the hub refused; the
            message says what to do (one file is asked for, to find a gated repo now).
        EntryNotFoundError: no file matches the patterns.
        HubError: the hub cannot be reached or answered something that does not add up.
        ValueError: `repo` is not a repo's name or an `hf://` address.
    """
    if isinstance(repo, str):
        repo = parse_hf_url(repo) if is_hub_source(repo) else HubRef(repo, repo_type, revision)
    settings = settings or Settings()
    with _session(session) as http:
        hub = _Hub(repo, token or hf_token(), settings, http)
        commit = hub.commit()
        folder = repo.path or ""
        entries = _selected(hub.tree(commit, folder), allow_patterns, ignore_patterns)
        files = [hub.part(commit, entry) for entry in entries]
        if not files:
            raise EntryNotFoundError(
                f"no file of {repo.repo_type} {repo.repo_id} at {repo.revision!r} matches "
                f"allow_patterns={allow_patterns!r} ignore_patterns={ignore_patterns!r}"
            )
        hub.check_access(str(_access_probe(files).url))
    return ResolvedRepo(repo, commit, files)


def _access_probe(files: Sequence[RemoteModelFile]) -> RemoteModelFile:
    """The file whose answer tells whether the repo's files can be read. The hub serves a
    gated repo's card and attributes (`README.md`, `.gitattributes`) to anyone, so asking for
    one of them would let a gated repo through to fail in every other part's worker: an LFS
    file is asked first, then any other."""
    telling = [f for f in files if PurePosixPath(f.path).name not in _SERVED_TO_ANYONE]
    return next((f for f in telling if f.sha256), telling[0] if telling else files[0])


def resolve_file(
    source: str,
    *,
    token: str | None = None,
    settings: Settings | None = None,
    session: requests.Session | None = None,
) -> RemoteModelFile:
    """One file of a repo pinned to the commit its revision names now.

    Args:
        source: `hf://owner/repo[@revision]/path`.
        token, settings, session: as for `resolve_repo`.

    Returns:
        The file's `resolve` URL at the commit, its size and its LFS SHA-256 (None for a
        small git file, which the hub does not hash).

    Raises:
        EntryNotFoundError: the repo has no such file at that revision.
        GatedRepoError, RepoNotFoundError, RevisionNotFoundError, HubError: as
            `resolve_repo`.
        ValueError: `source` is not an `hf://` address of a file.
    """
    ref = parse_hf_url(source)
    if ref.path is None:
        raise ValueError(f"{source!r} names a repo, not a file: use repo_download for a repo")
    settings = settings or Settings()
    with _session(session) as http:
        hub = _Hub(ref, token or hf_token(), settings, http)
        commit = hub.commit()
        folder = PurePosixPath(ref.path).parent.as_posix()
        listing = hub.tree(commit, "" if folder == "." else folder, recursive=False)
        entry = next((e for e in listing if e.get("path") == ref.path), None)
        if entry is None:
            raise EntryNotFoundError(
                f"{ref.repo_type} {ref.repo_id} has no {ref.path!r} at {ref.revision!r}: "
                "check the path"
            )
        part = hub.part(commit, entry)
        hub.check_access(str(part.url))
    return part


@contextmanager
def _session(given: requests.Session | None) -> Iterator[requests.Session]:
    """The caller's session if it gave one (it keeps it open), else one for this resolution."""
    if given is not None:
        yield given
        return
    with requests.Session() as session:
        yield session
