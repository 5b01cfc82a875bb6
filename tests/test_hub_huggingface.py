"""What the hub takes from huggingface_hub (its token discovery, its error classes) and what it
keeps of its own (the listing's paging, which keeps the token on the hub), against the local
hub of tests/hub_origin.py."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf

from downloader import DownloadQueueService
from downloader.hub import (
    EntryNotFoundError,
    GatedRepoError,
    HubError,
    RepoNotFoundError,
    RevisionNotFoundError,
    resolve_file,
    resolve_repo,
)
from tests.hub_origin import HubOrigin
from tests.origin import Origin
from tests.test_hub import REPO, hub, repo_files  # noqa: F401 (hub: a fixture)

NOT_GRANTED = "hf_notGrantedToken"


def test_code_written_against_huggingface_hub_catches_the_hubs_refusals(
    hub: HubOrigin,  # noqa: F811 (the fixture of tests/test_hub.py)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub.add_repo(REPO, repo_files())
    hub.add_repo("acme/gated", repo_files(), gated=True)
    monkeypatch.setenv("HF_TOKEN", NOT_GRANTED)

    with pytest.raises(hf.GatedRepoError) as gated:
        resolve_repo("acme/gated")
    with pytest.raises(hf.RepositoryNotFoundError) as missing:
        resolve_repo("acme/nothing")
    with pytest.raises(hf.RevisionNotFoundError) as revision:
        resolve_file(f"hf://{REPO}@v9/README.md")
    with pytest.raises(hf.EntryNotFoundError) as entry:
        resolve_file(f"hf://{REPO}/no/such.json")
    assert isinstance(gated.value, GatedRepoError) and isinstance(gated.value, hf.HfHubHTTPError)
    assert isinstance(missing.value, RepoNotFoundError)
    assert isinstance(revision.value, RevisionNotFoundError)
    assert isinstance(entry.value, EntryNotFoundError)
    for caught in (gated, missing, revision, entry):
        assert isinstance(caught.value, HubError)  # and ours still catches them all
    assert str(gated.value).startswith("model acme/gated is gated and the token in use")

    # Like huggingface_hub's, they carry the hub's answer; what was sent (the token) is not kept.
    error = gated.value
    assert error.response.status_code == 403
    assert error.response.headers["X-Error-Code"] == "GatedRepo"
    assert error.request.method == "HEAD" and "Authorization" not in error.request.headers
    assert "Authorization" not in error.response.request.headers
    pickled = pickle.dumps(error)
    assert NOT_GRANTED.encode() not in pickled
    again = pickle.loads(pickled)
    assert type(again) is GatedRepoError and str(again) == str(error)


def test_the_token_is_found_as_huggingface_hub_finds_it_and_not_when_it_says_not_to(
    hub: HubOrigin,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub.add_repo(REPO, repo_files(), private=True)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", hub.token)  # the older name still counts
    assert resolve_repo(REPO, allow_patterns="*.json").commit
    assert {s.authorization for s in hub.hub_seen("hub")} == {f"Bearer {hub.token}"}

    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    with pytest.raises(RepoNotFoundError, match="HF_HUB_DISABLE_IMPLICIT_TOKEN is set") as refused:
        resolve_repo(REPO)
    assert refused.value.response.status_code == 401  # asked without the token
    assert resolve_repo(REPO, allow_patterns="*.json", token=hub.token).commit  # explicit


def test_a_listing_page_on_another_host_is_refused_and_never_sees_the_token(
    hub: HubOrigin,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
) -> None:
    """huggingface_hub's own paging follows a `Link: next` anywhere, with the token: the
    hub's paging here keeps to the hub, which is why it is not HfApi.list_repo_tree."""
    hub.add_repo(REPO, repo_files(), private=True)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    elsewhere = Origin().start()
    try:
        hub.next_page_at = elsewhere.url("/api/models/acme/tiny-diffusion/tree/x?cursor=2")
        service = make_service(start_worker=False)
        with pytest.raises(HubError, match=r"pointed the file list of .* to another host"):
            service.repo_download(REPO, tmp_path)
        assert elsewhere.requests == [] and service.list_jobs() == []
    finally:
        elsewhere.stop()
