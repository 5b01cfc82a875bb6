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
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

from downloader.engine.filestate import Segment

_SAVE_EVERY = 0.5  # seconds between saves of the plan while segments run


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
    ) -> None:
        self.segments, self.fd, self.save = segments, fd, save
        self.open_range, self.check_answer = open_range, check_answer
        self.read_chunks, self.progress = read_chunks, progress
        self.switch, self.switches = switch, switches
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.last_save = 0.0

    @property
    def done(self) -> int:
        return sum(segment.done for segment in self.segments)

    def run(self) -> None:
        todo = [(i, segment) for i, segment in enumerate(self.segments) if not segment.finished]
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = [pool.submit(self.fetch, index, segment) for index, segment in todo]
            for future in futures:
                error = future.exception()
                if error is not None and not errors:
                    errors.append(error)
        with self.lock:
            self.save()
        if errors:
            raise errors[0]

    def fetch(self, index: int, segment: Segment) -> None:
        try:
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
        except BaseException:
            self.abort.set()
            raise

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
        """Count bytes and report them; reports are serialised, as the caller expects."""
        with self.lock:
            segment.done += count
            now = time.monotonic()
            if now - self.last_save >= _SAVE_EVERY:
                self.last_save = now
                self.save()
            self.progress(self.done)
