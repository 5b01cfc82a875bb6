"""The seam between the engine and the hub: the engine knows no hub, and the hub's two header
readers (`downloader.hub.headers`) are what a worker hands it with every job. Real answers from
the local hub and CDN (tests/hub_origin.py) and from a plain origin (tests/origin.py)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from downloader.engine.transfer import ChecksumMismatchError, TransferRequest, fetch
from downloader.hub.headers import explain_refusal, linked_sha256
from tests.hub_origin import HubOrigin
from tests.origin import Origin

KiB = 1 << 10
REPO = "acme/tiny"


@pytest.fixture
def hub() -> Iterator[HubOrigin]:
    server = HubOrigin().start()
    yield server
    server.stop()


def hub_readers(request: TransferRequest) -> TransferRequest:
    request.explain_refusal, request.announced_digest = explain_refusal, linked_sha256
    return request


def test_the_hubs_readers_read_only_the_hubs_headers(hub: HubOrigin) -> None:
    weights = os.urandom(64 * KiB)
    hub.add_repo(REPO, {"w.safetensors": weights, "config.json": b"{}"})
    hub.add_repo("acme/gated", {"w.safetensors": weights}, gated=True)
    plain = Origin().start()
    try:
        plain.add("w.safetensors", weights)
        with requests.Session() as session:
            lfs = session.get(f"{hub.endpoint}/{REPO}/resolve/main/w.safetensors")
            git = session.get(f"{hub.endpoint}/{REPO}/resolve/main/config.json")
            gated = session.get(f"{hub.endpoint}/acme/gated/resolve/main/w.safetensors")
            missing = session.get(f"{hub.endpoint}/acme/nothing/resolve/main/w.safetensors")
            no_revision = session.get(f"{hub.endpoint}/{REPO}/resolve/v9/w.safetensors")
            elsewhere = session.get(plain.url("/redirect/w.safetensors"))
            refused = session.get(plain.url("/status/401"))
    finally:
        plain.stop()

    assert lfs.history and linked_sha256(lfs) == hashlib.sha256(weights).hexdigest()
    assert linked_sha256(git) is None  # a git file's ETag is its blob's SHA-1: no hash
    assert elsewhere.history and linked_sha256(elsewhere) is None
    said = explain_refusal(gated)
    assert gated.status_code == 401 and said is not None
    assert said.startswith("the hub says the repo is gated: accept its terms")
    assert "HF_TOKEN" in said
    said = explain_refusal(missing)
    assert said is not None and said.startswith("the hub says the repo does not exist")
    # Only refusals with a meaning for the user are explained; nothing else is repeated.
    assert explain_refusal(no_revision) is None and explain_refusal(refused) is None
    assert explain_refusal(lfs) is None


def test_a_linked_etag_that_is_not_a_sha256_is_not_taken_for_one() -> None:
    redirect = requests.Response()
    redirect.status_code = 302
    for hostile in ('"not-a-hash"', '"' + "g" * 64 + '"', "ab" * 33, ""):
        redirect.headers["X-Linked-Etag"] = hostile
        answer = requests.Response()
        answer.status_code, answer.history = 200, [redirect]
        assert linked_sha256(answer) is None, hostile
    redirect.headers["X-Linked-Etag"] = ' "' + "AB" * 32 + '" '
    assert linked_sha256(answer) == "ab" * 32


def test_the_engine_knows_no_hub_until_its_caller_hands_it_the_readers(
    hub: HubOrigin, tmp_path: Path
) -> None:
    """Without the readers a hub's refusal is a bare status and its hash goes unchecked; with
    them the refusal says what to do and the bytes are checked against the hub's hash."""
    weights = os.urandom(64 * KiB)
    hub.add_repo(REPO, {"w.safetensors": weights})
    hub.add_repo("acme/gated", {"w.safetensors": weights}, gated=True)
    hub.cdn.add(hashlib.sha256(weights).hexdigest(), os.urandom(64 * KiB))  # a corrupt CDN
    gated = f"{hub.endpoint}/acme/gated/resolve/main/w.safetensors"
    lfs = f"{hub.endpoint}/{REPO}/resolve/main/w.safetensors"

    with pytest.raises(requests.HTTPError) as bare:
        fetch(TransferRequest(url=gated, dest=tmp_path / "a.bin", dest_is_dir=False))
    assert str(bare.value) == "Unauthorized"
    with pytest.raises(requests.HTTPError) as explained:
        fetch(hub_readers(TransferRequest(url=gated, dest=tmp_path / "a.bin", dest_is_dir=False)))
    assert str(explained.value).startswith("Unauthorized; the hub says the repo is gated")

    unchecked = fetch(TransferRequest(url=lfs, dest=tmp_path / "b.bin", dest_is_dir=False))
    assert unchecked.download_path.read_bytes() != weights  # nothing said it was wrong
    with pytest.raises(ChecksumMismatchError, match="but the server announced"):
        fetch(hub_readers(TransferRequest(url=lfs, dest=tmp_path / "c.bin", dest_is_dir=False)))
    assert not (tmp_path / "c.bin").exists()
