"""The HTTP transfer engine: one URL into one file, resumably. Knows nothing of Celery or Redis.

Bytes go to `<final name>.downloading`, locked while written, beside a state file that says
which source and version they belong to (see `filestate`). A resume is a Range request with
`If-Range`, and every 206 is checked against the recorded version before a byte is appended;
anything else starts the file over. Bodies are stored as the server sent them (no content
decoding) and must be exactly as long as announced. The size and hash are checked on the
descriptor that was written, the file is stamped with its origin, synced, and renamed only if
the partial path still names that same file: a file under its final name is always the
complete file its own job asked for. Every one of those files is reached through a descriptor
of its directory, never through a link (see `destdir`), and an existing file under the final
name counts only by a stamp whose seal still holds, or by its hash (see `filestate`).

Bytes may also come from mirrors (see `mirrors`): every request goes to the first URL in the
job's line-up that answers, a failing one hands over to the next, and segments are spread
over all of them. The source stays the file's identity; a mirror's answer is used only when
it is this file: the same total size, and the same strong ETag or a SHA-256 that the
finished file will be checked against. Anything else drops that mirror for the job.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import io
import os
import re
import select
import socket
import stat
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3

from downloader.engine.destdir import DestDir, TransferError, UnsafeDestinationError
from downloader.engine.errors import DownloadJobCancelledException
from downloader.engine.filestate import (
    CompletedRecord,
    PartialState,
    Validators,
    engine_names,
    partial_path,
    read_record,
    seal_record,
    write_record,
)
from downloader.engine.mirrors import Mirrors
from downloader.engine.naming import choose_filename, distinct_name
from downloader.engine.origins import BearerAuth
from downloader.engine.resolver import host_not_found
from downloader.engine.segments import SegmentedCopy, SegmentMismatch, split
from downloader.engine.watchdog import StalledTransferError, Watchdog, socket_of

__all__ = [
    "StalledTransferError",
    "TransferError",
    "UnsafeDestinationError",
    "partial_path",
]

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)
_MAX_DISTINCT_NAMES = 1000
_LOOK_AHEAD = 64 << 10
"""How close to the announced end reads start looking for bytes past it."""


class IncompleteDownloadError(TransferError):
    """The server sent fewer or more bytes than it announced."""


class OverlongBodyError(IncompleteDownloadError):
    """The server sent more than it announced: nothing of that answer can be trusted."""


class ChecksumMismatchError(TransferError):
    """The bytes do not have the SHA-256 the caller expected."""


class SizeMismatchError(TransferError):
    """The server offers a file of another size than the caller expected."""


class DestinationBusyError(TransferError):
    """Another download is writing the same file right now."""


class DestinationChangedError(TransferError):
    """The partial file was replaced while it was written; what was verified is not there."""


class InsufficientSpaceError(TransferError):
    """The destination's filesystem cannot hold the rest of the file."""


class _StartOver(Exception):
    """The answer does not continue the partial file: empty it and ask for the whole file."""


@dataclass(frozen=True)
class _Spot:
    """Where one file goes: its directory, held open, and its name; the engine's own files
    beside it are named after it."""

    folder: DestDir
    name: str

    @property
    def path(self) -> Path:
        return self.folder.path / self.name

    @property
    def partial(self) -> str:
        return engine_names(self.name)[0]

    @property
    def state(self) -> str:
        return engine_names(self.name)[1]

    def partial_size(self) -> int:
        found = self.folder.stat(self.partial)
        return found.st_size if found is not None and stat.S_ISREG(found.st_mode) else 0

    def refuse_links(self) -> None:
        """A link at the final name or at any of the engine's names beside it is refused."""
        self.folder.refuse_links(self.name, *engine_names(self.name))


@dataclass
class TransferRequest:
    url: str
    dest: Path
    dest_is_dir: bool | None = None
    """Whether `dest` is a directory to name the file in; None: whether it is one on disk."""
    access_token: str | None = None
    download_path: Path | None = None
    """The final path an earlier attempt chose; lets a retry resume before the first byte."""
    owner: int | None = None
    """The job id, written into the partial's state: only its own cancel may remove it."""
    sha256: str | None = None
    size: int | None = None
    """The size the caller expects; a server offering another size is refused."""
    chunk_size: int = 1 << 20
    timeout: tuple[float, float] = (10.0, 60.0)
    segments: int = 1
    """Connections for one large file from a server that accepts ranges."""
    segment_threshold: int = 64 << 20
    """Files smaller than this use one connection."""
    lowest_speed: int = 0
    """Bytes per second below which, for a whole `speed_window`, the transfer is a stall."""
    speed_window: float = 60.0
    root: Path | None = None
    """The directory the job's caller chose: it is opened as named, and every directory below
    it on the way to the file is opened without following links (made when missing). None:
    the file's own directory."""
    reserve: Callable[[Path], bool] = field(default=lambda path: True)
    """Claims a server-chosen final path for this job; False when another job holds it."""
    release: Callable[[Path], None] = field(default=lambda path: None)
    """Gives back a path `reserve` claimed but the job does not use."""
    mirrors: Mirrors | None = None
    """Other URLs of the same file and how each fared, kept across a job's attempts; None:
    `url` alone."""


@dataclass
class TransferResult:
    download_path: Path
    bytes: int = 0
    total_bytes: int = 0
    content_type: str | None = None
    etag: str | None = None
    final_url: str | None = None
    resumed_from: int = 0
    already_complete: bool = False


def _ignore_counts(current: int, total: int) -> None:
    pass


@dataclass
class TransferHooks:
    """What the caller hears; raising from any of them stops the transfer with that exception.

    `check` runs on the watchdog every half second, so it is heard even while no byte arrives.
    """

    started: Callable[[TransferResult], None] = lambda result: None
    progress: Callable[[int, int], None] = _ignore_counts
    check: Callable[[int, int], None] = _ignore_counts


def parse_content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, complete length) of a `Content-Range`; None where it says `*` or nothing."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        return None, None, None
    first, last, total = match.groups()
    return (
        int(first) if first is not None else None,
        int(last) if last is not None else None,
        int(total) if total != "*" else None,
    )


def header(response: requests.Response, name: str) -> str | None:
    """A header as text: transport adapters may give values as ints (test adapters do)."""
    value = response.headers.get(name)
    return None if value is None else str(value).strip()


def _length(response: requests.Response) -> int | None:
    value = header(response, "Content-Length")
    return int(value) if value and value.isdigit() else None


def _strong_etag(response: requests.Response) -> str | None:
    """A strong ETag, the only kind `If-Range` may carry."""
    etag = header(response, "ETag")
    return etag if etag and not etag.startswith("W/") else None


def _validators(url: str, response: requests.Response, total: int | None) -> Validators:
    return Validators(
        url=url,
        etag=_strong_etag(response),
        last_modified=header(response, "Last-Modified"),
        total=total,
        sha256=announced_sha256(response),
    )


_DIGEST_ITEM = re.compile(r"\s*sha-?256\s*=\s*:?([A-Za-z0-9+/=]+):?\s*", re.IGNORECASE)
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


def _base64_sha256(value: str | None) -> str | None:
    try:
        raw = base64.b64decode(value or "", validate=True)
    except (ValueError, binascii.Error):
        return None
    return raw.hex() if len(raw) == 32 else None


def announced_sha256(response: requests.Response) -> str | None:
    """The SHA-256 of the whole file as the server announces it, hex, or None.

    `Repr-Digest` (RFC 9530) and the older `Digest` (RFC 3230) describe the representation,
    which is what is saved when no content coding applies; `Content-Digest` describes the bytes
    as sent, which is what is saved, on a whole-file answer; S3's `x-amz-checksum-sha256` is the
    object's when it is not a multipart checksum; the Hugging Face hub's `X-Linked-Etag` on the
    answer that redirected is an LFS file's SHA-256. A header that does not parse is ignored.
    """
    if response.status_code != 200:
        return None
    encoded = (header(response, "Content-Encoding") or "identity").lower() != "identity"
    names = ("Content-Digest",) if encoded else ("Content-Digest", "Repr-Digest", "Digest")
    for name in names:
        for item in (header(response, name) or "").split(","):
            match = _DIGEST_ITEM.fullmatch(item)
            if match and (found := _base64_sha256(match.group(1))):
                return found
    if not encoded and (found := _base64_sha256(header(response, "x-amz-checksum-sha256"))):
        return found
    for earlier in response.history:
        linked = (header(earlier, "X-Linked-Etag") or "").strip('"').lower()
        if _HEX_SHA256.fullmatch(linked):
            return linked
    return None


_HUB_REFUSALS = {
    "GatedRepo": "the hub says the repo is gated: accept its terms on the repo's page with "
    "the account of the token in use, and set HF_TOKEN (or run `hf auth login`)",
    "RepoNotFound": "the hub says the repo does not exist or is private: check its name, or "
    "set HF_TOKEN to a token that can read it",
}
"""What a Hugging Face hub's `X-Error-Code` means to the user, for a refusal that comes only
once the job runs (access withdrawn after it was queued)."""


def _raise_for_status(response: requests.Response) -> None:
    """`HTTPError(<reason>)` as the seed has it, with the standard phrase of the status (a
    server's own wording, "File not found", would hide which status it was), and after a `; `
    what a hub's refusal means: the server's own error text is never repeated."""
    if response.status_code >= 400:
        try:
            reason = HTTPStatus(response.status_code).phrase
        except ValueError:
            reason = response.reason or f"HTTP {response.status_code}"
        meaning = _HUB_REFUSALS.get(header(response, "X-Error-Code") or "")
        raise requests.HTTPError(f"{reason}; {meaning}" if meaning else reason, response=response)


def _buffered(response: requests.Response) -> io.BufferedReader | None:
    """The buffered reader under http.client, to look ahead for bytes past the body's end."""
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    return fp if isinstance(fp, io.BufferedReader) else None


def read_chunks(response: requests.Response, size: int) -> Callable[[], bytes]:
    """A function giving the next bytes that arrived (b"" at the end of the body).

    Raw bytes, never decoded, whatever `Content-Encoding` says: the file is what the server
    sent. Whatever has arrived is returned (up to `size`) instead of waiting for a whole chunk,
    so a slow origin still shows progress. A body longer than its `Content-Length` is an error.
    """
    raw = response.raw
    if not isinstance(raw, urllib3.BaseHTTPResponse):  # a custom transport adapter
        chunks = response.iter_content(size)
        return lambda: next(chunks, b"")
    expected = _length(response) if header(response, "Transfer-Encoding") is None else None
    sock = socket_of(response)  # now: the connection goes back to its pool at the body's end
    received = 0

    def read() -> bytes:
        nonlocal received
        fp = _buffered(response)
        if expected is not None and 0 < expected - received <= _LOOK_AHEAD and fp is not None:
            # Near the end only: a peek fills the small buffer, and reads then come from it.
            ahead = len(_translated(lambda: fp.peek(1)))  # blocks like a read would
            if ahead > expected - received:
                raise _too_long(response, expected)
        chunk = _translated(lambda: raw.read1(size, decode_content=False))
        received += len(chunk)
        if not chunk and expected is not None and _socket_has_more(sock):
            raise _too_long(response, expected)
        return chunk

    return read


def _too_long(response: requests.Response, expected: int) -> OverlongBodyError:
    response.close()  # the connection is out of step with the protocol: never reuse it
    return OverlongBodyError(
        f"{response.url} sent more than the {expected} bytes its Content-Length announced; "
        "what it sent was discarded"
    )


def _socket_has_more(sock: socket.socket | None) -> bool:
    """Bytes waiting on the connection after a complete body: the server sent too many."""
    if not isinstance(sock, socket.socket) or hasattr(sock, "pending"):  # TLS cannot peek
        return False
    try:
        # A socket with a timeout waits inside recv whatever the flags: ask select first.
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and bool(sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):  # the connection is gone
        return False


def _translated(read: Callable[[], bytes]) -> bytes:
    """urllib3's errors as the requests errors the retry policy knows (as iter_content does)."""
    try:
        return read() or b""
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except (OSError, ValueError) as exc:  # a socket shut down by the watchdog
        raise requests.exceptions.ConnectionError(exc) from exc


class _Fetch:
    """One transfer's state; a class only so the steps can share it without long signatures."""

    def __init__(
        self, request: TransferRequest, session: requests.Session, hooks: TransferHooks
    ) -> None:
        self.request = request
        self.session = session
        self.hooks = hooks
        self.watchdog = Watchdog(hooks.check, request.lowest_speed, request.speed_window)
        self.mirrors = request.mirrors or Mirrors(request.url)
        self.asked: weakref.WeakKeyDictionary[requests.Response, str] = weakref.WeakKeyDictionary()
        """The URL each answer was asked of (before redirects): the source or a mirror."""

    # -- requests ---------------------------------------------------------------------------

    def get(
        self,
        extra: dict[str, str],
        state: PartialState | None = None,
        first: int | None = None,
        turn: int = 0,
    ) -> requests.Response:
        """One streamed GET of raw bytes from the first URL in line that answers with this
        file (`state`'s, from byte `first` for a range); raises on HTTP errors but 304 and 416.

        A URL that fails goes behind the others and the next is asked at once; a mirror whose
        answer is not this file, or whose host does not exist, is dropped. When none answers,
        the last failure is raised, the source's HostNotFoundError only when no other URL
        failed in a way a retry may mend.
        `turn` picks where equals start in the line, so segments spread over the URLs.
        """
        failure: Exception | None = None
        for url in self.mirrors.line(turn):
            if self.watchdog.reason is not None:
                raise self.watchdog.reason
            headers = self.headers_for(url, extra, state)
            if headers is None:
                continue
            try:
                response = self.send(url, headers)
            except requests.RequestException as exc:
                if isinstance(exc, requests.HTTPError) and exc.response is not None:
                    exc.response.close()
                missing = host_not_found(exc, url)
                if missing is not None and self.mirrors.is_mirror(url):
                    self.mirrors.drop(url, f"its host {missing.host} does not resolve")
                    continue
                self.mirrors.failed(url)
                if missing is None or failure is None:  # another URL's blip is worth a retry
                    failure = missing or exc
                continue
            mismatch = None
            if self.mirrors.is_mirror(url):
                mismatch = self.mirror_mismatch(response, state, first)
            if mismatch is not None:
                response.close()
                self.mirrors.drop(url, mismatch)
                continue
            return response
        assert failure is not None, "the source is always in line and never dropped"
        raise failure

    def send(self, url: str, headers: dict[str, str]) -> requests.Response:
        headers = {"Accept-Encoding": "identity", **headers}
        auth = None
        if self.request.access_token and self.mirrors.may_carry_token(url):
            auth = BearerAuth(self.request.access_token, url)  # and not past a redirect away
        try:
            response = self.session.get(
                url, headers=headers, auth=auth, stream=True, timeout=self.request.timeout
            )
        except requests.RequestException:
            raise
        except ValueError as exc:
            # A host no request can be sent to, in the URL or a redirect's Location: a
            # malformed IP literal (urllib.parse), a DNS label too long (urllib3, or the idna
            # codec in an untrusted job's connection). A request error like the others, so the
            # next URL is asked, and a final one: InvalidURL is not retried.
            raise requests.exceptions.InvalidURL(str(exc)) from exc
        self.asked[response] = url
        self.watchdog.watch(response)
        if response.status_code not in (304, 416):
            _raise_for_status(response)
        return response

    def headers_for(
        self, url: str, extra: dict[str, str], state: PartialState | None
    ) -> dict[str, str] | None:
        """The request headers for `url`; None when a mirror could not be checked against
        the file. Mirrors seldom share the source's ETag: when a SHA-256 will check the whole
        file, a mirror is asked without `If-Range` and its ranges are judged by their size."""
        if not self.mirrors.is_mirror(url) or state is None or "If-Range" not in extra:
            return extra
        if self.wanted_sha256(state):
            return {name: value for name, value in extra.items() if name != "If-Range"}
        return extra if state.source.etag else None

    def get_range(
        self, first: int, last: int | None, state: PartialState, turn: int = 0
    ) -> requests.Response:
        extra = {"Range": f"bytes={first}-{'' if last is None else last}"}
        if state.source.if_range:
            extra["If-Range"] = state.source.if_range
        return self.get(extra, state, first, turn)

    def from_mirror(self, response: requests.Response) -> bool:
        return self.mirrors.is_mirror(self.asked.get(response, self.request.url))

    def mirror_mismatch(
        self, response: requests.Response, state: PartialState | None, first: int | None
    ) -> str | None:
        """Why a mirror's answer is not the file this job writes; None when it is."""
        status = response.status_code
        if status == 304:  # an answer to the file's own validators
            return None
        if status == 416:  # the file is whole already, if the mirror's is this long
            total = parse_content_range(header(response, "Content-Range"))[2]
            expected = state.source.total if state is not None else None
            return None if total == expected else f"it has {total} bytes, the file {expected}"
        if first is None:
            if status != 200:
                return f"it answered HTTP {status} for the whole file"
            return self.version_mismatch(response, _length(response), state)
        start, _, total = parse_content_range(header(response, "Content-Range"))
        if status != 206 or start != first:
            return f"asked for bytes from {first}, it answered HTTP {status} from {start}"
        return self.version_mismatch(response, total, state)

    def version_mismatch(
        self, response: requests.Response, total: int | None, state: PartialState | None
    ) -> str | None:
        """Why a mirror's file is not this one: another total size, or neither the same
        strong ETag nor a SHA-256 to check the finished file by."""
        expected = state.source.total if state is not None else self.request.size
        if expected is not None and total != expected:
            return f"it offers {total} bytes, the file has {expected}"
        if state is None:
            return None
        etag = _strong_etag(response)
        if (state.source.etag and etag == state.source.etag) or self.wanted_sha256(state):
            return None
        return (
            f"its ETag {etag or '(none)'} is not the file's {state.source.etag or '(none)'} and "
            "no SHA-256 says they are the same bytes"
        )

    def same_version(self, response: requests.Response, state: PartialState) -> bool:
        """The answer is of the version the partial file was begun on: the source by its
        strong validator, a mirror as `version_mismatch` judges it."""
        if self.from_mirror(response):
            total = parse_content_range(header(response, "Content-Range"))[2]
            if response.status_code != 206:
                total = _length(response)
            return self.version_mismatch(response, total, state) is None
        etag, modified = _strong_etag(response), header(response, "Last-Modified")
        if state.source.etag:
            return etag == state.source.etag
        return not modified or modified == state.source.last_modified

    # -- the whole transfer -----------------------------------------------------------------

    def run(self) -> TransferResult:
        self.watchdog.start()
        try:
            try:
                return self.attempt(fresh=False)
            except _StartOver:
                pass
            try:
                return self.attempt(fresh=True)
            except _StartOver:
                raise IncompleteDownloadError(
                    f"{self.request.url} answered a request for the whole file with part of "
                    "it; the partial file was emptied for the next attempt"
                ) from None
        except Exception as exc:
            self.watchdog.raise_reason(exc)  # a blocked read broken on purpose: say why
            raise
        finally:
            self.watchdog.finish()

    def known_path(self) -> Path | None:
        """The final path before any answer: an earlier attempt's, or an explicit file path."""
        if self.request.download_path is not None:
            return self.request.download_path
        is_dir = self.request.dest_is_dir
        if is_dir is None:
            is_dir = self.request.dest.is_dir()
        return None if is_dir else self.request.dest

    def attempt(self, fresh: bool) -> TransferResult:
        known = self.known_path()
        directory = self.request.dest if known is None else known.parent
        with DestDir.reach(directory, self.request.root) as folder:
            spot = None if known is None else _Spot(folder, known.name)
            if spot is not None:
                spot.refuse_links()  # before anything is asked or written
            state = None if fresh or spot is None else self.resumable_state(spot)
            if spot is not None and state is not None and state.segments is None:
                offset = spot.partial_size()
                response = self.get_range(offset, None, state) if offset else None
            else:
                offset = 0
                response = None
            if response is None:
                response = self.get(self.conditional_headers(spot) if not fresh else {}, state)
            with response:
                spot = spot or self.choose_spot(folder, response)
                if response.status_code == 304:
                    return self.reuse_stamped(spot, response)
                return self.write(spot, response, offset, fresh)

    def resumable_state(self, spot: _Spot) -> PartialState | None:
        state = PartialState.read(spot.folder, spot.state)
        if state is None or state.source.url != self.request.url or not state.source.if_range:
            return None
        return state

    def conditional_headers(self, spot: _Spot | None) -> dict[str, str]:
        """Ask whether an existing final file of this URL is still current (304 if so)."""
        if spot is None or spot.folder.stat(spot.partial) is not None:
            return {}
        with _final(spot) as final:
            record = self.stamp_of(final)
        if record is None:
            return {}
        if record.source.etag:
            return {"If-None-Match": record.source.etag}
        if record.source.last_modified:
            return {"If-Modified-Since": record.source.last_modified}
        return {}

    def stamp_of(self, final: BinaryIO | None) -> CompletedRecord | None:
        """The stamp of the final file when it may speak for the file: of this URL, sealed
        as the file still is, and with the caller's SHA-256 when one was asked for."""
        if final is None:
            return None
        record = read_record(final.fileno())
        if (
            record is None
            or record.source.url != self.request.url
            or not record.vouches_for(os.fstat(final.fileno()))
        ):
            return None
        wanted = self.request.sha256
        if wanted is not None and (record.sha256 or "").lower() != wanted.lower():
            return None  # not the file the caller asked for, whatever the server says of it
        return record

    def choose_spot(self, folder: DestDir, response: requests.Response) -> _Spot:
        """The server's (or URL's) name in `dest`, made distinct from files of other sources
        and from names other unfinished jobs hold, as browsers do: `model (1).bin`."""
        name = choose_filename(self.request.url, header(response, "Content-Disposition"))
        for number in range(_MAX_DISTINCT_NAMES):
            spot = _Spot(folder, distinct_name(name, number))
            # Reserve first, then look: a job renames its file into place before it lets go
            # of the name, so what the disk shows now is final for this name.
            if not self.request.reserve(spot.path):
                continue
            if folder.stat(spot.name) is not None and _origin_url(spot) != self.request.url:
                self.request.release(spot.path)
                continue  # someone else's file (or link): never overwrite it
            try:
                spot.refuse_links()
            except UnsafeDestinationError:
                self.request.release(spot.path)
                raise
            return spot
        raise DestinationBusyError(
            f"{_MAX_DISTINCT_NAMES} files named like {name} already exist in "
            f"{self.request.dest}; choose another destination"
        )

    def reuse_stamped(self, spot: _Spot, response: requests.Response) -> TransferResult:
        """The server says the stamped version is current: reuse the file if its stamp still
        speaks for it now (it may have changed since the question was asked)."""
        with _final(spot) as final:
            if self.stamp_of(final) is None:
                raise _StartOver
            assert final is not None
            return self.reuse(spot, response, os.fstat(final.fileno()).st_size)

    def reuse(self, spot: _Spot, response: requests.Response, total: int) -> TransferResult:
        """The existing final file is current: nothing to fetch."""
        return TransferResult(
            download_path=spot.path,
            bytes=total,
            total_bytes=total,
            content_type=header(response, "Content-Type"),
            etag=_strong_etag(response),
            final_url=response.url,
            already_complete=True,
        )

    def write(
        self, spot: _Spot, response: requests.Response, offset: int, fresh: bool
    ) -> TransferResult:
        with _opened(spot) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DestinationBusyError(
                    f"another download is writing {spot.path} right now; wait for it or "
                    "choose another destination"
                ) from None
            state = None if fresh else self.resumable_state(spot)
            if state is not None and state.owner != self.request.owner:
                # Resumed by another job than the one that began it (a stopped `get` run
                # again): the partial is this job's now, for its cancel to remove.
                state.owner = self.request.owner
                _save_state(state, spot, state.source.total or 0)
            if response.status_code == 416:
                return self.already_whole(spot, handle, response, state, offset)
            total = self.announced_total(response)
            current = _validators(self.request.url, response, total)
            if response.status_code == 206:
                self.check_resume(response, state, offset, os.fstat(handle.fileno()).st_size)
                assert state is not None
                return self.stream(spot, handle, response, state, offset)
            if (
                state is not None
                and state.segments is not None
                and (
                    self.same_version(response, state)
                    if self.from_mirror(response)
                    else state.source.same_version(current)
                )
            ):
                return self.segmented(spot, handle, response, state)
            if offset == 0 and (size := self.current_size(spot, current)) is not None:
                spot.folder.remove(spot.partial)
                spot.folder.remove(spot.state)
                return self.reuse(spot, response, size)
            # A whole file: whatever the partial held is not continued.
            handle.truncate(0)
            state = PartialState(source=current, owner=self.request.owner)
            if total:
                _check_space(spot, total)
            if self.splits(response, current):
                state.segments = split(total or 0, self.request.segments)
                _preallocate(handle, spot.path, total or 0)
                _save_state(state, spot, total or 0)
                return self.segmented(spot, handle, response, state)
            _save_state(state, spot, total or 0)
            return self.stream(spot, handle, response, state, 0)

    def announced_total(self, response: requests.Response) -> int | None:
        if response.status_code == 206:
            return parse_content_range(header(response, "Content-Range"))[2]
        total = _length(response) if header(response, "Transfer-Encoding") is None else None
        expected = self.request.size
        if total is not None and expected is not None and total != expected:
            raise SizeMismatchError(
                f"{self.request.url} offers {total} bytes, but {expected} were expected; "
                "check the URL or the expected size"
            )
        return total

    def check_resume(
        self, response: requests.Response, state: PartialState | None, offset: int, have: int
    ) -> None:
        """A 206 is appended only if it continues exactly the recorded version at `offset`."""
        first, _, total = parse_content_range(header(response, "Content-Range"))
        if (
            state is None
            or offset == 0
            or first != offset
            or have != offset
            or total != state.source.total
            or not self.same_version(response, state)
        ):
            raise _StartOver

    def already_whole(
        self,
        spot: _Spot,
        handle: BinaryIO,
        response: requests.Response,
        state: PartialState | None,
        offset: int,
    ) -> TransferResult:
        """A 416 for a resume at the end: the partial may already hold the whole file."""
        total = parse_content_range(header(response, "Content-Range"))[2]
        if state is None or total is None or total != offset or total != state.source.total:
            raise _StartOver
        result = self.new_result(spot.path, response, state, offset)
        self.hooks.started(result)
        self.finish(result, handle, spot, state, self.digest_of(handle, offset, state))
        return result

    def current_size(self, spot: _Spot, current: Validators) -> int | None:
        """The size of the existing final file when it may stand, else None: when its stamp
        still speaks for it (see `stamp_of`) and records this very version, or when its bytes
        hash to the caller's SHA-256 (or the one the server announces)."""
        with _final(spot) as final:
            if final is None:
                return None
            size = os.fstat(final.fileno()).st_size
            if current.total is not None and size != current.total:
                return None
            record = self.stamp_of(final)
            sha256 = self.request.sha256 or current.sha256
            vouched = record is not None and record.source.same_version(current)
            if vouched and (sha256 is None or (record.sha256 or "").lower() == sha256.lower()):
                return size
            if sha256 is None or _hash_prefix(final, size).hexdigest() != sha256.lower():
                return None
            return size

    def splits(self, response: requests.Response, current: Validators) -> bool:
        """Segments only for a large file whose every range can be checked to be this version."""
        return bool(
            self.request.segments > 1
            and current.total
            and current.total >= self.request.segment_threshold
            and current.if_range
            and response.status_code == 200
            and (header(response, "Accept-Ranges") or "").lower() == "bytes"
        )

    def new_result(
        self, path: Path, response: requests.Response, state: PartialState, done: int
    ) -> TransferResult:
        return TransferResult(
            download_path=path,
            bytes=done,
            total_bytes=state.source.total or 0,
            content_type=header(response, "Content-Type"),
            etag=state.source.etag,
            final_url=response.url,
            resumed_from=done,
        )

    # -- one stream -------------------------------------------------------------------------

    def stream(
        self,
        spot: _Spot,
        handle: BinaryIO,
        response: requests.Response,
        state: PartialState,
        offset: int,
    ) -> TransferResult:
        result = self.new_result(spot.path, response, state, offset)
        self.hooks.started(result)
        digest = self.digest_of(handle, offset, state)
        handle.seek(offset)
        handle.truncate(offset)
        try:
            with self.copying(spot):
                self.copy(response, handle, result, digest)
        except DownloadJobCancelledException:
            raise
        except Exception as exc:
            # The next attempt asks another URL first: a retry moves to another mirror.
            self.mirrors.failed(self.asked.get(response, self.request.url))
            if isinstance(exc, OverlongBodyError | SizeMismatchError):
                _void(handle, spot)  # a body that was not the file asked for
            raise
        self.finish(result, handle, spot, state, digest)
        return result

    @contextmanager
    def copying(self, spot: _Spot) -> Iterator[None]:
        """Around the copy into the partial file: a read the watchdog broke raises the
        watchdog's reason (a cancel, a stall) instead of the error it caused; a cancel removes
        the partial file and its state."""
        try:
            try:
                yield
            except Exception as exc:
                self.watchdog.raise_reason(exc)
                raise
        except DownloadJobCancelledException:
            spot.folder.remove(spot.partial)
            spot.folder.remove(spot.state)
            raise

    def copy(
        self,
        response: requests.Response,
        handle: BinaryIO,
        result: TransferResult,
        digest: hashlib._Hash | None,
    ) -> None:
        read = read_chunks(response, self.request.chunk_size)
        limit = self.request.size
        while chunk := read():
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                remaining = max(result.total_bytes - result.bytes, len(chunk))
                raise InsufficientSpaceError(
                    f"the disk holding {result.download_path} is full: {remaining} more bytes "
                    "are needed; free some space and run the job again, it resumes from the "
                    f"{result.bytes} bytes already saved"
                ) from exc
            if digest is not None:
                digest.update(chunk)
            result.bytes += len(chunk)
            if limit is not None and result.bytes > limit:
                raise SizeMismatchError(
                    f"{self.request.url} sent more than the {limit} bytes expected"
                )
            self.watchdog.count(result.bytes, result.total_bytes)
            self.hooks.progress(result.bytes, result.total_bytes)

    # -- several segments -------------------------------------------------------------------

    def segmented(
        self,
        spot: _Spot,
        handle: BinaryIO,
        response: requests.Response,
        state: PartialState,
    ) -> TransferResult:
        """Fill the partial file with several range requests; `response` only told us about it."""
        response.close()
        assert state.segments is not None
        result = self.new_result(spot.path, response, state, state.segmented_done)
        self.hooks.started(result)

        def progress(done: int) -> None:
            result.bytes = done
            self.watchdog.count(done, result.total_bytes)
            self.hooks.progress(done, result.total_bytes)

        def check(answer: requests.Response, first: int, last: int) -> None:
            _check_segment(answer, first, last, state.source, self.from_mirror(answer))

        copy = SegmentedCopy(
            state.segments,
            handle.fileno(),
            lambda: _save_state(state, spot, state.source.total or 0),
            lambda index, first, last: self.get_range(first, last, state, turn=index),
            check,
            lambda answer: read_chunks(answer, self.request.chunk_size),
            progress,
            self.switch_segment,
            switches=len(self.mirrors.urls) - 1,
        )
        try:
            with self.copying(spot):
                copy.run()
        except SegmentMismatch as exc:
            _void(handle, spot)
            raise IncompleteDownloadError(
                f"{self.request.url} changed or stopped serving ranges mid-download ({exc}); "
                "the partial file was emptied and the next attempt starts over"
            ) from exc
        result.bytes = copy.done
        self.finish(result, handle, spot, state, self.digest_of(handle, copy.done, state))
        return result

    def switch_segment(self, answer: requests.Response, error: BaseException) -> bool:
        """A segment's connection failed: blame its URL and say whether the segment may go
        on from another (not when the watchdog stopped the transfer, or the plan is void)."""
        if self.watchdog.reason is not None or not isinstance(error, requests.RequestException):
            return False
        self.mirrors.failed(self.asked.get(answer, self.request.url))
        return True

    # -- the end ----------------------------------------------------------------------------

    def wanted_sha256(self, state: PartialState) -> str | None:
        """The caller's SHA-256, else the one the server announced when the file was begun."""
        return (self.request.sha256 or state.source.sha256 or "").lower() or None

    def digest_of(self, handle: BinaryIO, length: int, state: PartialState) -> hashlib._Hash | None:
        """The hash of what the descriptor holds so far, when a hash is to be checked."""
        return _hash_prefix(handle, length) if self.wanted_sha256(state) else None

    def finish(
        self,
        result: TransferResult,
        handle: BinaryIO,
        spot: _Spot,
        state: PartialState,
        digest: hashlib._Hash | None,
    ) -> None:
        handle.flush()
        written = os.fstat(handle.fileno())
        partial = spot.folder.path / spot.partial
        if result.total_bytes and (
            result.bytes != result.total_bytes or written.st_size != result.total_bytes
        ):
            raise IncompleteDownloadError(
                f"received {result.bytes} of {result.total_bytes} bytes from "
                f"{self.request.url}; the partial file {partial} is kept for a resume"
            )
        result.total_bytes = result.bytes
        if self.request.size is not None and result.bytes != self.request.size:
            _void(handle, spot)
            raise SizeMismatchError(
                f"{self.request.url} sent {result.bytes} bytes, but {self.request.size} were "
                "expected"
            )
        sha256 = digest.hexdigest() if digest is not None else None
        wanted = self.wanted_sha256(state)
        if sha256 is not None and sha256 != wanted:
            _void(handle, spot)
            spot.folder.remove(spot.partial)
            said = "expected" if self.request.sha256 else "but the server announced"
            raise ChecksumMismatchError(
                f"{self.request.url} has SHA-256 {sha256}, {said} {wanted}; the bad file was "
                "removed"
            )
        self.hooks.check(result.bytes, result.total_bytes)  # a cancel still wins until now
        record = CompletedRecord(source=state.source, sha256=sha256)
        write_record(handle.fileno(), record)  # the origin, should nothing below happen
        os.fsync(handle.fileno())
        named = spot.folder.stat(spot.partial)
        if named is None or (named.st_dev, named.st_ino) != (written.st_dev, written.st_ino):
            raise DestinationChangedError(
                f"{partial} was removed or replaced while it was written; the verified bytes "
                "are not under that name any more, so nothing was renamed. Run the job again."
            )
        # A link planted at the final name meanwhile would only lose its entry to the rename
        # (nothing it points to is touched), but it is someone's: say so instead.
        spot.folder.refuse_links(spot.name)
        spot.folder.replace(spot.partial, spot.name)
        seal_record(handle.fileno(), record)  # the file's last change: see filestate.Seal
        spot.folder.remove(spot.state)


def _check_segment(
    response: requests.Response, first: int, last: int, source: Validators, mirror: bool
) -> None:
    """Raise SegmentMismatch unless `response` is bytes from `first` of the planned file (a
    shorter or longer range is fine: the segment reads what it needs, a retry the rest).
    A mirror's version was judged when it answered (see `_Fetch.mirror_mismatch`)."""
    start, _, total = parse_content_range(header(response, "Content-Range"))
    etag, modified = _strong_etag(response), header(response, "Last-Modified")
    if (
        response.status_code != 206
        or (start, total) != (first, source.total)
        or (not mirror and source.etag and etag != source.etag)
        or (not mirror and not source.etag and modified != source.last_modified)
    ):
        raise SegmentMismatch(
            f"asked for bytes {first}-{last} of {source.total}, got HTTP "
            f"{response.status_code} {header(response, 'Content-Range') or ''} "
            f"ETag {etag or '-'}"
        )


@contextmanager
def _opened(spot: _Spot) -> Iterator[BinaryIO]:
    """The partial file, to be written anywhere in it. Not O_APPEND: Linux's pwrite would
    append every segment at the end of the file. Closing flushes its buffer, and a disk that
    is full then says so as the writes do, not as a bare OSError in place of the reason."""
    handle = open(spot.folder.open(spot.partial, os.O_RDWR | os.O_CREAT), "r+b")  # noqa: SIM115
    try:
        yield handle
    except BaseException:
        with suppress(OSError):  # what is on its way out says what happened
            handle.close()
        raise
    try:
        handle.close()
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InsufficientSpaceError(
            f"the disk holding {spot.path} is full; free some space and run the job again, it "
            f"resumes from the {spot.partial_size()} bytes already saved"
        ) from exc


@contextmanager
def _final(spot: _Spot) -> Iterator[BinaryIO | None]:
    """The file under the final name, to read, or None when there is none."""
    try:
        fd = spot.folder.open(spot.name, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    with open(fd, "rb") as handle:
        yield handle


def _origin_url(spot: _Spot) -> str | None:
    """The URL the file under the final name is stamped with, if it is a stamped file."""
    try:
        with _final(spot) as final:
            record = read_record(final.fileno()) if final is not None else None
    except UnsafeDestinationError:
        return None
    return record.source.url if record is not None else None


def _void(handle: BinaryIO, spot: _Spot) -> None:
    """Bytes that are not the file asked for: empty the partial and forget its state, so that
    nothing resumes them."""
    handle.truncate(0)
    spot.folder.remove(spot.state)


def _save_state(state: PartialState, spot: _Spot, needed: int) -> None:
    """Save the partial file's state; a full disk says so as the data writes do."""
    try:
        state.write(spot.folder, spot.state)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise InsufficientSpaceError(
            f"the disk holding {spot.path} is full: up to {needed} more bytes are needed; "
            "free some space and run the job again, it resumes from what is already saved"
        ) from exc


def _preallocate(handle: BinaryIO, path: Path, total: int) -> None:
    """Reserve the whole file up front: segments write anywhere, and a full disk shows now."""
    try:
        os.posix_fallocate(handle.fileno(), 0, total)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        handle.truncate(0)
        raise InsufficientSpaceError(
            f"not enough space for {path}: {total} bytes are needed; free some space or "
            "choose another destination"
        ) from exc


def _check_space(spot: _Spot, needed: int) -> None:
    """Refuse before the first byte when the file cannot fit (the preflight check)."""
    free = spot.folder.free()
    if needed > free:
        raise InsufficientSpaceError(
            f"not enough space for {spot.path}: {needed} more bytes are needed and only {free} "
            f"are free on its filesystem; free {needed - free} bytes or choose another "
            "destination"
        )


def _hash_prefix(handle: BinaryIO, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    handle.seek(0)
    remaining = length
    while remaining:
        block = handle.read(min(remaining, 1 << 20))
        if not block:
            break
        digest.update(block)
        remaining -= len(block)
    return digest


def fetch(
    request: TransferRequest,
    session: requests.Session | None = None,
    hooks: TransferHooks | None = None,
) -> TransferResult:
    """Download `request.url`; raises requests errors, TransferError or a cancellation."""
    own_session = session is None
    session = session or requests.Session()
    try:
        return _Fetch(request, session, hooks or TransferHooks()).run()
    finally:
        if own_session:
            session.close()
