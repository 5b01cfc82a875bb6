"""The hub's refusals of a repo, a revision or a file, as errors that say what to do.

Each is also huggingface_hub's own class for the same refusal, so code written against
huggingface_hub catches ours: `except huggingface_hub.errors.RepositoryNotFoundError` catches
`RepoNotFoundError` and `GatedRepoError` (there, a gated repo is a repo not found),
`RevisionNotFoundError` and `EntryNotFoundError` are caught by their namesakes. Like
huggingface_hub's, the three HTTP ones are `OSError`s and carry the hub's answer as
`response` (its status, headers and URL) with a `request` naming only the method and URL:
what was sent, the token among it, is not kept. Every one is a `HubError`.
"""

from __future__ import annotations

import io

import requests
from huggingface_hub import errors as hf

from downloader.hub.errors import HubError


def _answer(response: requests.Response) -> requests.Response:
    """The hub's answer as an error may keep it: status, reason, headers and URL, no body,
    and a request of the same method and URL without any of the headers that were sent."""
    answer = requests.Response()
    answer.status_code, answer.reason = response.status_code, response.reason
    answer.url = response.url
    answer.headers = requests.structures.CaseInsensitiveDict(response.headers)
    answer.raw = io.BytesIO()
    method = response.request.method if response.request is not None else None
    answer.request = requests.Request(method or "GET", response.url).prepare()
    return answer


class _HubHTTPError(HubError, hf.HfHubHTTPError):
    """A refusal the hub answered with an HTTP error status."""

    def __init__(
        self, message: str, *, response: requests.Response, server_message: str | None = None
    ) -> None:
        # The signature is huggingface_hub's, which also rebuilds a pickled error with it.
        answer = _answer(response)
        hf.HfHubHTTPError.__init__(self, message, response=answer, server_message=server_message)
        self.request = answer.request  # set there before its base's __init__ clears it


class RepoNotFoundError(_HubHTTPError, hf.RepositoryNotFoundError):
    """No such repo, or a private one this token (or no token) may not read."""


class GatedRepoError(_HubHTTPError, hf.GatedRepoError):
    """The repo's files need its terms accepted, by the account whose token is used."""


class RevisionNotFoundError(_HubHTTPError, hf.RevisionNotFoundError):
    """The repo has no such branch, tag or commit."""


class EntryNotFoundError(HubError, hf.EntryNotFoundError):
    """The repo has no such file at that revision, or none that the patterns select."""
