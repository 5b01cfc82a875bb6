"""What the Hugging Face hub says in its answers' headers, beyond HTTP's standard.

The engine knows no hub: a worker hands it these two readers with every job
(`TransferRequest.explain_refusal` and `announced_digest`). They are harmless for any other
origin, since they look only at the hub's own headers:

- `X-Error-Code` on an error answer names the refusal (`GatedRepo`, `RepoNotFound`, ...);
  the hub's own message (`X-Error-Message`, the body) is never repeated.
- `X-Linked-Etag` on the hub's redirect to its CDN is an LFS file's SHA-256; the CDN's answer
  carries no hash of its own, so the finished file is checked against this one.
"""

from __future__ import annotations

import re

import requests

ERROR_CODE = "X-Error-Code"
_LINKED_ETAG = "X-Linked-Etag"
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")

_REFUSALS = {
    "GatedRepo": "the hub says the repo is gated: accept its terms on the repo's page with "
    "the account of the token in use, and set HF_TOKEN (or run `hf auth login`)",
    "RepoNotFound": "the hub says the repo does not exist or is private: check its name, or "
    "set HF_TOKEN to a token that can read it",
}
"""What a refusal means to the user when it comes only once the job runs (access withdrawn
after the job was queued): the resolution in the client says more (see `resolve`)."""


def error_code(response: requests.Response) -> str:
    """The hub's name for an error answer.

    Args:
        response: an answer from any origin.

    Returns:
        Its `X-Error-Code` (`GatedRepo`, `RepoNotFound`, `RevisionNotFound`,
        `EntryNotFound`), or "" when it gives none.
    """
    return str(response.headers.get(ERROR_CODE, "")).strip()


def explain_refusal(response: requests.Response) -> str | None:
    """What a refusal of a file means to the user, and what to do.

    Args:
        response: an error answer (4xx, 5xx) from any origin.

    Returns:
        The meaning of a gated or missing repo's refusal; None for any other answer,
        whatever its origin.
    """
    return _REFUSALS.get(error_code(response))


def linked_sha256(response: requests.Response) -> str | None:
    """The SHA-256 the hub announced for an LFS file on the redirect that led to its bytes.

    Args:
        response: the final answer, after redirects (`response.history` holds the hub's).

    Returns:
        The SHA-256 as lower-case hex, or None when no earlier answer carries an
        `X-Linked-Etag` that is one (a git file's ETag is a SHA-1: it does not count).
    """
    for earlier in response.history:
        linked = str(earlier.headers.get(_LINKED_ETAG, "")).strip().strip('"').lower()
        if _HEX_SHA256.fullmatch(linked):
            return linked
    return None
