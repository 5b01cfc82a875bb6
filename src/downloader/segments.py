"""Segmented downloads: several Range requests fill one preallocated partial file.

One connection is limited by what the server or a CDN gives a single stream; several reach
the sum of their caps. The file is split into contiguous segments, each fetched by its own
thread and written in place with `pwrite`. How far each segment got is kept beside the
partial file (`<partial>.segments`, JSON), so a retry or another worker resumes every segment
where it stopped. The plan also records the file's validator: a server that answers a segment
with the whole file, or with another version of it, makes the attempt start over clean.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

SIDECAR_SUFFIX = ".segments"
_SAVE_EVERY = 0.5  # seconds between saves of the plan while segments run


@dataclass
class Segment:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def position(self) -> int:
        return self.start + self.done

    @property
    def finished(self) -> bool:
        return self.position >= self.end


@dataclass
class SegmentPlan:
    total: int
    etag: str | None
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def split(cls, total: int, count: int, etag: str | None) -> SegmentPlan:
        size = -(-total // count)
        starts = range(0, total, size)
        return cls(total, etag, [Segment(start, min(start + size, total)) for start in starts])

    @property
    def done(self) -> int:
        return sum(segment.done for segment in self.segments)

    def save(self, sidecar: Path) -> None:
        temporary = sidecar.with_name(sidecar.name + ".tmp")
        temporary.write_text(json.dumps(asdict(self)))
        os.replace(temporary, sidecar)

    @classmethod
    def load(cls, sidecar: Path) -> SegmentPlan | None:
        try:
            raw = json.loads(sidecar.read_text())
            return cls(raw["total"], raw["etag"], [Segment(**s) for s in raw["segments"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def sidecar_path(partial: Path) -> Path:
    return partial.with_name(partial.name + SIDECAR_SUFFIX)


class SegmentMismatch(Exception):
    """A segment's answer does not continue the planned file; the plan is void."""


OpenRange = Callable[[int, int, str | None], requests.Response]
"""Opens a GET for bytes [first, last] with an optional If-Range validator."""


class SegmentedCopy:
    """Runs a plan to the end, or stops all segments at the first exception and re-raises it."""

    def __init__(
        self,
        plan: SegmentPlan,
        fd: int,
        sidecar: Path,
        open_range: OpenRange,
        progress: Callable[[int, int], None],
        chunk_size: int,
    ) -> None:
        self.plan, self.fd, self.sidecar = plan, fd, sidecar
        self.open_range, self.progress, self.chunk_size = open_range, progress, chunk_size
        self.lock = threading.Lock()
        self.abort = threading.Event()
        self.last_save = 0.0

    def run(self) -> None:
        todo = [segment for segment in self.plan.segments if not segment.finished]
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = [pool.submit(self.fetch, segment) for segment in todo]
            for future in futures:
                error = future.exception()
                if error is not None and not errors:
                    errors.append(error)
        with self.lock:
            self.plan.save(self.sidecar)
        if errors:
            raise errors[0]

    def fetch(self, segment: Segment) -> None:
        try:
            response = self.open_range(segment.position, segment.end - 1, self.plan.etag)
            with response:
                if response.status_code != 206 or not response.headers.get(
                    "Content-Range", ""
                ).startswith(f"bytes {segment.position}-"):
                    raise SegmentMismatch(
                        f"asked for bytes {segment.position}-{segment.end - 1}, got HTTP "
                        f"{response.status_code} {response.headers.get('Content-Range', '')}"
                    )
                for chunk in response.iter_content(self.chunk_size):
                    if self.abort.is_set():
                        return
                    chunk = chunk[: segment.end - segment.position]
                    os.pwrite(self.fd, chunk, segment.position)
                    self.advance(segment, len(chunk))
                    if segment.finished:
                        return
        except BaseException:
            self.abort.set()
            raise

    def advance(self, segment: Segment, count: int) -> None:
        """Count bytes and report them; reports are serialised, as the caller expects."""
        with self.lock:
            segment.done += count
            now = time.monotonic()
            if now - self.last_save >= _SAVE_EVERY:
                self.last_save = now
                self.plan.save(self.sidecar)
            self.progress(self.plan.done, self.plan.total)
