"""Turning what a server or URL says into one safe file name.

A server's `Content-Disposition` and the last segment of a URL are untrusted: they may hold
separators, `..`, control characters or names that mean a device on Windows. Whatever comes
in, what comes out is a single path component that cannot leave the destination directory.
"""

from __future__ import annotations

import re
import unicodedata
from email.message import Message
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

FALLBACK_NAME = "download"
_MAX_NAME_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


def safe_filename(name: str | None) -> str | None:
    """One safe path component from `name`, or None when nothing usable is left."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = _CONTROL.sub("", name).replace("\\", "/")
    name = name.rsplit("/", 1)[-1]
    name = name.strip().strip(".").strip()
    if not name:
        return None
    stem = name.split(".", 1)[0].lower()
    if stem in _WINDOWS_RESERVED:
        name = f"_{name}"
    return _truncate(name)


def _truncate(name: str) -> str:
    if len(name.encode()) <= _MAX_NAME_BYTES:
        return name
    suffix = PurePosixPath(name).suffix
    if len(suffix.encode()) > 32:
        suffix = ""
    budget = _MAX_NAME_BYTES - len(suffix.encode())
    stem = name[: len(name) - len(suffix)] if suffix else name
    return stem.encode()[:budget].decode(errors="ignore") + suffix


def content_disposition_filename(header: str | None) -> str | None:
    """The file name a `Content-Disposition` header names (RFC 6266, `filename*` first)."""
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    try:
        return message.get_filename()
    except (ValueError, LookupError):
        return None


def url_filename(url: str) -> str | None:
    """The last segment of a URL's path, percent-decoded, without its query."""
    path = urlsplit(url).path
    return unquote(path.rstrip("/").rsplit("/", 1)[-1]) or None


def choose_filename(url: str, content_disposition: str | None) -> str:
    """The name a download into a directory gets: the server's, else the URL's, else a default."""
    return (
        safe_filename(content_disposition_filename(content_disposition))
        or safe_filename(url_filename(url))
        or FALLBACK_NAME
    )
