"""Retries inside an attempt: a transient failure (a dropped connection, a 5xx, a stall) is
fetched again by the same worker, which keeps its slot, its lease and the partial file, so
the next try resumes with `Range`/`If-Range`. Not Celery retries: those would requeue."""

from __future__ import annotations

from collections.abc import Callable

import requests

from downloader.engine.retry import backoff, is_retriable
from downloader.engine.transfer import TransferRequest, TransferResult, fetch
from downloader.worker.attempt import log
from downloader.worker.hooks import JobHooks
from downloader.worker.outcome import error_type


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
            # Five arguments, in this order: `RetryLines` reads them.
            log.warning(
                "job %s: %s; retry %d of %d in %.1f s",
                attempt.job_id,
                reason,
                retries,
                settings.max_retries,
                delay,
            )
            attempt.app.store.record_retry(attempt.job_id, reason)
            hooks.pause(delay)
