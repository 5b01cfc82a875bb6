"""Why a job failed, as data: a `Failure` beside the `error_type` text InvokeAI's callers read.

`error_type` stays what InvokeAI's queue makes it (`HTTPError(Not Found)`, the exception's class and
message) and `error` the traceback: code written for InvokeAI's queue matches on them. Beside
them the record keeps a `Failure` (its kind, the HTTP status and the URL that answered it, one
line of message), filled by the worker from the exception itself, so that a reader never has
to parse a text that another module built. `describe` says a failure shortly, the way the
command line shows it, and still reads records written before failures were kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any

__all__ = ["CANCELLED_ERROR_TYPE", "Failure", "FailureKind", "cancellation", "describe"]

CANCELLED_ERROR_TYPE = "DownloadJobCancelledException"
"""A cancelled job's `error_type` (InvokeAI's name: callers match on it)."""


class FailureKind(StrEnum):
    HTTP = "http"
    """The server answered with an error status (`status`; `url`, the URL that answered)."""
    HOST_NOT_FOUND = "host_not_found"
    """The host's name does not resolve (the message is the host)."""
    NETWORK = "network"
    """The connection failed, dropped or timed out."""
    STALLED = "stalled"
    """Bytes came slower than the lowest speed for a whole window."""
    INCOMPLETE = "incomplete"
    """The server sent fewer or more bytes than it announced."""
    CHECKSUM = "checksum"
    """The bytes do not have the SHA-256 the job expected."""
    SIZE = "size"
    """The server offers another size than the job expected."""
    SPACE = "space"
    """The destination's filesystem cannot hold the file."""
    DESTINATION = "destination"
    """Another download writes the same file, or the partial file was replaced."""
    UNSAFE_DESTINATION = "unsafe_destination"
    """A link, or a file not the engine's own, where the engine would write."""
    FORBIDDEN_ADDRESS = "forbidden_address"
    """An untrusted job's URL (or a redirect) leads to a private address."""
    CANCELLED = "cancelled"
    VANISHED = "vanished"
    """The job's record is gone from Redis (lost with its data, or removed)."""
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong, as the worker saw it."""

    kind: FailureKind
    message: str
    """One line: the exception's own message, tokens scrubbed."""
    status: int | None = None
    url: str | None = None
    """The URL that failed, without its query (where signatures live)."""

    def to_json(self) -> dict[str, Any]:
        """The failure as the record's `failure` field holds it (a JSON object)."""
        return {
            "kind": self.kind.value,
            "status": self.status,
            "url": self.url,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Failure:
        """The failure of a `to_json` object; a kind this version does not know is OTHER."""
        try:
            kind = FailureKind(value.get("kind"))
        except ValueError:  # a kind of a newer version
            kind = FailureKind.OTHER
        return cls(kind, str(value.get("message", "")), value.get("status"), value.get("url"))


def cancellation(job_id: int) -> Failure:
    """The failure of a job a caller cancelled."""
    return Failure(FailureKind.CANCELLED, f"job {job_id} was cancelled")


_REASONS = (
    ("connection refused", "connection refused"),
    ("name or service not known", "host not found"),
    ("nodename nor servname", "host not found"),
    ("temporary failure in name resolution", "name lookup failed (temporary)"),
    ("failed to resolve", "host not found"),
    ("timed out", "timed out"),
    ("connection reset", "connection reset"),
    ("remotedisconnected", "connection closed by the server"),
    ("connection aborted", "connection closed by the server"),
)
_PHRASES = {status.phrase.lower(): status for status in HTTPStatus}


def describe(failure: Failure | None, error_type: str | None) -> str:
    """A failure said shortly: `404 Not Found`, `host not found: example.invalid`,
    `connection refused`, `cancelled`.

    Args:
        failure: the job's structured failure; None for a record written before failures
            were kept (or a retry's reason), which is then read from `error_type`.
        error_type: the job's `error_type` (`HTTPError(Not Found)`, `ConnectionError(...)`).

    Returns:
        One line for a person; a long text is cut at 300 characters.
    """
    if failure is not None:
        if failure.kind is FailureKind.HTTP:
            reason, _, meaning = failure.message.partition("; ")
            return _http(failure.status, reason, meaning)
        if failure.kind is FailureKind.HOST_NOT_FOUND:
            return f"host not found: {failure.message}"
        if failure.kind is FailureKind.VANISHED:
            return failure.message  # says what happened and what to check: as it is
        if failure.kind is FailureKind.CANCELLED:
            return "cancelled"
    return _from_error_type(error_type)


def _http(status: int | None, reason: str, meaning: str) -> str:
    known = _PHRASES.get(reason.lower())
    if status is not None and known is None:
        try:
            known = HTTPStatus(status)
        except ValueError:
            known = None
    said = f"{known.value} {known.phrase}" if known else f"HTTP {reason}"
    return f"{said}: {meaning}" if meaning else said


def _from_error_type(error_type: str | None) -> str:
    """`describe` from the `error_type` text alone (`Class(message)`)."""
    text = error_type or "unknown error"
    match = re.fullmatch(r"HTTPError\((.*)\)", text, re.DOTALL)
    if match:
        reason, _, meaning = match.group(1).partition("; ")
        return _http(None, reason, meaning)
    match = re.fullmatch(r"HostNotFoundError\((.*)\)", text, re.DOTALL)
    if match:
        return f"host not found: {match.group(1)}"
    match = re.fullmatch(r"JobVanishedError\((.*)\)", text, re.DOTALL)
    if match:
        return match.group(1)
    lowered = text.lower()
    for needle, said in _REASONS:
        if needle in lowered:
            return said
    if text == CANCELLED_ERROR_TYPE:
        return "cancelled"
    return text if len(text) <= 300 else text[:297] + "..."  # room for both hashes
