"""The HTTP transfer engine: one URL into one file, resumably. Knows nothing of Celery or Redis.

Bytes go to `<final name>.downloading`, which is locked while written, resumed with a Range
request when it already holds data, checked for size (and SHA-256 when asked), synced and only
then renamed to its final name: a file under its final name is always complete.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests

from downloader.filenames import choose_filename
from downloader.models import DownloadJobCancelledException
from downloader.segments import SegmentedCopy, SegmentMismatch, SegmentPlan, sidecar_path

PARTIAL_SUFFIX = ".downloading"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class TransferError(Exception):
    """A download that cannot complete as asked; the message says what to do."""


class IncompleteDownloadError(TransferError):
    """The server sent fewer or more bytes than it announced."""


class ChecksumMismatchError(TransferError):
    """The bytes do not have the SHA-256 the caller expected."""


class DestinationBusyError(TransferError):
    """Another download is writing the same file right now."""


class InsufficientSpaceError(TransferError):
    """The destination's filesystem cannot hold the rest of the file."""


@dataclass
class TransferRequest:
    url: str
    dest: Path
    access_token: str | None = None
    download_path: Path | None = None
    """The final path an earlier attempt chose; lets a retry resume before the first byte."""
    etag: str | None = None
    sha256: str | None = None
    chunk_size: int = 1 << 20
    timeout: tuple[float, float] = (10.0, 60.0)
    segments: int = 1
    """Connections for one large file from a server that accepts ranges."""
    segment_threshold: int = 64 << 20
    """Files smaller than this use one connection."""


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


@dataclass
class TransferHooks:
    """What the caller hears; raising DownloadJobCancelledException from either one stops it."""

    started: Callable[[TransferResult], None] = lambda result: None
    progress: Callable[[int, int], None] = lambda current, total: None


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


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


def _target_path(request: TransferRequest, response: requests.Response) -> Path:
    if request.download_path is not None:
        return request.download_path
    if request.dest.is_dir():
        name = choose_filename(request.url, response.headers.get("Content-Disposition"))
        return request.dest / name
    return request.dest


def _raise_for_status(response: requests.Response) -> None:
    if response.status_code >= 400:
        reason = response.reason or f"HTTP {response.status_code}"
        raise requests.HTTPError(reason, response=response)


def _validator(response: requests.Response) -> str | None:
    """A strong ETag, the only kind `If-Range` may carry."""
    etag = response.headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else None


class _Fetch:
    """One transfer's state; a class only so the steps can share it without long signatures."""

    def __init__(
        self, request: TransferRequest, session: requests.Session, hooks: TransferHooks
    ) -> None:
        self.request = request
        self.session = session
        self.hooks = hooks

    def request_bytes(self, byte_range: str | None, etag: str | None) -> requests.Response:
        """One streamed GET, raw bytes (no content coding), `Range` resumed only if the file
        still has the validator `etag`; raises on HTTP errors but 416, which callers judge."""
        headers = {"Accept-Encoding": "identity"}
        if self.request.access_token:
            headers["Authorization"] = f"Bearer {self.request.access_token}"
        if byte_range:
            headers["Range"] = f"bytes={byte_range}"
            if etag:
                headers["If-Range"] = etag
        response = self.session.get(
            self.request.url, headers=headers, stream=True, timeout=self.request.timeout
        )
        if response.status_code != 416:
            _raise_for_status(response)
        return response

    def get(self, offset: int) -> requests.Response:
        """The file from `offset` on (the whole file for 0)."""
        return self.request_bytes(f"{offset}-" if offset else None, self.request.etag)

    def open_range(self, first: int, last: int, etag: str | None) -> requests.Response:
        """Bytes [first, last], for one segment."""
        response = self.request_bytes(f"{first}-{last}", etag)
        _raise_for_status(response)
        return response

    def run(self) -> TransferResult:
        known = self.request.download_path
        planned = known is not None and sidecar_path(partial_path(known)).exists()
        # A segmented partial file is preallocated, so its size says nothing: probe from 0.
        offset = _size(partial_path(known)) if known and not planned else 0
        response = self.get(offset)
        path = _target_path(self.request, response)
        partial = partial_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not O_APPEND: Linux's pwrite would append every segment at the end of the file.
        with open(os.open(partial, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                response.close()
                raise DestinationBusyError(
                    f"another download is writing {path} right now; wait for it or choose "
                    "another destination"
                ) from None
            plan = SegmentPlan.load(sidecar_path(partial))
            if plan is not None:
                if _continues(plan, response):
                    return self.segmented(response, path, partial, handle, plan)
                sidecar_path(partial).unlink(missing_ok=True)  # another file now: start over
                handle.truncate(0)
            have = _size(partial)
            if have != offset:
                # The name was only known from this response, or the file changed under us.
                response.close()
                offset = have
                response = self.get(offset)
            return self.stream(response, path, partial, handle, offset)

    def stream(
        self,
        response: requests.Response,
        path: Path,
        partial: Path,
        handle: BinaryIO,
        offset: int,
    ) -> TransferResult:
        with response:
            offset, total = self.resume_point(response, offset, handle)
            result = TransferResult(
                download_path=path,
                bytes=offset,
                total_bytes=total or 0,
                content_type=response.headers.get("Content-Type"),
                etag=_validator(response),
                final_url=response.url,
                resumed_from=offset,
            )
            if offset == 0 and total and _complete_already(path, total, self.request.sha256):
                result.bytes, result.already_complete = total, True
                handle.truncate(0)
                partial.unlink(missing_ok=True)
                return result
            if total:
                _check_space(path, total - offset)
            if offset == 0 and self.splits(response, total):
                plan = SegmentPlan.split(total, self.request.segments, result.etag)
                _preallocate(handle, path, total)
                plan.save(sidecar_path(partial))
                return self.segmented(response, path, partial, handle, plan)
            self.hooks.started(result)
            digest = _hash_prefix(handle, offset) if self.request.sha256 else None
            handle.seek(offset)
            handle.truncate(offset)
            try:
                self.copy(response, handle, result, digest)
            except DownloadJobCancelledException:
                partial.unlink(missing_ok=True)
                raise
        self.finish(result, handle, partial, digest)
        return result

    def splits(self, response: requests.Response, total: int | None) -> bool:
        return bool(
            self.request.segments > 1
            and total
            and total >= self.request.segment_threshold
            and response.status_code == 200
            and response.headers.get("Accept-Ranges", "").lower() == "bytes"
        )

    def segmented(
        self,
        response: requests.Response,
        path: Path,
        partial: Path,
        handle: BinaryIO,
        plan: SegmentPlan,
    ) -> TransferResult:
        """Fill the partial file with several range requests; `response` only told us about it."""
        response.close()
        sidecar = sidecar_path(partial)
        result = TransferResult(
            download_path=path,
            bytes=plan.done,
            total_bytes=plan.total,
            content_type=response.headers.get("Content-Type"),
            etag=plan.etag,
            final_url=response.url,
            resumed_from=plan.done,
        )
        self.hooks.started(result)

        def progress(current: int, total: int) -> None:
            result.bytes = current
            self.hooks.progress(current, total)

        copy = SegmentedCopy(
            plan, handle.fileno(), sidecar, self.open_range, progress, self.request.chunk_size
        )
        try:
            copy.run()
        except DownloadJobCancelledException:
            partial.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            raise
        except SegmentMismatch as exc:
            sidecar.unlink(missing_ok=True)
            handle.truncate(0)
            raise IncompleteDownloadError(
                f"{self.request.url} changed or stopped serving ranges mid-download ({exc}); "
                "the partial file was emptied for the next attempt"
            ) from exc
        result.bytes = plan.done
        digest = _hash_prefix(handle, plan.total) if self.request.sha256 else None
        self.finish(result, handle, partial, digest)
        sidecar.unlink(missing_ok=True)
        return result

    def resume_point(
        self, response: requests.Response, offset: int, handle: BinaryIO
    ) -> tuple[int, int | None]:
        """Where the body starts in the file and how long the file is, from the answer."""
        if response.status_code == 416:
            _, _, total = parse_content_range(response.headers.get("Content-Range"))
            if total is not None and total == offset:
                return offset, total  # the partial file already holds everything
            handle.truncate(0)
            raise IncompleteDownloadError(
                f"the server refused to resume {self.request.url} at byte {offset}; "
                "the partial file was emptied for the next attempt"
            )
        if response.status_code == 206:
            first, _, total = parse_content_range(response.headers.get("Content-Range"))
            if first == offset:
                return offset, total
            handle.truncate(0)
            raise IncompleteDownloadError(
                f"the server answered a resume at byte {offset} with bytes from {first}; "
                "the partial file was emptied for the next attempt"
            )
        length = response.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None

    def copy(
        self,
        response: requests.Response,
        handle: BinaryIO,
        result: TransferResult,
        digest: hashlib._Hash | None,
    ) -> None:
        for chunk in response.iter_content(self.request.chunk_size):
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
            self.hooks.progress(result.bytes, result.total_bytes)

    def finish(
        self,
        result: TransferResult,
        handle: BinaryIO,
        partial: Path,
        digest: hashlib._Hash | None,
    ) -> None:
        handle.flush()
        os.fsync(handle.fileno())
        if result.total_bytes and result.bytes != result.total_bytes:
            raise IncompleteDownloadError(
                f"received {result.bytes} of {result.total_bytes} bytes from "
                f"{self.request.url}; the partial file {partial} is kept for a resume"
            )
        result.total_bytes = result.bytes
        if digest is not None and digest.hexdigest() != self.request.sha256.lower():
            partial.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"{self.request.url} has SHA-256 {digest.hexdigest()}, expected "
                f"{self.request.sha256}; the bad file was removed"
            )
        os.replace(partial, result.download_path)


def _continues(plan: SegmentPlan, response: requests.Response) -> bool:
    """Whether the file the server offers now is the one the plan was made for."""
    length = response.headers.get("Content-Length", "")
    return (
        response.status_code == 200
        and length.isdigit()
        and int(length) == plan.total
        and _validator(response) == plan.etag
    )


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


def _check_space(path: Path, needed: int) -> None:
    """Refuse before the first byte when the file cannot fit (the preflight check)."""
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise InsufficientSpaceError(
            f"not enough space for {path}: {needed} more bytes are needed and only {free} are "
            f"free on its filesystem; free {needed - free} bytes or choose another destination"
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


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


def _complete_already(path: Path, total: int, sha256: str | None) -> bool:
    if _size(path) != total or not path.is_file():
        return False
    if sha256 is None:
        return True
    with open(path, "rb") as handle:
        return _hash_prefix(handle, total).hexdigest() == sha256.lower()


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
