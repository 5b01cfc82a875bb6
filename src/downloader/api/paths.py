"""Confinement of callers' paths to the download root.

A REST caller names a directory relative to `DOWNLOADER_DOWNLOAD_ROOT`; whatever it writes
(`..`, an absolute path, `~`, a NUL byte, a symlink that points outside) must not make a
worker write anywhere else.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import HTTPException


def confined(root: Path, dest: str, what: str = "dest") -> Path:
    """`root/dest` resolved (symlinks followed), or a 422 when it is not inside `root`;
    the refusal never quotes `dest` (it says which field through `what`)."""
    try:
        resolved = root.resolve()
    except (ValueError, OSError) as exc:  # a symlink loop, a name too long
        raise HTTPException(
            422, f"{what} is not a usable path (a NUL byte, a name too long, a symlink loop)"
        ) from exc
    return inside(resolved, dest, what)


def inside(root: Path, dest: str, what: str = "dest") -> Path:
    """`confined` under a `root` resolved already: many paths of one request, one root."""
    try:
        if PurePosixPath(dest).is_absolute() or Path(dest).is_absolute() or dest.startswith("~"):
            raise HTTPException(422, f"{what} must be relative to the download root")
        target = (root / dest).resolve()
    except (ValueError, OSError) as exc:  # a NUL byte, a symlink loop, a name too long
        raise HTTPException(
            422, f"{what} is not a usable path (a NUL byte, a name too long, a symlink loop)"
        ) from exc
    if target != root and root not in target.parents:
        raise HTTPException(422, f"{what} leaves the download root")
    return target
