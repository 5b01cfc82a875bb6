"""Model hubs as sources: `hf://` addresses and Hugging Face repos resolved, once, to a
pinned commit and plain jobs (with the hub's hashes); hub and Civitai tokens.

Runs in the client. It may import `jobs`, `engine` and `config`; the store, the worker and
Celery know nothing of hubs.
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
