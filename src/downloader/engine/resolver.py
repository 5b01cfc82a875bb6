"""What a failed name lookup means: a host that does not exist, or a resolver having trouble.

requests reports both as a `ConnectionError`, like a dropped connection, which is retried with
backoff: a typo in a host name would cost five retries and half a minute before it fails, with
an error that does not name the host. The resolver's answer tells them apart:
`EAI_NONAME` (no such name) and `EAI_NODATA` (the name has no address) are its final word,
and asking again only repeats it; `EAI_AGAIN` ("Temporary failure in name resolution") and
anything else stay connection errors, retried like one. The answer is found wherever the
failure sits in the exception's chain: urllib3's `NameResolutionError`, the public-only
connections of untrusted jobs (`netguard`), which resolve by themselves, and the check made
before a request goes to the untrusted proxy all carry the `socket.gaierror` inside.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from downloader.engine.errors import HostNotFoundError

FINAL_ANSWERS = frozenset(
    code
    for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None))
    if code is not None  # EAI_NODATA is glibc's; other systems fold it into EAI_NONAME
)


def host_not_found(exc: BaseException, url: str) -> HostNotFoundError | None:
    """A failed request as a HostNotFoundError, when the resolver said its host does not exist.

    Args:
        exc: what the request raised.
        url: the URL asked (a redirect's target, when the failure carries its request, is
            the host named instead: the one looked up).

    Returns:
        The error, its cause `exc`; None for anything else, a temporary resolver failure
        (`EAI_AGAIN`) included.
    """
    if not any(
        isinstance(cause, socket.gaierror) and cause.errno in FINAL_ANSWERS
        for cause in _causes(exc)
    ):
        return None
    asked = getattr(getattr(exc, "request", None), "url", None) or url
    missing = HostNotFoundError(urlsplit(asked).hostname or asked)
    missing.__cause__ = exc
    return missing


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it carries: causes, contexts, urllib3's `reason` and
    exceptions passed as arguments (urllib3's ProtocolError wraps one that way)."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        carried = (current.__cause__, current.__context__, getattr(current, "reason", None))
        todo.extend(x for x in (*carried, *current.args) if isinstance(x, BaseException))
