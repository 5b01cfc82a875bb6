"""The HTTP transfer engine's public face: `fetch`, one URL into one file, resumably. Knows nothing
of Celery, Redis or any hub.

Bytes go to `<final name>.downloading`, locked while written, beside a state file that says which
source and version they belong to (see `filestate`). A resume is a Range request with `If-Range`,
and every 206 is checked against the recorded version before a byte is appended; anything else
starts the file over (see `versions`). Bodies are stored as the server sent them (no content
decoding) and must be exactly as long as announced. The size and hash are checked on the descriptor
that was written, the file is stamped with its origin, synced, and renamed only if the partial path
still names that same file (see `disk`): a file under its final name is always the complete file its
own job asked for. Every one of those files is reached through a descriptor of its directory, never
through a link (see `destdir`), and an existing file under the final name counts only by a stamp
whose seal still holds, or by its hash (see `filestate`).

Bytes may also come from mirrors (see `mirrors`, `sources`): every request goes to the first URL in
the job's line-up that answers, a failing one hands over to the next, and segments are spread over
all of them. The source stays the file's identity; a mirror's answer is used only when it is this
file: the same total size, and the same strong ETag or a SHA-256 that the finished file will be
checked against. Anything else drops that mirror for the job.

One call of `fetch` is one or two attempts (see `attempt`): one that may resume, and one from
nothing when the answer cannot continue the partial file. The errors it raises are in `errors`, and
importable from here too.
"""

from __future__ import annotations

import requests

from downloader.engine.attempt import attempt
from downloader.engine.context import FetchContext
from downloader.engine.errors import (
    ChecksumMismatchError,
    DestinationBusyError,
    DestinationChangedError,
    IncompleteDownloadError,
    InsufficientSpaceError,
    OverlongBodyError,
    SizeMismatchError,
    StalledTransferError,
    TransferError,
    UnsafeDestinationError,
)
from downloader.engine.filestate import partial_path
from downloader.engine.reading import parse_content_range
from downloader.engine.request import TransferHooks, TransferRequest, TransferResult
from downloader.engine.versions import StartOver

__all__ = [
    "ChecksumMismatchError",
    "DestinationBusyError",
    "DestinationChangedError",
    "IncompleteDownloadError",
    "InsufficientSpaceError",
    "OverlongBodyError",
    "SizeMismatchError",
    "StalledTransferError",
    "TransferError",
    "TransferHooks",
    "TransferRequest",
    "TransferResult",
    "UnsafeDestinationError",
    "fetch",
    "parse_content_range",
    "partial_path",
]


def fetch(
    request: TransferRequest,
    session: requests.Session | None = None,
    hooks: TransferHooks | None = None,
) -> TransferResult:
    """Download `request.url` into its file, resuming what an earlier attempt left.

    Args:
        request: what to fetch, where to, and what the file must be.
        session: the session to send with (its adapters, its pool); None: one of its own,
            closed at the end.
        hooks: what the caller hears (start, progress, the watchdog's check); raising from
            one stops the transfer with that exception.

    Returns:
        What was done: the final path, the bytes, what the server said; `already_complete`
        when the file under the final name was current and nothing was fetched.

    Raises:
        requests.RequestException: the network or the server failed (`HTTPError` for an
            error status, with what `request.explain_refusal` says of it).
        TransferError: the download cannot complete as asked (see `errors`); the message
            says what to do.
        StalledTransferError: the origin sent too little for too long.
        HostNotFoundError: the source's host does not exist.
        DownloadJobCancelledException: or whatever else a hook raised.
    """
    own_session = session is None
    session = session or requests.Session()
    try:
        return _run(FetchContext.of(request, session, hooks or TransferHooks()))
    finally:
        if own_session:
            session.close()


def _run(ctx: FetchContext) -> TransferResult:
    """An attempt that may resume, and when its answer cannot continue the partial file, one
    from nothing; the watchdog runs around both."""
    ctx.watchdog.start()
    try:
        try:
            return attempt(ctx, fresh=False)
        except StartOver:
            pass
        try:
            return attempt(ctx, fresh=True)
        except StartOver:
            raise IncompleteDownloadError(
                f"{ctx.request.url} answered a request for the whole file with part of it; "
                "the partial file was emptied for the next attempt"
            ) from None
    except Exception as exc:
        ctx.watchdog.raise_reason(exc)  # a blocked read broken on purpose: say why
        raise
    finally:
        ctx.watchdog.finish()
