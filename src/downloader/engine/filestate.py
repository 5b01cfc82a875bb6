"""What the engine knows about the files it leaves on disk, kept with the files themselves.

A partial file belongs to one source: beside `<name>.downloading` sits
`<name>.downloading.state` (JSON) with the URL, the validators the server gave when the file
was started (strong ETag, Last-Modified, total size), the job that owns it and, for a
segmented download, how far each segment got. A resume goes on only when the server still
answers with those validators; anything else starts the file over, so bytes of two sources or
two versions never end up in one file.

A completed file carries the same facts in extended attributes (`user.downloader.origin`), set
on the descriptor that was written before it is renamed into place: they move with the file,
and vanish when anything else replaces it. A later job for the same URL reuses the file only
when the server still vouches for them. On filesystems without user extended attributes there
is no record, and the file is simply fetched again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from downloader.engine.naming import PARTIAL_SUFFIX, STATE_SUFFIX

_XATTR = "user.downloader.origin"


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
class Validators:
    """What identifies one version of one source, as the server described it."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None
    sha256: str | None = None
    """The SHA-256 the server announced for the whole file (a digest header), hex."""

    @property
    def if_range(self) -> str | None:
        """The value `If-Range` may carry: a strong ETag, else the Last-Modified date."""
        return self.etag or self.last_modified

    def same_version(self, other: Validators) -> bool:
        """Both describe the same bytes: same URL, and a matching strong validator."""
        if self.url != other.url or self.total != other.total:
            return False
        if self.etag or other.etag:
            return self.etag == other.etag
        return self.last_modified is not None and self.last_modified == other.last_modified


@dataclass
class PartialState:
    """The sidecar of a partial file."""

    source: Validators
    owner: int | None = None
    """The job writing it: only that job's cancellation may remove it."""
    segments: list[Segment] | None = None

    @property
    def segmented_done(self) -> int:
        return sum(segment.done for segment in self.segments or ())

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(asdict(self)))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> PartialState | None:
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            segments = raw.get("segments")
            return cls(
                source=Validators(**raw["source"]),
                owner=raw.get("owner"),
                segments=[Segment(**s) for s in segments] if segments is not None else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass
class CompletedRecord:
    """The origin of a completed file, stored in its extended attributes."""

    source: Validators
    sha256: str | None = field(default=None)


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def state_path(partial: Path) -> Path:
    return partial.with_name(partial.name + STATE_SUFFIX)


def engine_files(path: Path) -> list[Path]:
    """Every file the engine keeps beside the final `path` while downloading it."""
    partial = partial_path(path)
    state = state_path(partial)
    return [partial, state, state.with_name(state.name + ".tmp")]


def discard_partial(path: Path, owner: int | None) -> bool:
    """Remove the partial file of final `path` and its state, when `owner` owns them.

    A partial nobody is writing (no lock held) whose state names `owner` (or any owner, for
    None) is removed; one that another job owns now, or that is being written, stays.
    Answers whether it was removed.
    """
    partial = partial_path(path)
    state = PartialState.load(state_path(partial))
    if state is not None and owner is not None and state.owner not in (owner, None):
        return False
    try:
        fd = os.open(partial, os.O_RDWR)
    except FileNotFoundError:
        for leftover in engine_files(path)[1:]:
            leftover.unlink(missing_ok=True)
        return False
    with open(fd, "r+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # someone is writing it right now
        for leftover in engine_files(path):
            leftover.unlink(missing_ok=True)
    return True


def write_record(fd: int, record: CompletedRecord) -> None:
    """Stamp the written file with its origin; silently nothing where xattrs are unsupported."""
    payload = json.dumps(asdict(record)).encode()
    with contextlib.suppress(OSError):
        os.setxattr(fd, _XATTR, payload)


def read_record(path: Path) -> CompletedRecord | None:
    try:
        raw = json.loads(os.getxattr(path, _XATTR))
        return CompletedRecord(source=Validators(**raw["source"]), sha256=raw.get("sha256"))
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT, errno.EOPNOTSUPP):
            raise
        return None
    except (ValueError, KeyError, TypeError):
        return None
