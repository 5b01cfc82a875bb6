"""Model hubs as sources: `hf://` addresses and Hugging Face repos resolved, once, to a
pinned commit and plain jobs (with the hub's hashes); hub and Civitai tokens.

Resolving runs in the client. It may import `jobs`, `engine` and `config`, never the worker,
the store or Celery. Workers use one module of it, `headers` (what the hub says in its
answers' headers), which they hand the engine with every job; the engine itself imports
nothing of it.

`refs` (what an `hf://` address names), `tokens` (which token goes where, the HF one as
huggingface_hub finds it), `resolve` (asking the hub: the commit, the file list, access),
`errors` and `refusals` (`HubError`, and the refusals, which are huggingface_hub's error
classes too), `headers`. The names below are imported on first use, so that a worker, or a
`downloader get` of a plain URL, loads neither the resolver nor huggingface_hub.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downloader.hub.errors import HubError
    from downloader.hub.refs import HubRef, is_hub_source, parse_hf_url
    from downloader.hub.refusals import (
        EntryNotFoundError,
        GatedRepoError,
        RepoNotFoundError,
        RevisionNotFoundError,
    )
    from downloader.hub.resolve import ResolvedRepo, resolve_file, resolve_repo
    from downloader.hub.tokens import hf_token, token_for

_HOMES = {
    "EntryNotFoundError": "downloader.hub.refusals",
    "GatedRepoError": "downloader.hub.refusals",
    "HubError": "downloader.hub.errors",
    "HubRef": "downloader.hub.refs",
    "RepoNotFoundError": "downloader.hub.refusals",
    "ResolvedRepo": "downloader.hub.resolve",
    "RevisionNotFoundError": "downloader.hub.refusals",
    "hf_token": "downloader.hub.tokens",
    "is_hub_source": "downloader.hub.refs",
    "parse_hf_url": "downloader.hub.refs",
    "resolve_file": "downloader.hub.resolve",
    "resolve_repo": "downloader.hub.resolve",
    "token_for": "downloader.hub.tokens",
}

__all__ = [
    "EntryNotFoundError",
    "GatedRepoError",
    "HubError",
    "HubRef",
    "RepoNotFoundError",
    "ResolvedRepo",
    "RevisionNotFoundError",
    "hf_token",
    "is_hub_source",
    "parse_hf_url",
    "resolve_file",
    "resolve_repo",
    "token_for",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'downloader.hub' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
