"""Every error the engine raises, in one place: callers act on them by type (the worker's retry
policy, the job's `error_type`, which is the class's name and its message) and should not have
to import the transfer itself to name one.

`TransferError` is the base of the engine's own refusals: a download that cannot complete as
asked, whose message says what to do. The rest come from the network or the job: a stall, a
host that does not exist, a cancellation. HTTP errors stay `requests.HTTPError`, as in InvokeAI.
"""

from __future__ import annotations


class DownloadJobCancelledException(Exception):
    """Raised inside a transfer when its job was cancelled; its name is the job's error_type
    (InvokeAI's name for it, kept because callers match on it)."""


class TransferError(Exception):
    """A download that cannot complete as asked; the message says what to do."""


class UnsafeDestinationError(TransferError):
    """A name the engine would use in a destination is a symbolic link, or not a plain file of
    its own: someone else put it there, and nothing was written through it."""


class IncompleteDownloadError(TransferError):
    """The server sent fewer or more bytes than it announced."""


class OverlongBodyError(IncompleteDownloadError):
    """The server sent more than it announced: nothing of that answer can be trusted."""


class ChecksumMismatchError(TransferError):
    """The bytes do not have the SHA-256 the caller expected."""


class SizeMismatchError(TransferError):
    """The server offers a file of another size than the caller expected."""


class DestinationBusyError(TransferError):
    """Another download is writing the same file right now."""


class DirectoryRemovedError(TransferError):
    """The directory a file was to be made in was removed meanwhile (another job tidied its
    empty directories away between this one reaching it and writing in it): the next try
    makes it again."""


class DestinationChangedError(TransferError):
    """The partial file was replaced while it was written; what was verified is not there."""


class InsufficientSpaceError(TransferError):
    """The destination's filesystem cannot hold the rest of the file."""


class ForbiddenAddressError(TransferError):
    """The URL (or a redirect) leads to an address an untrusted job may not reach."""


class StalledTransferError(Exception):
    """The origin sent too little for too long; a retry may find it (or a route to it) better."""


class HostNotFoundError(Exception):
    """The host's name does not resolve, by the resolver's final answer: retrying is useless.

    The message is the host, so `error_type` reads `HostNotFoundError(no-such-host.invalid)`;
    the resolver's own words stay in the traceback, as the cause."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host
