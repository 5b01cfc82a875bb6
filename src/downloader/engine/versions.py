"""Whether an answer, a partial file or a finished file is this version of this file: the
validator and resume policy of one transfer.

A partial file belongs to the version it was begun on (see `filestate`): a resume goes on only
with a 206 that starts exactly where the file ends, of a file of the recorded length, with the
recorded strong ETag (else the Last-Modified date); anything else starts the file over
(`StartOver`). A file under the final name stands when its sealed stamp records this very
version, or when its bytes hash to the SHA-256 the caller or the server names.

The source is the file's identity. A mirror seldom shares the source's ETag, so its answer is
taken only when it is of the same total size and either has the same strong ETag or a SHA-256
will check the finished file; a mirror that fails this is dropped for the job (see `sources`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

import requests

from downloader.engine.disk import Spot, hash_prefix
from downloader.engine.errors import SizeMismatchError
from downloader.engine.filestate import CompletedRecord, PartialState, Validators, read_record
from downloader.engine.reading import (
    announced_sha256,
    content_length,
    header,
    parse_content_range,
    strong_etag,
)
from downloader.engine.request import TransferRequest
from downloader.engine.segments import SegmentMismatch


class StartOver(Exception):
    """The answer does not continue the partial file: empty it and ask for the whole file."""


def validators(
    url: str,
    response: requests.Response,
    total: int | None,
    origin_digest: Callable[[requests.Response], str | None],
) -> Validators:
    """The version of a file an answer describes.

    Args:
        url: the source URL, the version's identity.
        response: the answer.
        total: the whole file's size as the answer gives it (see `Versions.announced_total`).
        origin_digest: reads what the origin adds to the standard digest headers (the
            request's `announced_digest`).

    Returns:
        Its strong ETag, Last-Modified, total size and the SHA-256 it announces.
    """
    return Validators(
        url=url,
        etag=strong_etag(response),
        last_modified=header(response, "Last-Modified"),
        total=total,
        sha256=announced_sha256(response, origin_digest),
    )


def check_segment(
    response: requests.Response, first: int, last: int, source: Validators, mirror: bool
) -> None:
    """Check that a segment's answer continues the planned file.

    A shorter or longer range than asked is fine: the segment reads what it needs, a retry
    the rest. A mirror's version was judged when it answered (see `Versions.mirror_mismatch`).

    Args:
        response: the answer to a request for bytes `first` to `last`.
        first, last: the bytes asked for.
        source: the planned version.
        mirror: whether the answer came from a mirror.

    Raises:
        SegmentMismatch: not a 206 from `first` of a file of the planned length and (from the
            source) of the planned validator; the plan is void.
    """
    start, _, total = parse_content_range(header(response, "Content-Range"))
    etag, modified = strong_etag(response), header(response, "Last-Modified")
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


class Versions:
    """The version policy of one transfer, for its request's URL, SHA-256 and size."""

    def __init__(self, request: TransferRequest) -> None:
        self.request = request

    def wanted_sha256(self, state: PartialState) -> str | None:
        """The caller's SHA-256, else the one the server announced when the file was begun."""
        return (self.request.sha256 or state.source.sha256 or "").lower() or None

    # -- answers ----------------------------------------------------------------------------

    def announced_total(self, response: requests.Response) -> int | None:
        """The whole file's size as the answer gives it; SizeMismatchError when it is not the
        size the caller expects."""
        if response.status_code == 206:
            return parse_content_range(header(response, "Content-Range"))[2]
        total = content_length(response) if header(response, "Transfer-Encoding") is None else None
        expected = self.request.size
        if total is not None and expected is not None and total != expected:
            raise SizeMismatchError(
                f"{self.request.url} offers {total} bytes, but {expected} were expected; "
                "check the URL or the expected size"
            )
        return total

    def mirror_mismatch(
        self, response: requests.Response, state: PartialState | None, first: int | None
    ) -> str | None:
        """Why a mirror's answer (to a request for the file `state` describes, from byte
        `first` for a range) is not the file this job writes; None when it is."""
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
            return self.version_mismatch(response, content_length(response), state)
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
        etag = strong_etag(response)
        if (state.source.etag and etag == state.source.etag) or self.wanted_sha256(state):
            return None
        return (
            f"its ETag {etag or '(none)'} is not the file's {state.source.etag or '(none)'} and "
            "no SHA-256 says they are the same bytes"
        )

    def same_version(self, response: requests.Response, state: PartialState, mirror: bool) -> bool:
        """The answer is of the version the partial file was begun on: the source's by its
        strong validator, a mirror's (`mirror`) as `version_mismatch` judges it."""
        if mirror:
            total = parse_content_range(header(response, "Content-Range"))[2]
            if response.status_code != 206:
                total = content_length(response)
            return self.version_mismatch(response, total, state) is None
        etag, modified = strong_etag(response), header(response, "Last-Modified")
        if state.source.etag:
            return etag == state.source.etag
        return not modified or modified == state.source.last_modified

    # -- files on disk ----------------------------------------------------------------------

    def resumable_state(self, spot: Spot) -> PartialState | None:
        """The partial file's state when a resume may go on from it: of this URL, with a
        validator `If-Range` can carry."""
        state = spot.read_state()
        if state is None or state.source.url != self.request.url or not state.source.if_range:
            return None
        return state

    def conditional_headers(self, spot: Spot | None) -> dict[str, str]:
        """Ask whether an existing final file of this URL is still current (304 if so)."""
        if spot is None or spot.folder.stat(spot.partial) is not None:
            return {}
        with spot.final() as final:
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

    def current_size(self, spot: Spot, current: Validators) -> int | None:
        """The size of the existing final file when it may stand, else None: when its stamp
        still speaks for it (see `stamp_of`) and records this very version, or when its bytes
        hash to the caller's SHA-256 (or the one the server announces)."""
        with spot.final() as final:
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
            if sha256 is None or hash_prefix(final, size).hexdigest() != sha256.lower():
                return None
            return size
