"""What the engine knows about the files it leaves on disk, kept with the files themselves.

A partial file belongs to one source: beside `<name>.downloading` sits
`<name>.downloading.state` (JSON) with the URL, the validators the server gave when the file
was started (strong ETag, Last-Modified, total size), the job that owns it and, for a
segmented download, how far each segment got. A resume goes on only when the server still
answers with those validators; anything else starts the file over, so bytes of two sources or
two versions never end up in one file.

A completed file carries the same facts in extended attributes (`user.downloader.origin`), set
on the descriptor that was written before it is renamed into place: they move with the file,
and vanish when anything else replaces it. Once it is in place the stamp is written again with
a seal (see `Seal`): what the file's size, times and inode were. Extended attributes survive a
write in place, so only a stamp whose seal still holds speaks for the bytes: a later job for
the same URL reuses the file only then, and only when the server still vouches for its
version. On filesystems without user extended attributes there is no record, and the file is
simply fetched again (or hashed, when the job names its SHA-256).

Every file here is reached through a `DestDir`, never through a link.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

from downloader.engine.destdir import DestDir
from downloader.engine.errors import UnsafeDestinationError
from downloader.engine.naming import PARTIAL_SUFFIX, STATE_SUFFIX

_XATTR = "user.downloader.origin"
_MAX_STATE_BYTES = 1 << 20
"""A state file is a few hundred bytes; anything far larger is not one of ours."""
_TEMPORARY = ".tmp"
"""The state file is written as `<state>.tmp`, then renamed."""
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL
SEAL_SLACK_NS = 20_000_000
"""How far after the seal's own reading the file's ctime may be: the time it takes to write
the stamp (one clock tick where timestamps are coarse). A change later than that shows."""
_SEAL_TRIES = 5


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

    def write(self, folder: DestDir, name: str) -> None:
        """Save as the state file `name` of `folder`: written whole under a new temporary name
        (created exclusively, never through a link), then renamed over `name`, so a reader
        sees the old state or the new one."""
        temporary = name + _TEMPORARY
        try:
            fd = folder.open(temporary, _NEW)
        except FileExistsError:  # a leftover of a save that died, or a link: see which
            folder.refuse_links(temporary)
            folder.remove(temporary)
            fd = folder.open(temporary, _NEW)
        try:
            with open(fd, "wb") as handle:
                handle.write(json.dumps(asdict(self)).encode())
            folder.replace(temporary, name)
        except BaseException:
            folder.remove(temporary)
            raise

    @classmethod
    def read(cls, folder: DestDir, name: str) -> PartialState | None:
        """The state file `name` of `folder`, or None when there is none or it is not one;
        UnsafeDestinationError when it is a link."""
        try:
            with open(folder.open(name, os.O_RDONLY), "rb") as handle:
                text = handle.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(text) > _MAX_STATE_BYTES:
            return None
        try:
            raw: dict[str, Any] = json.loads(text)
            segments = raw.get("segments")
            return cls(
                source=Validators(**raw["source"]),
                owner=raw.get("owner"),
                segments=[Segment(**s) for s in segments] if segments is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):  # not what a save writes
            return None

    def save(self, path: Path) -> None:
        """`write` for a caller that holds the state file's path (the CLI)."""
        with DestDir.reach(path.parent, create=False) as folder:
            self.write(folder, path.name)

    @classmethod
    def load(cls, path: Path) -> PartialState | None:
        """`read` for a caller that holds the state file's path (the CLI)."""
        try:
            with DestDir.reach(path.parent, create=False) as folder:
                return cls.read(folder, path.name)
        except (OSError, UnsafeDestinationError):
            return None


@dataclass
class Seal:
    """What a completed file was when its stamp was written, so that the stamp speaks only for
    those bytes. A write in place changes the size or the mtime, and the ctime, which no one
    can set back (`utime` sets back the mtime and moves the ctime on); copying or moving the
    file changes its inode or ctime. Writing the stamp itself moves the ctime, so the seal
    keeps the ctime read just before it, and holds while the ctime is at most `SEAL_SLACK_NS`
    later: the stamp is the file's last change. No device number: on a network volume it
    differs from machine to machine, and another filesystem means another ctime anyway."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, found: os.stat_result) -> Seal:
        return cls(found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino)

    def holds(self, found: os.stat_result) -> bool:
        return (found.st_size, found.st_mtime_ns, found.st_ino) == (
            self.size,
            self.mtime_ns,
            self.ino,
        ) and 0 <= found.st_ctime_ns - self.ctime_ns <= SEAL_SLACK_NS


@dataclass
class CompletedRecord:
    """The origin of a completed file, stored in its extended attributes."""

    source: Validators
    sha256: str | None = field(default=None)
    seal: Seal | None = None

    def vouches_for(self, found: os.stat_result) -> bool:
        """Whether this stamp speaks for the bytes of the file `found` describes now."""
        return self.seal is not None and self.seal.holds(found)


def partial_path(path: Path) -> Path:
    """The partial file of the final file `path`: `<name>.downloading` beside it."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def state_path(partial: Path) -> Path:
    """The state file of the partial file `partial`: `<name>.downloading.state`."""
    return partial.with_name(partial.name + STATE_SUFFIX)


def engine_names(name: str) -> list[str]:
    """The names of every file the engine keeps beside the final file `name` while it
    downloads it: the partial file, its state, the state's temporary."""
    partial = name + PARTIAL_SUFFIX
    state = partial + STATE_SUFFIX
    return [partial, state, state + _TEMPORARY]


def discard_partial(path: Path, owner: int | None, root: Path | None = None) -> bool:
    """Remove the partial file of a final path and its state, when its owner asks.

    A partial nobody is writing (no lock held) whose state names `owner` (or any owner, for
    None) is removed; one that another job owns now, or that is being written, stays. So does
    anything that is not the engine's own (a link where its files should be, or on the way
    from `root`).

    Args:
        path: the final file's path.
        owner: the job asking (a cancelled job's id); None: whoever owns it.
        root: the job's root directory, from which `path`'s directory is reached without
            following links; None: that directory itself.

    Returns:
        Whether the partial file was removed.
    """
    try:
        with DestDir.reach(path.parent, root, create=False) as folder:
            return _discard(folder, path.name, owner)
    except (FileNotFoundError, NotADirectoryError, UnsafeDestinationError):
        return False


def _discard(folder: DestDir, name: str, owner: int | None) -> bool:
    partial, state_name, _ = names = engine_names(name)
    state = PartialState.read(folder, state_name)
    if state is not None and owner is not None and state.owner not in (owner, None):
        return False
    try:
        fd = folder.open(partial, os.O_RDWR)
    except FileNotFoundError:
        for leftover in names[1:]:
            folder.remove(leftover)
        return False
    with open(fd, "r+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # someone is writing it right now
        for leftover in names:
            folder.remove(leftover)
    return True


def write_record(fd: int, record: CompletedRecord) -> None:
    """Stamp a written file with its origin (an extended attribute).

    Args:
        fd: the file, open.
        record: its origin: the source's validators and the SHA-256 it was checked against.

    Nothing happens where extended attributes are not supported: the file then simply has no
    stamp, and a later job fetches it again or hashes it.
    """
    payload = json.dumps(asdict(record)).encode()
    with contextlib.suppress(OSError):
        os.setxattr(fd, _XATTR, payload)


def seal_record(fd: int, record: CompletedRecord) -> None:
    """Stamp a file with its origin, sealed as the file is now (see `Seal`): its last change.

    When the stamp could not follow its reading closely enough (a busy machine), it is
    written again; a seal that never holds only costs the next job a hash or a download.

    Args:
        fd: the file, open, in place under its final name.
        record: its origin, without a seal.
    """
    for _ in range(_SEAL_TRIES):
        seal = Seal.of(os.fstat(fd))
        write_record(fd, dataclasses.replace(record, seal=seal))
        if seal.holds(os.fstat(fd)):
            return


def read_record(fd: int) -> CompletedRecord | None:
    """The stamp of a file, every field checked: anyone who may write the file may write it.

    Args:
        fd: the file, open.

    Returns:
        The stamp, or None when there is none that parses (or xattrs are not supported).
        Whether it still speaks for the bytes is `CompletedRecord.vouches_for`'s to say.

    Raises:
        OSError: the attribute could not be read for another reason than its absence.
    """
    try:
        raw = json.loads(os.getxattr(fd, _XATTR))
        seal = raw.get("seal")
        record = CompletedRecord(
            source=Validators(**raw["source"]),
            sha256=raw.get("sha256"),
            seal=Seal(**seal) if seal is not None else None,
        )
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if _well_typed(record) else None


def _well_typed(record: CompletedRecord) -> bool:
    source, seal = record.source, record.seal
    texts = (source.url, source.etag, source.last_modified, source.sha256, record.sha256)
    return (
        isinstance(source.url, str)
        and all(isinstance(text, str | None) for text in texts)
        and (source.total is None or type(source.total) is int)
        and (seal is None or all(type(number) is int for number in astuple(seal)))
    )
