"""Segmented downloads: several Range requests fill one preallocated partial file.

One connection is limited by what the server or a CDN gives a single stream; several reach
the sum of their caps. The file is split into contiguous segments, each fetched by its own
thread and written in place with `pwrite`. How far each segment got is kept in the partial
file's state (see `filestate`), so a retry or another worker resumes every segment where it
stopped. Every segment's answer must continue the planned file: a 206 for exactly the bytes
asked, of a file of the planned length, with the planned validator. Anything else (the whole
file, another version, another length) voids the plan and the attempt starts over clean:
segments of two versions never share a file.

With mirrors, segment `i` starts on the `i`-th URL of the job's line-up, so the segments
spread over all of them; a segment whose connection fails goes on from where it stopped on
another URL, within the same attempt (at most `switches` times), while the others run on.

A plan may grow (`most` above the segments running): the aggregate rate is measured over a
short window, then as many segments are added as run (up to `most`), each taking the second
half of the largest range still to fetch; growing goes on while a step raised the rate by more
than `GAIN`, and stops when gains flatten, at `most`, or when no range is worth splitting.
While it may grow, a segment that finishes takes half of the largest range left as well, so
no connection idles before the end. A split is saved in the state at once, so a resume asks
for every range still missing and nothing twice.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import requests

from downloader.engine.filestate import Segment

_SAVE_EVERY = 0.5  # seconds between saves of the plan while segments run
SETTLE = 0.05
"""Seconds new connections get to start before their bytes are measured."""
FIRST_WINDOW = 0.1
"""Seconds the rate of the segments a plan starts with is measured over: the first step
follows whatever it is (it is what a step is judged against), so it comes early."""
WINDOW = 0.2
"""Seconds the aggregate rate is measured over after each step of growth."""
GAIN = 1.10
"""A step of growth pays when it raised the aggregate rate by more than this factor."""


def split(total: int, count: int) -> list[Segment]:
    """A plan: `total` bytes as at most `count` contiguous segments of (nearly) equal size.

    Args:
        total: the file's size, more than 0.
        count: the most segments, at least 1.

    Returns:
        The segments, in order, covering every byte once.
    """
    size = -(-total // count)
    return [Segment(start, min(start + size, total)) for start in range(0, total, size)]


class SegmentMismatch(Exception):
    """A segment's answer does not continue the planned file; the plan is void."""


OpenRange = Callable[[int, int, int], requests.Response]
"""Opens a GET for bytes [first, last] of the planned version for segment number `index`
(`(index, first, last)`; the caller picks the URL and sets `If-Range`)."""

CheckAnswer = Callable[[requests.Response, int, int], None]
"""Raises SegmentMismatch unless the response is bytes [first, last] of the planned file."""

ReadChunks = Callable[[requests.Response], "Callable[[], bytes]"]
"""Gives a function that returns the next bytes that arrived (b"" at the end)."""

Switch = Callable[[requests.Response, BaseException], bool]
"""A segment's answer failed with this error: whether to go on from another URL."""


class SegmentedCopy:
    """Runs a plan to the end, or stops all segments at the first exception and re-raises it."""

    def __init__(
        self,
        segments: list[Segment],
        fd: int,
        save: Callable[[], None],
        open_range: OpenRange,
        check_answer: CheckAnswer,
        read_chunks: ReadChunks,
        progress: Callable[[int], None],
        switch: Switch = lambda answer, error: False,
        switches: int = 0,
        most: int = 0,
        least_piece: int = 4 << 20,
    ) -> None:
        """Args (beyond the callbacks'):
        segments: the plan, changed in place (progress, splits): it is the state saved.
        most: the most segments running at once the plan may grow to; 0: the plan is
            fixed: it never grows, and no segment takes over another's range.
        least_piece: the smallest range a split leaves on either side.
        """
        self.segments, self.fd, self.save = segments, fd, save
        self.open_range, self.check_answer = open_range, check_answer
        self.read_chunks, self.progress = read_chunks, progress
        self.switch, self.switches = switch, switches
        self.most, self.least_piece = most, least_piece
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.last_save = 0.0
        self.running = 0
        """Segments being fetched now (one thread each)."""
        self.steals = False
        """Whether a segment that finished takes over half of the largest range left."""

    @property
    def done(self) -> int:
        return sum(segment.done for segment in self.segments)

    def run(self) -> None:
        todo = [(i, segment) for i, segment in enumerate(self.segments) if not segment.finished]
        errors: list[BaseException] = []
        self.running = len(todo)
        self.steals = self.most > 0
        with ThreadPoolExecutor(max_workers=max(1, len(todo), self.most)) as pool:
            futures = [pool.submit(self.fetch, index, segment) for index, segment in todo]
            if self.steals:
                futures += self.grow(pool)
            for future in futures:
                error = future.exception()
                if error is not None and not errors:
                    errors.append(error)
        with self.lock:
            if self.steals:
                self.compact()
            self.save()
        if errors:
            raise errors[0]

    def grow(self, pool: ThreadPoolExecutor) -> list[Future[None]]:
        """Add segments while each step of them raises the aggregate rate (see the module).

        Returns:
            The added segments' futures.
        """
        added: list[Future[None]] = []
        before = self.rate(FIRST_WINDOW)
        while before is not None:
            with self.lock:
                step = min(self.running, self.most - self.running)
                new = [piece for _ in range(step) if (piece := self.split_largest()) is not None]
                self.running += len(new)
                if new:
                    self.save()
            added += [pool.submit(self.fetch, index, segment) for index, segment in new]
            if not new or self.running >= self.most:
                break
            after = self.rate(WINDOW)
            if after is None or after <= before * GAIN:
                break
            before = after
        return added

    def rate(self, window: float) -> float | None:
        """The aggregate rate (bytes/s) over `window` seconds, after `SETTLE`; None when the
        copy ended or is stopping meanwhile."""
        if self.abort.wait(SETTLE):
            return None
        with self.lock:  # the plan changes under the lock (splits, merges)
            start, began = self.done, time.monotonic()
        if self.abort.wait(window) or self.running == 0:
            return None
        with self.lock:
            return (self.done - start) / (time.monotonic() - began)

    def split_largest(self) -> tuple[int, Segment] | None:
        """A new segment: the second half of the largest range still to fetch, which ends
        where it begins (the caller holds the lock). None when no range is worth splitting.

        Returns:
            The new segment's number in the plan, and the segment.
        """
        left = [s for s in self.segments if s.end - s.position >= 2 * self.least_piece]
        if not left:
            return None
        largest = max(left, key=lambda s: s.end - s.position)
        middle = largest.position + (largest.end - largest.position) // 2
        new = Segment(middle, largest.end)
        largest.end = middle
        self.segments.append(new)
        return len(self.segments) - 1, new

    def compact(self) -> None:
        """Merge each run of adjacent finished segments into one (the caller holds the lock):
        however often ranges are split, the plan (and its state file) stays about twice as
        long as the segments still running."""
        merged: list[Segment] = []
        for segment in sorted(self.segments, key=lambda s: s.start):
            last = merged[-1] if merged else None
            if last is not None and last.finished and segment.finished:
                merged[-1] = Segment(last.start, segment.end, segment.end - last.start)
            else:
                merged.append(segment)
        self.segments[:] = merged

    def fetch(self, index: int, segment: Segment) -> None:
        try:
            while True:
                self.fetch_one(index, segment)
                if not self.steals or self.abort.is_set():
                    return
                with self.lock:
                    self.compact()
                    taken = self.split_largest()
                    if taken is None:
                        return
                    self.save()
                index, segment = taken
        except BaseException:
            self.abort.set()
            raise
        finally:
            with self.lock:
                self.running -= 1

    def fetch_one(self, index: int, segment: Segment) -> None:
        """Fetch one segment to its end (which a split may move closer meanwhile)."""
        switched = 0
        while not segment.finished and not self.abort.is_set():
            first, last = segment.position, segment.end - 1
            with self.open_range(index, first, last) as response:
                try:
                    self.check_answer(response, first, last)
                    self.copy(segment, response)
                except Exception as exc:
                    if switched >= self.switches or not self.switch(response, exc):
                        raise
                    switched += 1  # on from where it stopped, on another URL

    def copy(self, segment: Segment, response: requests.Response) -> None:
        read = self.read_chunks(response)
        while not segment.finished and not self.abort.is_set():
            chunk = read()
            if not chunk:  # a dropped connection: retriable, the plan stays
                raise requests.exceptions.ChunkedEncodingError(
                    f"the answer for bytes {segment.position}-{segment.end - 1} ended early"
                )
            chunk = chunk[: segment.end - segment.position]
            os.pwrite(self.fd, chunk, segment.position)
            self.advance(segment, len(chunk))

    def advance(self, segment: Segment, count: int) -> None:
        """Count bytes and report them; reports are serialised, as the caller expects.

        A split may have moved the segment's end below what was just written: the bytes past
        it belong to the new segment, which fetches (and counts) them itself. They were the
        same bytes of the same version, so writing them twice changes nothing."""
        with self.lock:
            segment.done += max(0, min(count, segment.end - segment.position))
            now = time.monotonic()
            if now - self.last_save >= _SAVE_EVERY:
                self.last_save = now
                self.save()
            self.progress(self.done)
