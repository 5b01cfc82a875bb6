"""Retries inside an attempt: a transient failure (a dropped connection, a 5xx, a stall) is
fetched again by the same worker, which keeps its slot, its lease and the partial file, so
the next try resumes with `Range`/`If-Range`. Not Celery retries: those would requeue. Each
retry is told to the process's retry listeners (`notices.RetryNotice`; a `get` prints it)."""

from __future__ import annotations

from collections.abc import Callable

import requests

from downloader.engine.redact import shown_url
from downloader.engine.retry import backoff, is_retriable
from downloader.engine.transfer import TransferRequest, TransferResult, fetch
from downloader.worker.hooks import JobHooks
from downloader.worker.notices import RetryNotice
from downloader.worker.outcome import error_type, failure_of


def fetch_with_retries(
    hooks: JobHooks, request: Callable[[], TransferRequest], session: requests.Session
) -> TransferResult:
    """Fetch, retrying transient failures up to `DOWNLOADER_MAX_RETRIES` times after a backoff
    (the server's `Retry-After` when it sent one); each retry resumes from the partial file.

    Args:
        hooks: the attempt's hooks; its `pause` waits before a retry, still heeding a stop.
        request: makes each try's request (the path found by the previous try included).
        session: the session every try downloads with.

    Raises:
        Exception: the last failure, when it is not transient or the retries are spent; a
            stop (cancel, shutdown, lost lease) at once.
    """
    attempt = hooks.attempt
    settings = attempt.app.settings
    transfer_hooks = hooks.for_transfer()
    retries = 0
    while True:
        try:
            return fetch(request(), session, transfer_hooks)
        except Exception as exc:
            if not is_retriable(exc) or retries >= settings.max_retries:
                raise
            retries += 1
            delay = backoff(retries, settings.retry_backoff, exc)
            reason = error_type(exc)
            attempt.app.retry_listeners.tell(
                RetryNotice(
                    attempt.job_id,
                    shown_url(attempt.source),
                    retries,
                    settings.max_retries,
                    delay,
                    reason,
                    failure_of(exc),
                )
            )
            attempt.app.store.record_retry(attempt.job_id, reason)
            hooks.pause(delay)
