"""Asking for bytes: every request of one transfer goes to the first URL in its line-up (the
source, then its mirrors; see `mirrors`) that answers with this file.

A URL that fails goes behind the others and the next one is asked at once; a mirror whose
answer is not this file (see `versions`), or whose host does not exist, is dropped for the job.
Requests ask for the bytes as stored (`Accept-Encoding: identity`), carry the job's token only
to its source's origin, and are watched by the transfer's watchdog, which may shut their
connections to stop them. Each request first takes a connection slot of its URL's host from
the request's `pacing` (waiting, with the watchdog's stall clock stopped, while the host is
full or paused); the slot rides on the answer and is given back when the answer is closed,
and every read of the body spends bandwidth through it (see `reader`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import requests

from downloader.engine.filestate import PartialState
from downloader.engine.mirrors import Mirrors
from downloader.engine.origins import BearerAuth
from downloader.engine.pacing import Slot
from downloader.engine.reading import raise_for_status, read_chunks
from downloader.engine.request import TransferRequest
from downloader.engine.resolver import host_not_found
from downloader.engine.versions import Versions
from downloader.engine.watchdog import Watchdog


class Sources:
    """The URLs one transfer asks, and which URL each answer came from."""

    def __init__(
        self,
        request: TransferRequest,
        session: requests.Session,
        watchdog: Watchdog,
        versions: Versions,
    ) -> None:
        self.request, self.session = request, session
        self.watchdog, self.versions = watchdog, versions
        self.mirrors = request.mirrors or Mirrors(request.url)
        self.asked: weakref.WeakKeyDictionary[requests.Response, str] = weakref.WeakKeyDictionary()
        """The URL each answer was asked of (before redirects): the source or a mirror."""
        self.slots: weakref.WeakKeyDictionary[requests.Response, Slot] = weakref.WeakKeyDictionary()
        """The connection slot each open answer holds."""

    def get(
        self,
        extra: dict[str, str],
        state: PartialState | None = None,
        first: int | None = None,
        turn: int = 0,
    ) -> requests.Response:
        """One streamed GET of raw bytes from the first URL in line that answers with this file.

        Args:
            extra: request headers (a Range, validators).
            state: the partial file's state, which a mirror's answer must match; None for a
                file not begun.
            first: the first byte asked for, for a range.
            turn: where equals start in the line, so that segments spread over the URLs.

        Returns:
            The answer, streamed; a 304 or 416 as it came.

        Raises:
            requests.RequestException: when no URL answers: the last failure, the source's
                HostNotFoundError only when no other URL failed in a way a retry may mend.
                HTTP errors are `requests.HTTPError` (see `reading.raise_for_status`).
            BaseException: the watchdog's reason, once it stopped the transfer.
        """
        failure: Exception | None = None
        for url in self.mirrors.line(turn):
            if self.watchdog.reason is not None:
                raise self.watchdog.reason
            headers = self.headers_for(url, extra, state)
            if headers is None:
                continue
            try:
                response = self.send(url, headers)
            except requests.RequestException as exc:
                if isinstance(exc, requests.HTTPError) and exc.response is not None:
                    exc.response.close()
                missing = host_not_found(exc, url)
                if missing is not None and self.mirrors.is_mirror(url):
                    self.mirrors.drop(url, f"its host {missing.host} does not resolve")
                    continue
                self.mirrors.failed(url)
                if missing is None or failure is None:  # another URL's blip is worth a retry
                    failure = missing or exc
                continue
            mismatch = None
            if self.mirrors.is_mirror(url):
                mismatch = self.versions.mirror_mismatch(response, state, first)
            if mismatch is not None:
                response.close()
                self.mirrors.drop(url, mismatch)
                continue
            return response
        assert failure is not None, "the source is always in line and never dropped"
        raise failure

    def get_range(
        self, first: int, last: int | None, state: PartialState, turn: int = 0
    ) -> requests.Response:
        """`get` of bytes `first` to `last` (None: to the end) of the version `state` records,
        with `If-Range` when it has a validator."""
        extra = {"Range": f"bytes={first}-{'' if last is None else last}"}
        if state.source.if_range:
            extra["If-Range"] = state.source.if_range
        return self.get(extra, state, first, turn)

    def send(self, url: str, headers: dict[str, str]) -> requests.Response:
        headers = {"Accept-Encoding": "identity", **headers}
        auth = None
        if self.request.access_token and self.mirrors.may_carry_token(url):
            auth = BearerAuth(self.request.access_token, url)  # and not past a redirect away
        with self.watchdog.waiting():
            slot = self.request.pacing.connect(url, self.stop_if_told)
        try:
            response = self.session.get(
                url, headers=headers, auth=auth, stream=True, timeout=self.request.timeout
            )
        except ValueError as exc:
            slot.release()
            # A host no request can be sent to, in the URL or a redirect's Location: a
            # malformed IP literal (urllib.parse), a DNS label too long (urllib3, or the idna
            # codec in an untrusted job's connection). A request error like the others, so the
            # next URL is asked, and a final one: InvalidURL is not retried.
            raise requests.exceptions.InvalidURL(str(exc)) from exc
        except BaseException:
            slot.release()
            raise
        self.hold(response, slot)
        try:
            return self.checked(url, response)
        except BaseException:
            response.close()
            raise

    def checked(self, url: str, response: requests.Response) -> requests.Response:
        """A fresh answer, watched; an error status raised as an `HTTPError`."""
        self.asked[response] = url
        self.watchdog.watch(response)
        if response.status_code not in (304, 416):
            raise_for_status(response, self.request.explain_refusal)
        return response

    def stop_if_told(self) -> None:
        """Raise the watchdog's reason once it stopped the transfer (a wait gives up)."""
        if self.watchdog.reason is not None:
            raise self.watchdog.reason

    def hold(self, response: requests.Response, slot: Slot) -> None:
        """Let `response` hold `slot` until it is closed (or collected, if never closed)."""
        self.slots[response] = slot
        close = response.close

        def closing() -> None:
            try:
                close()
            finally:
                slot.release()

        response.close = closing  # type: ignore[method-assign]
        weakref.finalize(response, slot.release)

    def reader(self, response: requests.Response, size: int) -> Callable[[], bytes]:
        """`reading.read_chunks` of the answer, each read's bytes spent from its slot's
        bandwidth (the wait for it does not count as a stall)."""
        read = read_chunks(response, size)
        slot = self.slots.get(response)
        if slot is None:
            return read
        watchdog = self.watchdog

        def paced() -> bytes:
            chunk = read()
            if chunk:
                with watchdog.waiting():
                    slot.spend(len(chunk))
            return chunk

        return paced

    def headers_for(
        self, url: str, extra: dict[str, str], state: PartialState | None
    ) -> dict[str, str] | None:
        """The request headers for `url`; None when a mirror could not be checked against
        the file. Mirrors seldom share the source's ETag: when a SHA-256 will check the whole
        file, a mirror is asked without `If-Range` and its ranges are judged by their size."""
        if not self.mirrors.is_mirror(url) or state is None or "If-Range" not in extra:
            return extra
        if self.versions.wanted_sha256(state):
            return {name: value for name, value in extra.items() if name != "If-Range"}
        return extra if state.source.etag else None

    def from_mirror(self, response: requests.Response) -> bool:
        """Whether the answer was asked of a mirror rather than the source."""
        return self.mirrors.is_mirror(self.asked.get(response, self.request.url))

    def switch(self, answer: requests.Response, error: BaseException) -> bool:
        """A segment's connection failed: blame its URL and say whether the segment may go
        on from another (not when the watchdog stopped the transfer, or the plan is void)."""
        if self.watchdog.reason is not None or not isinstance(error, requests.RequestException):
            return False
        self.blame(answer)
        return True

    def blame(self, response: requests.Response) -> None:
        """The answer's URL failed mid-body: the next request asks another URL first."""
        self.mirrors.failed(self.asked.get(response, self.request.url))
