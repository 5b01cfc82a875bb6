"""The disk side of one download: where its file goes, and every write, check and rename of
the files the engine keeps there.

A `Spot` is a destination directory held by its descriptor (see `destdir`) and a final name;
the partial file, its state and the state's temporary are named after it (see `filestate`).
Everything here reaches them through that descriptor. A full disk is said as such wherever it
shows (the space check, the preallocation, a write of the state, the close that flushes), with
what to do; and the file renamed into place is the one that was written and verified: the
rename happens only while the partial name still leads to that inode.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from downloader.engine.destdir import DestDir
from downloader.engine.errors import (
    DestinationBusyError,
    DestinationChangedError,
    InsufficientSpaceError,
    UnsafeDestinationError,
)
from downloader.engine.filestate import (
    CompletedRecord,
    PartialState,
    engine_names,
    read_record,
    seal_record,
    write_record,
)

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
"""The errors a write gets from a full disk, or a full quota."""


@dataclass(frozen=True)
class Spot:
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

    # -- reading ----------------------------------------------------------------------------

    def read_state(self) -> PartialState | None:
        """The partial file's state, or None when there is none that parses."""
        return PartialState.read(self.folder, self.state)

    @contextmanager
    def final(self) -> Iterator[BinaryIO | None]:
        """The file under the final name, to read, or None when there is none."""
        try:
            fd = self.folder.open(self.name, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        with open(fd, "rb") as handle:
            yield handle

    def origin_url(self) -> str | None:
        """The URL the file under the final name is stamped with, if it is a stamped file."""
        try:
            with self.final() as final:
                record = read_record(final.fileno()) if final is not None else None
        except UnsafeDestinationError:
            return None
        return record.source.url if record is not None else None

    # -- writing ----------------------------------------------------------------------------

    @contextmanager
    def opened(self) -> Iterator[BinaryIO]:
        """The partial file, to be written anywhere in it. Not O_APPEND: Linux's pwrite would
        append every segment at the end of the file. Unbuffered: every write is a whole
        chunk already (see `write_all`), and a buffer only added a seek or a stat to each
        call on it (a small file's dozen system calls, each a hand-over of the GIL between a
        worker's threads). A disk that is full on the close says so as the writes do, not as a
        bare OSError in place of the reason."""
        fd = self.folder.open(self.partial, os.O_RDWR | os.O_CREAT)
        handle = open(fd, "r+b", buffering=0)  # noqa: SIM115
        try:
            yield handle
        except BaseException:
            with suppress(OSError):  # what is on its way out says what happened
                handle.close()
            raise
        try:
            handle.close()
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            raise InsufficientSpaceError(
                f"the disk holding {self.path} is full; free some space and run the job again, "
                f"it resumes from the {self.partial_size()} bytes already saved"
            ) from exc

    def lock(self, handle: BinaryIO) -> None:
        """Lock the partial file at `handle` for this attempt; DestinationBusyError when
        another download holds it (see `filestate.discard_partial`, which asks the same)."""
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DestinationBusyError(
                f"another download is writing {self.path} right now; wait for it or choose "
                "another destination"
            ) from None

    def save_state(self, state: PartialState, needed: int) -> None:
        """Save the partial file's state; a full disk says so as the data writes do."""
        try:
            state.write(self.folder, self.state)
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            raise InsufficientSpaceError(
                f"the disk holding {self.path} is full: up to {needed} more bytes are needed; "
                "free some space and run the job again, it resumes from what is already saved"
            ) from exc

    def check_space(self, needed: int) -> None:
        """Refuse before the first byte when the file cannot fit (the preflight check)."""
        free = self.folder.free()
        if needed > free:
            raise InsufficientSpaceError(
                f"not enough space for {self.path}: {needed} more bytes are needed and only "
                f"{free} are free on its filesystem; free {needed - free} bytes or choose "
                "another destination"
            )

    def preallocate(self, handle: BinaryIO, total: int) -> None:
        """Reserve the whole file up front: segments write anywhere, and a full disk shows
        now."""
        try:
            os.posix_fallocate(handle.fileno(), 0, total)
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            handle.truncate(0)
            raise InsufficientSpaceError(
                f"not enough space for {self.path}: {total} bytes are needed; free some space "
                "or choose another destination"
            ) from exc

    def disk_full(self, needed: int, saved: int) -> InsufficientSpaceError:
        """The error for a write of the partial file that found the disk full (`FULL_DISK`),
        with how much more is needed and that the job resumes from what is `saved`."""
        return InsufficientSpaceError(
            f"the disk holding {self.path} is full: {needed} more bytes are needed; free some "
            f"space and run the job again, it resumes from the {saved} bytes already saved"
        )

    def void(self, handle: BinaryIO) -> None:
        """Bytes that are not the file asked for: empty the partial and forget its state, so
        that nothing resumes them."""
        handle.truncate(0)
        self.drop_state()

    def drop_state(self) -> None:
        """Remove the partial file's state (the partial is started over without one)."""
        self.folder.remove(self.state)

    def forget(self) -> None:
        """Remove the partial file and its state (a cancel, or a final file that stands)."""
        self.folder.remove(self.partial)
        self.folder.remove(self.state)

    def put_in_place(self, handle: BinaryIO, record: CompletedRecord) -> None:
        """Stamp, sync and rename the verified partial file at `handle` to the final name.

        The stamp goes on first (the origin, should nothing below happen), and once more,
        sealed, after the rename: the file's last change (see `filestate.Seal`).

        Raises:
            DestinationChangedError: the partial name no longer leads to the file written.
            UnsafeDestinationError: a link was planted at the final name meanwhile.
        """
        write_record(handle.fileno(), record)
        os.fsync(handle.fileno())
        written = os.fstat(handle.fileno())
        named = self.folder.stat(self.partial)
        if named is None or (named.st_dev, named.st_ino) != (written.st_dev, written.st_ino):
            raise DestinationChangedError(
                f"{self.folder.path / self.partial} was removed or replaced while it was "
                "written; the verified bytes are not under that name any more, so nothing was "
                "renamed. Run the job again."
            )
        # A link planted at the final name meanwhile would only lose its entry to the rename
        # (nothing it points to is touched), but it is someone's: say so instead.
        self.folder.refuse_links(self.name)
        self.folder.replace(self.partial, self.name)
        seal_record(handle.fileno(), record)
        self.folder.remove(self.state)


def write_all(handle: BinaryIO, data: bytes) -> None:
    """Write all of `data` at the file's position: an unbuffered write may take part of it
    (a disk filling up takes what fits; the next write then raises ENOSPC)."""
    view = memoryview(data)
    while view:
        view = view[handle.write(view) :]


def hash_prefix(handle: BinaryIO, length: int) -> hashlib._Hash:
    """The SHA-256 of the start of a file.

    Args:
        handle: the file, open to read; it is read from its start.
        length: how many bytes to hash (fewer when the file is shorter).

    Returns:
        The hash object, to be updated with what follows or read with `hexdigest()`.
    """
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
