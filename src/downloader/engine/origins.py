"""What counts as one origin (scheme, host, port) of a URL.

Two decisions hinge on it and must agree: which token may be sent to a URL (only the origin
it was made for), and whether an answer came from somewhere a source redirected to (a CDN's
signed URL, which expires). requests itself drops `Authorization` when a redirect changes any
of the three, so the same triple is used here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """`(scheme, host, port)`, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)
