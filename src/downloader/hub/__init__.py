"""Model hubs as sources: `hf://` addresses and Hugging Face repos resolved, once, to a
pinned commit and plain jobs (with the hub's hashes); hub and Civitai tokens.

Resolving runs in the client. It may import `jobs`, `engine` and `config`, never the worker,
the store or Celery. Workers use one module of it, `headers` (what the hub says in its
answers' headers), which they hand the engine with every job; the engine itself imports
nothing of it.
"""

from downloader.hub.resolve import (
    EntryNotFoundError,
    GatedRepoError,
    HubError,
    HubRef,
    RepoNotFoundError,
    ResolvedRepo,
    RevisionNotFoundError,
    hf_token,
    is_hub_source,
    parse_hf_url,
    resolve_file,
    resolve_repo,
    token_for,
)

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
