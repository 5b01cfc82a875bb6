"""Reading an HTTP answer: its headers as the engine needs them, its status as an error, and
its body as raw bytes that may not run past what was announced.

Every byte and header here comes from outside: a header that does not parse counts as absent,
a body longer than its `Content-Length` is an error (the connection is then closed, never
reused), and an error answer's own text is never repeated (see `raise_for_status`).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import select
import socket
from collections.abc import Callable
from http import HTTPStatus

import requests
import urllib3

from downloader.engine.errors import OverlongBodyError
from downloader.engine.watchdog import socket_of

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)
_DIGEST_ITEM = re.compile(r"\s*sha-?256\s*=\s*:?([A-Za-z0-9+/=]+):?\s*", re.IGNORECASE)
_LOOK_AHEAD = io.DEFAULT_BUFFER_SIZE
"""How close to the announced end reads start looking for bytes past it: the size of
http.client's buffer (`socket.makefile`'s default). Bytes past the end can sit in that buffer
only once what is left of the body fits in it; before, a read takes what the socket has in one
call, and a peek would cut every read to a buffer's worth (a 64 KiB file in nine reads)."""


def header(response: requests.Response, name: str) -> str | None:
    """A header's value as text, stripped.

    Args:
        response: the answer.
        name: the header's name, in any case.

    Returns:
        The value, or None when the answer has no such header. Transport adapters may give
        values as ints (test adapters do): they come back as text.
    """
    value = response.headers.get(name)
    return None if value is None else str(value).strip()


def content_length(response: requests.Response) -> int | None:
    """The answer's `Content-Length`.

    Args:
        response: the answer.

    Returns:
        The length, or None when the answer has none that is a number.
    """
    value = header(response, "Content-Length")
    return int(value) if value and value.isdigit() else None


def strong_etag(response: requests.Response) -> str | None:
    """The answer's ETag when it is a strong one, the only kind `If-Range` may carry.

    Args:
        response: the answer.

    Returns:
        The ETag as sent (quotes included), or None for none or a weak one (`W/`).
    """
    etag = header(response, "ETag")
    return etag if etag and not etag.startswith("W/") else None


def parse_content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """A `Content-Range` value taken apart.

    Args:
        header: the value, e.g. `bytes 0-99/1000`, `bytes */1000`; None for none.

    Returns:
        (first byte, last byte, complete length), each None where the value says `*` or
        does not parse.
    """
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        return None, None, None
    first, last, total = match.groups()
    return (
        int(first) if first is not None else None,
        int(last) if last is not None else None,
        int(total) if total != "*" else None,
    )


def _base64_sha256(value: str | None) -> str | None:
    """A base64 SHA-256 as hex; None when it is not 32 bytes of valid base64."""
    try:
        raw = base64.b64decode(value or "", validate=True)
    except (ValueError, binascii.Error):
        return None
    return raw.hex() if len(raw) == 32 else None


def announced_sha256(
    response: requests.Response,
    origin_digest: Callable[[requests.Response], str | None] = lambda response: None,
) -> str | None:
    """The SHA-256 of the whole file as the server announces it on a whole-file answer.

    `Repr-Digest` (RFC 9530) and the older `Digest` (RFC 3230) describe the representation,
    which is what is saved when no content coding applies; `Content-Digest` describes the bytes
    as sent, which is what is saved, on a whole-file answer; S3's `x-amz-checksum-sha256` is the
    object's when it is not a multipart checksum. A header that does not parse is ignored.

    Args:
        response: the answer, after its redirects.
        origin_digest: what the origin vouches for beyond these headers (the caller's
            knowledge of it, e.g. a hub's hash on the redirect it answered); asked last.

    Returns:
        The SHA-256 as lower-case hex, or None when nothing announces one, or the answer is not
        a 200.
    """
    if response.status_code != 200:
        return None
    encoded = (header(response, "Content-Encoding") or "identity").lower() != "identity"
    names = ("Content-Digest",) if encoded else ("Content-Digest", "Repr-Digest", "Digest")
    for name in names:
        for item in (header(response, name) or "").split(","):
            match = _DIGEST_ITEM.fullmatch(item)
            if match and (found := _base64_sha256(match.group(1))):
                return found
    if not encoded and (found := _base64_sha256(header(response, "x-amz-checksum-sha256"))):
        return found
    return origin_digest(response)


def raise_for_status(
    response: requests.Response,
    explain: Callable[[requests.Response], str | None] = lambda response: None,
) -> None:
    """Raise for an error answer, as InvokeAI's queue does, with the status's standard phrase.

    The server's own wording ("File not found") would hide which status it was, and is not
    the engine's to repeat: the reason is the standard phrase, and after a `; ` what `explain`
    says the refusal means.

    Args:
        response: the answer.
        explain: what the origin's refusal means to the user, or None (the caller's
            knowledge of the origin, e.g. a hub's error code).

    Raises:
        requests.HTTPError: for a status of 400 or more, with `response` attached.
    """
    if response.status_code < 400:
        return
    try:
        reason = HTTPStatus(response.status_code).phrase
    except ValueError:
        reason = response.reason or f"HTTP {response.status_code}"
    meaning = explain(response)
    raise requests.HTTPError(f"{reason}; {meaning}" if meaning else reason, response=response)


def read_chunks(response: requests.Response, size: int) -> Callable[[], bytes]:
    """A function giving the next bytes of the body that arrived.

    Raw bytes, never decoded, whatever `Content-Encoding` says: the file is what the server
    sent. Whatever has arrived is returned (up to `size`) instead of waiting for a whole chunk,
    so a slow origin still shows progress.

    Args:
        response: a streamed answer.
        size: the most bytes one call returns.

    Returns:
        The reader: each call gives the next bytes, b"" at the end of the body. It raises
        `OverlongBodyError` for a body longer than its `Content-Length`, and the requests
        errors the retry policy knows for a broken connection.
    """
    raw = response.raw
    if not isinstance(raw, urllib3.BaseHTTPResponse):  # a custom transport adapter
        chunks = response.iter_content(size)
        return lambda: next(chunks, b"")
    expected = content_length(response) if header(response, "Transfer-Encoding") is None else None
    sock = socket_of(response)  # now: the connection goes back to its pool at the body's end
    received = 0

    def read() -> bytes:
        nonlocal received
        fp = _buffered(response)
        if expected is not None and 0 < expected - received <= _LOOK_AHEAD and fp is not None:
            # Near the end only: a peek fills the small buffer, and reads then come from it.
            ahead = len(_translated(lambda: fp.peek(1)))  # blocks like a read would
            if ahead > expected - received:
                raise _too_long(response, expected)
        chunk = _translated(lambda: raw.read1(size, decode_content=False))
        received += len(chunk)
        if not chunk and expected is not None and _socket_has_more(sock):
            raise _too_long(response, expected)
        return chunk

    return read


def _buffered(response: requests.Response) -> io.BufferedReader | None:
    """The buffered reader under http.client, to look ahead for bytes past the body's end."""
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    return fp if isinstance(fp, io.BufferedReader) else None


def _too_long(response: requests.Response, expected: int) -> OverlongBodyError:
    response.close()  # the connection is out of step with the protocol: never reuse it
    return OverlongBodyError(
        f"{response.url} sent more than the {expected} bytes its Content-Length announced; "
        "what it sent was discarded"
    )


def _socket_has_more(sock: socket.socket | None) -> bool:
    """Bytes waiting on the connection after a complete body: the server sent too many."""
    if not isinstance(sock, socket.socket) or hasattr(sock, "pending"):  # TLS cannot peek
        return False
    try:
        # A socket with a timeout waits inside recv whatever the flags: ask select first.
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and bool(sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):  # the connection is gone
        return False


def _translated(read: Callable[[], bytes]) -> bytes:
    """urllib3's errors as the requests errors the retry policy knows (as iter_content does)."""
    try:
        return read() or b""
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except (OSError, ValueError) as exc:  # a socket shut down by the watchdog
        raise requests.exceptions.ConnectionError(exc) from exc
