"""Retries inside an attempt: a transient failure (a dropped connection, a 5xx, a stall) is
fetched again by the same worker, which keeps its slot, its lease and the partial file, so
the next try resumes with `Range`/`If-Range`. Not Celery retries: those would requeue. Each
retry is told to the process's retry listeners (`notices.RetryNotice`; a `get` prints it).

A 429 or 503 is the host asking to be left alone: the host is paused for the whole fleet (see
`worker.pacing`) until its `Retry-After`, or a capped exponential backoff when it names none,
and the job tries again without spending a retry, its next connection waiting out the pause
like every other one of the fleet (the try still counts in its `attempts`). `Retry-After: 0`
asks for no pause: that is an ordinary retry. Only `FREE_PAUSES` pauses are free per attempt;
past them a pause counts as a retry, so a host that never stops refusing still fails its
jobs."""

from __future__ import annotations

from collections.abc import Callable

import requests

from downloader.engine.redact import shown_url
from downloader.engine.retry import backoff, is_retriable, retry_after
from downloader.engine.transfer import TransferRequest, TransferResult, fetch
from downloader.jobs import events as ev
from downloader.worker.hooks import JobHooks
from downloader.worker.notices import RetryNotice
from downloader.worker.outcome import error_type, failure_of

PAUSING_STATUS = frozenset({429, 503})
"""What a host answers when the fleet should leave it alone for a while."""
FREE_PAUSES = 20
"""Pauses of its host an attempt sits out before they count as retries."""


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
    retries = pauses = 0
    while True:
        try:
            return fetch(request(), session, transfer_hooks)
        except Exception as exc:
            if pauses < FREE_PAUSES and pause_host(hooks, exc):
                pauses += 1
                attempt.count_retry(error_type(exc))
                continue  # the next connection waits for the pause, as the fleet's do
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
            attempt.count_retry(reason)
            hooks.pause(delay)


def pause_host(hooks: JobHooks, exc: Exception) -> bool:
    """Pause the host that answered 429 or 503 for the fleet, and say so in a `host_paused`
    event when the pause is new; answers whether `exc` was such an answer (not one that
    asked for no pause, `Retry-After: 0`)."""
    response = getattr(exc, "response", None)
    if not isinstance(exc, requests.HTTPError) or response is None:
        return False
    wait = retry_after(exc)
    if response.status_code not in PAUSING_STATUS or wait == 0:
        return False
    asked = (response.history[0] if response.history else response).url
    attempt = hooks.attempt
    host, started, seconds = attempt.app.pacing.pause(asked, wait)
    if started:
        attempt.publish(ev.HOST_PAUSED, source=attempt.source, host=host, seconds=seconds)
    return True
