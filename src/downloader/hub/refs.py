"""What an `hf://` address names: a repo on the hub, of a kind, at a revision, and maybe one
file in it. Parsing only: nothing here asks the hub."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

SCHEME = "hf://"
REPO_TYPES = ("model", "dataset", "space")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class HubRef:
    """A repo (and maybe one file in it) on the hub, as an `hf://` address names it."""

    repo_id: str
    repo_type: str = "model"
    revision: str = "main"
    path: str | None = None

    def __post_init__(self) -> None:
        if self.repo_type not in REPO_TYPES:
            raise ValueError(
                f"repo_type must be one of {', '.join(REPO_TYPES)}, got {self.repo_type!r}"
            )
        if not _REPO_ID.fullmatch(self.repo_id) or ".." in self.repo_id:
            raise ValueError(f"a hub repo is named owner/name, got {self.repo_id!r}")
        if not self.revision:
            raise ValueError("a revision must not be empty")

    @property
    def name(self) -> str:
        """The repo's own name: the directory its files land in under `dest`."""
        return self.repo_id.split("/")[1]


def is_hub_source(source: str) -> bool:
    """Whether `source` is an `hf://` address (the scheme in any case)."""
    return source[: len(SCHEME)].lower() == SCHEME


def parse_hf_url(url: str) -> HubRef:
    """An `hf://` address taken apart.

    A revision with slashes (`refs/pr/1`) is written percent-encoded, as huggingface_hub's
    file system does: `hf://owner/repo@refs%2Fpr%2F1/file`.

    Args:
        url: `hf://[datasets/|spaces/]<owner>/<repo>[@<revision>][/<path>]`.

    Returns:
        The repo, its kind (`model` unless `datasets/` or `spaces/`), the revision (`main`
        unless given) and the path in it, if any.

    Raises:
        ValueError: not an `hf://` address, or no `owner/repo` in it, or a repo name that is
            not one.
    """
    if not is_hub_source(url):
        raise ValueError(f"not an {SCHEME} address: {url!r}")
    parts = url[len(SCHEME) :].split("/")
    repo_type = "model"
    if parts[0] in ("datasets", "spaces"):
        repo_type = parts.pop(0)[:-1]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"an {SCHEME} address names owner/repo, got {url!r}")
    name, _, revision = parts[1].partition("@")
    path = "/".join(parts[2:]).strip("/") or None
    return HubRef(f"{parts[0]}/{name}", repo_type, unquote(revision) or "main", path)
