"""Turning what a server or URL says into one safe file name.

A server's `Content-Disposition` and the last segment of a URL are untrusted: they may hold
separators, `..`, control or bidi characters, names that mean a device on Windows, or a suffix
the engine uses for its own files next to the download. Whatever comes in, what comes out is a
single path component that cannot leave the destination directory, cannot be mistaken for a
partial file or its state, and still fits the filesystem once the engine adds its suffixes.
"""

from __future__ import annotations

import re
import unicodedata
from email.message import Message
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

FALLBACK_NAME = "download"
PARTIAL_SUFFIX = ".downloading"
STATE_SUFFIX = ".state"
"""The partial file's state sidecar is `<name>.downloading.state` (and `.tmp` while written)."""
ENGINE_SUFFIXES = (
    PARTIAL_SUFFIX,
    PARTIAL_SUFFIX + STATE_SUFFIX,
    PARTIAL_SUFFIX + STATE_SUFFIX + ".tmp",
)
_MAX_NAME_BYTES = 255 - len(ENGINE_SUFFIXES[-1])
"""Room left for the suffixes, so `<name>.downloading.state.tmp` is still a legal name."""
_DISTINCT_ROOM = len(" (9999)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{kind}{n}" for kind in ("com", "lpt") for n in (*"123456789", "¹", "²", "³")}
)


def is_engine_name(name: str) -> bool:
    """Whether `name` is, or looks like, a file the engine keeps beside a download.

    Args:
        name: a file name.

    Returns:
        True when it ends, in any case, like a partial file, its state or the state's
        temporary (`ENGINE_SUFFIXES`).
    """
    return name.lower().endswith(ENGINE_SUFFIXES)


def _is_device(name: str) -> bool:
    """Windows treats `CON`, `con.txt`, `CON .txt` and `COM1:` alike: the part before the first
    dot, without trailing spaces or colons, names a device."""
    stem = name.split(".", 1)[0].rstrip(" :").lower()
    return stem in _WINDOWS_DEVICES


def _drop_invisible(name: str) -> str:
    """Control characters and format characters (bidi overrides such as U+202E, zero-width
    joiners) can make a name display as something it is not."""
    name = _CONTROL.sub("", name)
    return "".join(c for c in name if unicodedata.category(c) != "Cf")


def _trim(name: str) -> str:
    """Without leading or trailing spaces and dots, however they alternate (`. .:` would
    otherwise keep a dot in front and name a hidden file)."""
    while (trimmed := name.strip().strip(".")) != name:
        name = trimmed
    return name


def safe_filename(name: str | None) -> str | None:
    """One safe path component from an untrusted name.

    Args:
        name: what a server or URL calls the file; None for nothing.

    Returns:
        A single path component with no separators, `..`, control or format characters;
        not a Windows device name nor like one of the engine's own files; short enough for
        the engine's suffixes and a `distinct_name` number. None when nothing usable is left.
    """
    if not name:
        return None
    name = _drop_invisible(unicodedata.normalize("NFC", name)).replace("\\", "/")
    name = name.rsplit("/", 1)[-1]
    name = _trim(name)
    if not name:
        return None
    if _is_device(name):
        name = f"_{name}"
    limit = _MAX_NAME_BYTES - _DISTINCT_ROOM
    name = _truncate(name, limit)
    # Only now: shortening drops an overlong extension, and what is left may end like an
    # engine file (`<stem>.downloading.<40 bytes>` becomes `<stem>.downloading`).
    if is_engine_name(name):
        name = _truncate(name, limit - 1) + "_"
    return name


def _truncate(name: str, limit: int) -> str:
    """Shorten the stem, keeping a reasonable extension, until `name` fits in `limit` bytes."""
    if len(name.encode()) <= limit:
        return name
    suffix = PurePosixPath(name).suffix
    if len(suffix.encode()) > 32:
        suffix = ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    budget = limit - len(suffix.encode())
    return stem.encode()[:budget].decode(errors="ignore").rstrip() + suffix


def distinct_name(name: str, number: int) -> str:
    """An alternative to a taken name, as browsers make it.

    Args:
        name: a safe name (see `safe_filename`).
        number: which alternative; 0 is the name itself.

    Returns:
        `model (1).bin` for `model.bin` and 1: the number before a reasonable extension.
    """
    if number == 0:
        return name
    path = PurePosixPath(name)
    suffix = path.suffix if len(path.suffix.encode()) <= 32 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    return f"{stem} ({number}){suffix}"


def content_disposition_filename(header: str | None) -> str | None:
    """The file name a `Content-Disposition` header names (RFC 6266, `filename*` first).

    Args:
        header: the header's value; None for none.

    Returns:
        The name as given, not yet made safe; None when there is none or it does not parse.
    """
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    try:
        return message.get_filename()
    except (ValueError, LookupError):
        return None


def url_filename(url: str) -> str | None:
    """The last segment of a URL's path, percent-decoded, without its query.

    Args:
        url: the URL.

    Returns:
        The segment, not yet made safe; None when the path has none.
    """
    path = urlsplit(url).path
    return unquote(path.rstrip("/").rsplit("/", 1)[-1]) or None


def choose_filename(url: str, content_disposition: str | None) -> str:
    """The name a download into a directory gets.

    Args:
        url: the source URL.
        content_disposition: the answer's `Content-Disposition`, if any.

    Returns:
        The server's name, else the URL's, made safe; `FALLBACK_NAME` when neither leaves
        anything.
    """
    return (
        safe_filename(content_disposition_filename(content_disposition))
        or safe_filename(url_filename(url))
        or FALLBACK_NAME
    )
