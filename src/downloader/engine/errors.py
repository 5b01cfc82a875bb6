"""What the engine raises that its callers act on by type."""

from __future__ import annotations


class DownloadJobCancelledException(Exception):
    """Raised inside a transfer when its job was cancelled; its name is the job's error_type
    (InvokeAI's name for it, kept because callers match on it)."""
