"""Scrub known tokens out of text before a worker stores, publishes or logs it.

Tokens are checked where they enter, but an exception can still carry one: an origin that
echoes the `Authorization` header into a redirect's URL makes the next connection error quote
it, and urllib3 logs every request line at DEBUG. Error texts end up in the job record, the
`download_error` event and every REST answer, so the second line of defence sits where they
are made: every error text and every log record of a worker passes through `scrub`, which
replaces each token the process knows (the host tokens, and the tokens of the jobs running
now) wherever it appears, as is or percent-encoded.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "[redacted]"


class _Book:
    """The tokens this process knows; a token counts once per job that holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._forms: tuple[str, ...] = ()

    def _change(self, tokens: Iterable[str | None], step: int) -> None:
        with self._lock:
            for token in tokens:
                if token:
                    self._held[token] += step
            self._held = +self._held  # drops the tokens no job holds any more
            forms = {f for t in self._held for f in (t, quote(t, safe=""), quote_plus(t))}
            # Longest first, so a token that contains another is masked whole.
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    def add(self, tokens: Iterable[str | None]) -> None:
        self._change(tokens, 1)

    def remove(self, tokens: Iterable[str | None]) -> None:
        self._change(tokens, -1)

    def scrub(self, text: str) -> str:
        for form in self._forms:  # a tuple swapped whole, so no lock for readers
            text = text.replace(form, MASK)
        return text


_book = _Book()


def scrub(text: str) -> str:
    """Mask every token the process knows.

    Args:
        text: a message, a traceback, a log line.

    Returns:
        `text` with each known token, in every form a URL or header may carry it, replaced
        by `MASK`.
    """
    return _book.scrub(text)


def shown_url(url: str) -> str:
    """A URL as a line of output may show it: no user or password, no query (where signed
    links keep their signatures and tokens), no fragment, and every known token masked.

    Args:
        url: a job's source or any URL it was sent to.

    Returns:
        `scheme://host[:port]/path`, scrubbed.
    """
    scheme, netloc, path, _, _ = urlsplit(url)
    return scrub(urlunsplit((scheme, netloc.rpartition("@")[2], path, "", "")))


def remember(tokens: Iterable[str | None]) -> None:
    """Know tokens for the life of the process (the configured host tokens).

    Args:
        tokens: the tokens; None and empty ones are skipped.
    """
    _book.add(tokens)


@contextmanager
def holding(token: str | None) -> Iterator[None]:
    """Know a job's token while its attempt runs, error path included.

    Args:
        token: the job's token; None for none.
    """
    _book.add([token])
    try:
        yield
    finally:
        _book.remove([token])


class ScrubFilter(logging.Filter):
    """Rewrites a record's message and traceback text with the tokens masked.

    Attached to handlers, not loggers: a logger's filters never see its children's records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def scrub_log_handlers(host_tokens: Iterable[str]) -> None:
    """Mask tokens in everything this process logs from now on.

    Called when a worker starts, once its logging is set up: every handler then gets a
    `ScrubFilter`.

    Args:
        host_tokens: the configured host tokens, known from now on (see `remember`).
    """
    remember(host_tokens)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, ScrubFilter) for f in handler.filters):
                handler.addFilter(ScrubFilter())
