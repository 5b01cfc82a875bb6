"""A destination directory held by its descriptor: how the engine touches files on a volume
that others may write to.

The download volume is shared: every worker mounts it, and other tenants (other services,
people, whatever an API caller's files are used by) may create entries in it. A path is looked
up again at every use, so a name that was a file when checked can be a symbolic link the next
moment, and a directory on the way can become a link out of the volume. So the engine looks a
path up once per attempt: it opens the directory it works in by walking down from the job's
root one component at a time without following links (creating what is missing), and reaches
every name in it through that descriptor: files opened with `O_NOFOLLOW` (and `O_EXCL` where
they must be new), looked at without following, renamed and removed relative to it. The root
itself is opened as its caller named it: that name, links and all, was theirs to choose.

A link, or anything but a plain file, where the engine's own names are is someone else's: the
engine refuses it with `UnsafeDestinationError`, naming it, and writes nothing through it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from downloader.engine.errors import DirectoryRemovedError, UnsafeDestinationError

_FILE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
"""Added to every file opened: no link followed, no descriptor inherited by a child process,
and no open that waits on a FIFO planted where a file should be."""
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITES = os.O_WRONLY | os.O_RDWR


def refusal(
    path: Path, found: os.stat_result | None, expected: str = "a file"
) -> UnsafeDestinationError:
    """The error for what was found where the engine expected its own file.

    Args:
        path: where, for the message.
        found: what is there (`lstat`), or None when it is gone.
        expected: what should be there: "a file", or "a directory" on the way.

    Returns:
        An UnsafeDestinationError naming what was found (a link, a file with other names,
        a FIFO, a directory) and what to do.
    """
    advice = "remove it, or choose another destination"
    if found is not None and stat.S_ISLNK(found.st_mode):
        return UnsafeDestinationError(
            f"{path} is a symbolic link; the downloader never follows links in a destination, "
            "so nothing was written through it. Anyone who can write to the download volume "
            f"can plant one: {advice}"
        )
    if found is not None and stat.S_ISREG(found.st_mode) and found.st_nlink > 1:
        return UnsafeDestinationError(
            f"{path} has {found.st_nlink} names (hard links); the downloader writes only into "
            f"files of its own, so nothing was written to it: {advice}"
        )
    return UnsafeDestinationError(
        f"{path} should be {expected} but is {_kind(found)}; nothing was written there: {advice}"
    )


def _kind(found: os.stat_result | None) -> str:
    if found is None:
        return "gone"
    if stat.S_ISDIR(found.st_mode):
        return "a directory"
    if stat.S_ISREG(found.st_mode):
        return "a file"
    return "a FIFO" if stat.S_ISFIFO(found.st_mode) else "a special file"


class DestDir:
    """One directory of a destination, open; `path` only names it in messages and results."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def reach(
        cls,
        directory: Path,
        root: Path | None = None,
        create: bool = True,
        made: Callable[[Path], None] | None = None,
    ) -> DestDir:
        """Open a directory by walking down to it without following links.

        Args:
            directory: the directory to open; it must lie lexically below `root`.
            root: where the walk starts, opened as named (links and all: the caller chose
                it); default: `directory` itself.
            create: make missing directories on the way (and `root`).
            made: told of each directory below `root` this walk made (not of `root`).

        Returns:
            The directory, open; close it (or use it as a context manager).

        Raises:
            UnsafeDestinationError: `directory` is not below `root`, goes through `..`, or a
                component on the way is a link or not a directory.
            FileNotFoundError: a component is missing and `create` is False.
        """
        root = directory if root is None else root
        try:
            below = directory.relative_to(root).parts
        except ValueError:
            raise UnsafeDestinationError(
                f"{directory} is not inside the job's directory {root}; nothing was written"
            ) from None
        if ".." in below:
            raise UnsafeDestinationError(
                f"{directory} leaves {root} through '..'; nothing was written"
            )
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            root.mkdir(parents=True, exist_ok=True)  # only when missing: two calls saved
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        here = root
        for name in below:
            here = here / name
            fd = _down(fd, name, here, create, made)
        return cls(fd, directory)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> DestDir:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def stat(self, name: str) -> os.stat_result | None:
        """What `name` is (a link as a link), or None when there is nothing by that name."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def refuse_links(self, *names: str) -> None:
        """Raise UnsafeDestinationError if any of `names` is a symbolic link."""
        for name in names:
            found = self.stat(name)
            if found is not None and stat.S_ISLNK(found.st_mode):
                raise refusal(self.path / name, found)

    def open(self, name: str, flags: int, mode: int = 0o644) -> int:
        """A descriptor of the plain file `name`; FileNotFoundError, FileExistsError (with
        `O_EXCL`) as `os.open` raises them. A link, a FIFO, a directory, or a file to be
        written that has another name too (a hard link to someone else's file), is refused."""
        try:
            fd = os.open(name, flags | _FILE, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT and flags & os.O_CREAT and self.removed():
                raise DirectoryRemovedError(
                    f"{self.path} was removed before {name} could be made in it"
                ) from None
            if exc.errno != errno.ELOOP:
                raise
            raise refusal(self.path / name, self.stat(name)) from None
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or (flags & _WRITES and found.st_nlink > 1):
            os.close(fd)
            raise refusal(self.path / name, found)
        os.set_blocking(fd, True)
        return fd

    def removed(self) -> bool:
        """Whether this directory was removed since it was reached (it has no name left)."""
        return os.fstat(self.fd).st_nlink == 0

    def remove(self, name: str) -> None:
        """Remove the entry `name` (a link itself, never what it points to), if there is one."""
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def replace(self, source: str, target: str) -> None:
        """Rename `source` over `target`: the directory entry `target` is replaced, whatever
        it is; nothing it may point to is touched."""
        os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def free(self) -> int:
        """Bytes free for this user on the directory's filesystem."""
        usage = os.fstatvfs(self.fd)
        return usage.f_bavail * usage.f_frsize


def _down(
    parent: int, name: str, path: Path, create: bool, made: Callable[[Path], None] | None = None
) -> int:
    """The directory `name` in `parent`, not through a link, made if missing and `create`
    (and then `made` is told); `parent` is closed either way."""
    try:
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, dir_fd=parent)
            except FileExistsError:
                pass  # made by another attempt meanwhile: not ours
            else:
                if made is not None:
                    made(path)
            return os.open(name, _DIRECTORY, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        try:
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            found = None
        raise refusal(path, found, "a directory") from None
    finally:
        os.close(parent)


def remove_empty(made: Iterable[Path], root: Path) -> list[Path]:
    """Remove the directories of `made` (below `root`) that are empty, deepest first, each
    reached without following links; one holding anything, or gone, stays as it is.

    For a job that failed or was cancelled: the directories its attempts made go, and never
    one that was there before it (only the walk that made a directory names it).

    Returns:
        The directories removed.
    """
    removed = []
    for path in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
        try:
            with DestDir.reach(path.parent, root, create=False) as folder:
                os.rmdir(path.name, dir_fd=folder.fd)
        except (OSError, UnsafeDestinationError):
            continue  # not empty, gone, or no longer a plain directory below root
        removed.append(path)
    return removed
