"""One attempt of a transfer: ask, pick the file's name, and write the answer into the partial
file, or find the file already there.

`attempt` asks: with a Range from the partial file's end when it may be resumed, else for the
whole file (conditionally, when a stamped file of this URL is under the final name). Once the
answer is in and the partial file is open and locked, an `Attempt` holds all of it (the spot,
the open file, the answer, where it starts) and decides what the answer is: the rest of the
partial file, a plan of segments to go on with, the whole file, or the file that is already
there; then it fills the partial file and verifies it before it goes into place (see
`disk.Spot.put_in_place`). An answer that cannot continue the partial file raises
`versions.StartOver`, and the transfer tries once more from nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

import requests

from downloader.engine.context import FetchContext
from downloader.engine.destdir import DestDir
from downloader.engine.disk import FULL_DISK, Spot, hash_prefix, write_all
from downloader.engine.errors import (
    ChecksumMismatchError,
    DownloadJobCancelledException,
    IncompleteDownloadError,
    InsufficientSpaceError,
    OverlongBodyError,
    SizeMismatchError,
)
from downloader.engine.filestate import CompletedRecord, PartialState, Validators
from downloader.engine.placing import choose_spot, known_path
from downloader.engine.reading import header, parse_content_range, strong_etag
from downloader.engine.request import TransferResult
from downloader.engine.segments import SegmentedCopy, SegmentMismatch, split
from downloader.engine.versions import StartOver, check_segment, validators

STATE_AFTER = 0.1
"""Seconds a whole file is written before its partial gets a state (what a resume needs);
a transfer that stops sooner for any reason but a crash saves it as it stops. A small file is
over long before: a state written, renamed and removed was a third of its work on disk. A
crash in that first tenth of a second costs the next attempt what had arrived (it starts over:
a partial without a state is nobody's, and a cancel's clean-up removes it)."""


def attempt(ctx: FetchContext, fresh: bool) -> TransferResult:
    """One attempt: ask, then write the answer (see `Attempt.write`).

    Args:
        ctx: the transfer.
        fresh: ask for the whole file, whatever a partial file holds.

    Raises:
        StartOver: the answer does not continue the partial file.
    """
    request = ctx.request
    known = known_path(request)
    directory = request.dest if known is None else known.parent
    with DestDir.reach(directory, request.root, made=request.made_directory) as folder:
        spot = None if known is None else Spot(folder, known.name)
        if spot is not None:
            spot.refuse_links()  # before anything is asked or written
        state = None if fresh or spot is None else ctx.versions.resumable_state(spot)
        response = None
        offset = 0
        if spot is not None and state is not None and state.segments is None:
            offset = spot.partial_size()
            response = ctx.sources.get_range(offset, None, state) if offset else None
        if response is None:
            headers = {} if fresh else ctx.versions.conditional_headers(spot)
            response = ctx.sources.get(headers, state)
        with response:
            spot = spot or choose_spot(folder, response, request)
            if response.status_code == 304:
                return _reuse_stamped(ctx, spot, response)
            with spot.opened() as handle:
                return Attempt(ctx, spot, handle, response, offset).write(fresh)


def _reuse_stamped(ctx: FetchContext, spot: Spot, response: requests.Response) -> TransferResult:
    """The server says the stamped version is current: reuse the file if its stamp still
    speaks for it now (it may have changed since the question was asked)."""
    with spot.final() as final:
        if ctx.versions.stamp_of(final) is None:
            raise StartOver
        assert final is not None
        if spot.folder.stat(spot.partial) is None:
            # A state without its partial file: a worker died between the rename and the
            # state's removal (`Spot.put_in_place`); the file it left stands, this goes.
            spot.folder.remove(spot.state)
        return _reused(spot, response, os.fstat(final.fileno()).st_size)


def _reused(spot: Spot, response: requests.Response, total: int) -> TransferResult:
    """The existing final file is current: nothing to fetch."""
    return TransferResult(
        download_path=spot.path,
        bytes=total,
        total_bytes=total,
        content_type=header(response, "Content-Type"),
        etag=strong_etag(response),
        final_url=response.url,
        already_complete=True,
    )


class Attempt:
    """One answer being written into one open, locked partial file."""

    def __init__(
        self,
        ctx: FetchContext,
        spot: Spot,
        handle: BinaryIO,
        response: requests.Response,
        offset: int,
    ) -> None:
        self.ctx, self.request, self.hooks = ctx, ctx.request, ctx.hooks
        self.spot, self.handle, self.response = spot, handle, response
        self.offset = offset
        """Where the partial file ended when the answer was asked for: a 206 starts there."""
        self.unsaved: PartialState | None = None
        """A whole file's state, until it is saved (see `STATE_AFTER`)."""
        self.save_at = time.monotonic() + STATE_AFTER

    def write(self, fresh: bool) -> TransferResult:
        """Decide what the answer is, and write it (or reuse what is there)."""
        spot, response, request = self.spot, self.response, self.request
        versions = self.ctx.versions
        spot.lock(self.handle)
        state = None if fresh else versions.resumable_state(spot)
        if state is not None and state.owner != request.owner:
            # Resumed by another job than the one that began it (a stopped `get` run again):
            # the partial is this job's now, for its cancel to remove.
            state.owner = request.owner
            spot.save_state(state, state.source.total or 0)
        if response.status_code == 416:
            return self.already_whole(state)
        total = versions.announced_total(response)
        current = validators(request.url, response, total, request.announced_digest)
        if response.status_code == 206:
            return self.stream(self.resumed(state), self.offset)
        if state is not None and state.segments is not None and self.continues(state, current):
            return self.segmented(state)
        if self.offset == 0 and (size := versions.current_size(spot, current)) is not None:
            spot.forget()
            return _reused(spot, response, size)
        # A whole file: whatever the partial held is not continued.
        self.handle.truncate(0)
        state = PartialState(source=current, owner=request.owner)
        if total:
            spot.check_space(total)
        if self.splits(current):
            state.segments = split(total or 0, request.segments)
            spot.preallocate(self.handle, total or 0)
            spot.save_state(state, total or 0)
            return self.segmented(state)
        spot.drop_state()  # an earlier attempt's would speak for bytes it did not see
        self.unsaved = state
        return self.stream(state, 0)

    # -- what the answer is -----------------------------------------------------------------

    def resumed(self, state: PartialState | None) -> PartialState:
        """The state a 206 continues: the recorded version, the answer starting at `offset`,
        and the partial file still that long. Raises StartOver for anything else."""
        first, _, total = parse_content_range(header(self.response, "Content-Range"))
        if (
            state is None
            or self.offset == 0
            or first != self.offset
            or os.fstat(self.handle.fileno()).st_size != self.offset
            or total != state.source.total
            or not self.ctx.versions.same_version(
                self.response, state, self.ctx.sources.from_mirror(self.response)
            )
        ):
            raise StartOver
        return state

    def continues(self, state: PartialState, current: Validators) -> bool:
        """A whole-file answer lets a plan of segments go on when it is of the plan's version."""
        if self.ctx.sources.from_mirror(self.response):
            return self.ctx.versions.same_version(self.response, state, mirror=True)
        return state.source.same_version(current)

    @property
    def grows(self) -> bool:
        """Whether a plan of segments may grow (and its segments take over others' ranges)."""
        return self.request.segments_max > self.request.segments

    def splits(self, current: Validators) -> bool:
        """Segments only for a large file whose every range can be checked to be this version."""
        request = self.request
        return bool(
            (request.segments > 1 or self.grows)
            and current.total
            and current.total >= request.segment_threshold
            and current.if_range
            and self.response.status_code == 200
            and (header(self.response, "Accept-Ranges") or "").lower() == "bytes"
        )

    def already_whole(self, state: PartialState | None) -> TransferResult:
        """A 416 for a resume at the end: the partial may already hold the whole file."""
        total = parse_content_range(header(self.response, "Content-Range"))[2]
        if state is None or total is None or total != self.offset or total != state.source.total:
            raise StartOver
        result = self.new_result(state, self.offset)
        self.hooks.started(result)
        self.finish(result, state, self.digest_of(state, self.offset))
        return result

    # -- filling the partial file -----------------------------------------------------------

    def new_result(self, state: PartialState, done: int) -> TransferResult:
        return TransferResult(
            download_path=self.spot.path,
            bytes=done,
            total_bytes=state.source.total or 0,
            content_type=header(self.response, "Content-Type"),
            etag=state.source.etag,
            final_url=self.response.url,
            resumed_from=done,
        )

    def stream(self, state: PartialState, offset: int) -> TransferResult:
        """Write the answer's body into the partial file from `offset` on."""
        result = self.new_result(state, offset)
        self.hooks.started(result)
        digest = self.digest_of(state, offset)
        self.handle.seek(offset)
        self.handle.truncate(offset)
        try:
            with self.copying():
                self.copy(result, digest)
        except DownloadJobCancelledException:
            raise
        except Exception as exc:
            # The next attempt asks another URL first: a retry moves to another mirror.
            self.ctx.sources.blame(self.response)
            if isinstance(exc, OverlongBodyError | SizeMismatchError):
                self.spot.void(self.handle)  # a body that was not the file asked for
            else:
                with suppress(OSError, InsufficientSpaceError):  # it must not hide `exc`
                    self.save_state(result.total_bytes)  # what arrived is resumed
            raise
        self.finish(result, state, digest)
        return result

    @contextmanager
    def copying(self) -> Iterator[None]:
        """Around the copy into the partial file: a read the watchdog broke raises the
        watchdog's reason (a cancel, a stall) instead of the error it caused; a cancel removes
        the partial file and its state."""
        try:
            try:
                yield
            except Exception as exc:
                self.ctx.watchdog.raise_reason(exc)
                raise
        except DownloadJobCancelledException:
            self.spot.forget()
            raise

    def copy(self, result: TransferResult, digest: hashlib._Hash | None) -> None:
        read = self.ctx.sources.reader(self.response, self.request.chunk_size)
        limit = self.request.size
        handle, watchdog, progress = self.handle, self.ctx.watchdog, self.hooks.progress
        while chunk := read():
            try:
                write_all(handle, chunk)
            except OSError as exc:
                if exc.errno not in FULL_DISK:
                    raise
                needed = max(result.total_bytes - result.bytes, len(chunk))
                raise self.spot.disk_full(needed, result.bytes) from exc
            if digest is not None:
                digest.update(chunk)
            if self.unsaved is not None and time.monotonic() >= self.save_at:
                self.save_state(result.total_bytes)
            result.bytes += len(chunk)
            if limit is not None and result.bytes > limit:
                raise SizeMismatchError(
                    f"{self.request.url} sent more than the {limit} bytes expected"
                )
            watchdog.count(result.bytes, result.total_bytes)
            progress(result.bytes, result.total_bytes)

    def segmented(self, state: PartialState) -> TransferResult:
        """Fill the partial file with several range requests, as `state`'s plan says; the
        answer only told us about the file."""
        self.response.close()
        assert state.segments is not None
        result = self.new_result(state, state.segmented_done)
        self.hooks.started(result)
        sources, watchdog, spot = self.ctx.sources, self.ctx.watchdog, self.spot

        def progress(done: int) -> None:
            result.bytes = done
            watchdog.count(done, result.total_bytes)
            self.hooks.progress(done, result.total_bytes)

        def check(answer: requests.Response, first: int, last: int) -> None:
            check_segment(answer, first, last, state.source, sources.from_mirror(answer))

        copy = SegmentedCopy(
            state.segments,
            self.handle.fileno(),
            lambda: spot.save_state(state, state.source.total or 0),
            lambda index, first, last: sources.get_range(first, last, state, turn=index),
            check,
            lambda answer: sources.reader(answer, self.request.chunk_size),
            progress,
            sources.switch,
            switches=len(sources.mirrors.urls) - 1,
            most=self.request.segments_max if self.grows else 0,
            least_piece=4 * self.request.chunk_size,
        )
        try:
            with self.copying():
                copy.run()
        except SegmentMismatch as exc:
            spot.void(self.handle)
            raise IncompleteDownloadError(
                f"{self.request.url} changed or stopped serving ranges mid-download ({exc}); "
                "the partial file was emptied and the next attempt starts over"
            ) from exc
        result.bytes = copy.done
        self.finish(result, state, self.digest_of(state, copy.done))
        return result

    def save_state(self, total: int) -> None:
        """Save the whole file's state if it is not yet (see `STATE_AFTER`)."""
        state, self.unsaved = self.unsaved, None
        if state is not None:
            self.spot.save_state(state, total)

    # -- the end ----------------------------------------------------------------------------

    def digest_of(self, state: PartialState, length: int) -> hashlib._Hash | None:
        """The hash of what the partial file holds so far, when a hash is to be checked."""
        if self.ctx.versions.wanted_sha256(state) is None:
            return None
        return hash_prefix(self.handle, length)

    def finish(
        self, result: TransferResult, state: PartialState, digest: hashlib._Hash | None
    ) -> None:
        """Check the written file's size and hash, then put it in place, stamped."""
        handle, spot, request = self.handle, self.spot, self.request
        handle.flush()
        written = os.fstat(handle.fileno())
        if result.total_bytes and (
            result.bytes != result.total_bytes or written.st_size != result.total_bytes
        ):
            self.save_state(result.total_bytes)
            raise IncompleteDownloadError(
                f"received {result.bytes} of {result.total_bytes} bytes from {request.url}; "
                f"the partial file {spot.folder.path / spot.partial} is kept for a resume"
            )
        result.total_bytes = result.bytes
        if request.size is not None and result.bytes != request.size:
            spot.void(handle)
            raise SizeMismatchError(
                f"{request.url} sent {result.bytes} bytes, but {request.size} were expected"
            )
        sha256 = digest.hexdigest() if digest is not None else None
        wanted = self.ctx.versions.wanted_sha256(state)
        if sha256 is not None and sha256 != wanted:
            spot.void(handle)
            spot.folder.remove(spot.partial)
            said = "expected" if request.sha256 else "but the server announced"
            raise ChecksumMismatchError(
                f"{request.url} has SHA-256 {sha256}, {said} {wanted}; the bad file was removed"
            )
        self.hooks.check(result.bytes, result.total_bytes)  # a cancel still wins until now
        spot.put_in_place(handle, CompletedRecord(source=state.source, sha256=sha256))
