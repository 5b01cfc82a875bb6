"""Model hubs as sources, end to end against a local hub and CDN (tests/hub_origin.py): real
Redis, real in-process workers, real HTTP. Asserts bytes, pinned commits, verified hashes,
which host saw which token, and the resume after a signed URL expired."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from huggingface_hub import constants as hf_constants

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.client.progress import describe_error
from downloader.engine.retry import is_retriable
from downloader.hub import (
    GatedRepoError,
    HubError,
    HubRef,
    RepoNotFoundError,
    RevisionNotFoundError,
    parse_hf_url,
    resolve_repo,
    token_for,
)
from tests.hub_origin import HubOrigin
from tests.test_faults import FAST_RETRIES
from tests.test_queue import sha256

KiB, MiB = 1 << 10, 1 << 20
REPO = "acme/tiny-diffusion"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubOrigin]:
    """The local hub as DOWNLOADER_HF_ENDPOINT, with no token from the environment or disk."""
    with local_hub(monkeypatch, tmp_path) as server:
        yield server


@contextlib.contextmanager
def local_hub(env: pytest.MonkeyPatch, home: Path) -> Iterator[HubOrigin]:
    """A local hub, running and set in `env` as DOWNLOADER_HF_ENDPOINT, while in the block.

    huggingface_hub reads HF_HOME once, when first imported (by an earlier test, in this
    process): its token file's path is set as that import would set it."""
    server = HubOrigin().start()
    env.setenv("DOWNLOADER_HF_ENDPOINT", server.endpoint)
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "CIVITAI_API_TOKEN"):
        env.delenv(variable, raising=False)
    env.setenv("HF_HOME", str(home / "hf-home"))
    env.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "hf-home" / "token"))
    for key, value in FAST_RETRIES.items():
        env.setenv(key, value)
    try:
        yield server
    finally:
        server.stop()


def repo_files() -> dict[str, bytes]:
    return {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"# tiny diffusion\n",
        "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
        "unet/config.json": b'{"sample_size": 64}',
        "unet/diffusion_pytorch_model.safetensors": os.urandom(MiB + 11),
        "unet/diffusion_pytorch_model.bin": os.urandom(300 * KiB),
        "vae/diffusion_pytorch_model.safetensors": os.urandom(200 * KiB + 3),
        "text_encoder/model.safetensors": os.urandom(100 * KiB),
    }


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_repo_download_fetches_the_selected_files_of_the_pinned_commit(
    hub: HubOrigin,
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
) -> None:
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    enqueuer = make_service(start_worker=False)
    job = enqueuer.repo_download(
        REPO,
        tmp_path,
        allow_patterns=["*.safetensors", "*.json"],
        ignore_patterns=["text_encoder/"],
    )
    # Someone pushes while the job waits: the job still fetches the commit it was pinned to.
    hub.push(REPO, {path: os.urandom(len(data)) for path, data in files.items()})
    worker = make_service(max_parallel_dl=2)
    worker.wait_for_job(job, timeout=30)
    enqueuer.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert job.revision == commit
    assert worker.id_to_job(job.id).revision == commit
    root = tmp_path / "tiny-diffusion"
    assert job.download_path == root
    wanted = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == wanted
    for path in wanted:
        assert sha256(root / path) == digest(files[path])
    # Every part asked the hub at the pinned commit; LFS parts carry the hub's hash.
    parts = {part.download_path: part for part in job.download_parts}
    for path in wanted:
        record = enqueuer.app.store.record(parts[root / path].id)
        assert record is not None
        assert f"/{REPO}/resolve/{commit}/{path}" in record.source
        lfs = path.endswith(".safetensors")
        assert record.sha256 == (digest(files[path]) if lfs else None)
    # The listing came in pages (two entries a page): all were followed.
    assert len([s for s in hub.hub_seen("hub") if "/tree/" in s.path]) > 3


def test_an_hf_source_downloads_one_file_pinned_and_verified(
    hub: HubOrigin, service: DownloadQueueService, tmp_path: Path
) -> None:
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    dataset = {"data/train.parquet": os.urandom(150 * KiB), "README.md": b"# data\n"}
    data_commit = hub.add_repo("acme/pets", dataset, repo_type="dataset")

    model = service.download(f"hf://{REPO}/vae/diffusion_pytorch_model.safetensors", tmp_path)
    table = service.download("hf://datasets/acme/pets@main/data/train.parquet", tmp_path / "t.pq")
    readme = service.download(f"hf://{REPO}@{commit}/README.md", tmp_path)
    for job in (model, table, readme):
        service.wait_for_job(job, timeout=30)
        assert job.status == DownloadJobStatus.COMPLETED, job.error

    assert model.download_path == tmp_path / "diffusion_pytorch_model.safetensors"
    assert sha256(model.download_path) == digest(files["vae/diffusion_pytorch_model.safetensors"])
    assert f"/resolve/{commit}/" in str(model.source)
    assert service.app.store.record(model.id).sha256 == digest(
        files["vae/diffusion_pytorch_model.safetensors"]
    )
    assert sha256(tmp_path / "t.pq") == digest(dataset["data/train.parquet"])
    assert f"/datasets/acme/pets/resolve/{data_commit}/" in str(table.source)
    assert (tmp_path / "README.md").read_bytes() == files["README.md"]


def test_a_part_whose_bytes_do_not_match_the_hubs_hash_fails_clearly(
    hub: HubOrigin, service: DownloadQueueService, tmp_path: Path
) -> None:
    files = repo_files()
    hub.add_repo(REPO, files)
    hub.repos[("model", REPO)].announced["vae/diffusion_pytorch_model.safetensors"] = "ab" * 32
    job = service.repo_download(REPO, tmp_path, allow_patterns="vae/*")
    service.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.ERROR
    (part,) = job.download_parts
    part = service.id_to_job(part.id)
    assert (part.error_type or "").startswith("ChecksumMismatchError(")
    assert "ab" * 32 in (part.error or "")
    assert not list((tmp_path / "tiny-diffusion").rglob("*.safetensors"))


def test_the_hub_token_goes_to_the_hub_and_never_to_the_cdn(
    hub: HubOrigin,
    monkeypatch: pytest.MonkeyPatch,
    service: DownloadQueueService,
    tmp_path: Path,
) -> None:
    files = repo_files()
    hub.add_repo(REPO, files, private=True)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    job = service.repo_download(REPO, tmp_path / "out", allow_patterns=["*.safetensors"])
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED, job.error

    bearer = f"Bearer {hub.token}"
    hub_requests, cdn_requests = hub.hub_seen("hub"), hub.hub_seen("cdn")
    assert {s.authorization for s in hub_requests} == {bearer}
    assert any("/resolve/" in s.path and s.method == "GET" for s in hub_requests)
    assert len(cdn_requests) == 3 and {s.authorization for s in cdn_requests} == {None}
    # Nor is it in what the queue shows.
    shown = json.dumps([j.model_dump(mode="json") for j in service.list_jobs()])
    assert hub.token not in shown


def test_the_token_file_huggingface_hub_writes_is_used(
    hub: HubOrigin, service: DownloadQueueService, tmp_path: Path
) -> None:
    files = repo_files()
    hub.add_repo(REPO, files, gated=True)
    token_file = Path(os.environ["HF_HOME"]) / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(hub.token + "\n")
    job = service.download(f"hf://{REPO}/unet/config.json", tmp_path)
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert (tmp_path / "config.json").read_bytes() == files["unet/config.json"]


def test_a_gated_or_private_repo_says_which_and_what_to_do(
    hub: HubOrigin,
    monkeypatch: pytest.MonkeyPatch,
    service: DownloadQueueService,
    tmp_path: Path,
) -> None:
    hub.add_repo("acme/gated", repo_files(), gated=True)
    hub.add_repo("acme/secret", repo_files(), private=True)

    with pytest.raises(GatedRepoError) as anonymous:
        service.repo_download("acme/gated", tmp_path)
    text = str(anonymous.value)
    assert "model acme/gated is gated" in text and "no Hugging Face token is set" in text
    assert f"accept its terms at {hub.endpoint}/acme/gated" in text and "HF_TOKEN" in text

    monkeypatch.setenv("HF_TOKEN", "hf_notGrantedToken")
    with pytest.raises(GatedRepoError) as refused:
        service.download("hf://acme/gated/unet/config.json", tmp_path)
    assert "does not give access" in str(refused.value)
    assert "hf_notGrantedToken" not in str(refused.value)

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepoNotFoundError, match="or it is private and no Hugging Face token"):
        service.repo_download("acme/secret", tmp_path)
    with pytest.raises(RevisionNotFoundError, match="no revision 'v9'"):
        service.download("hf://acme/gated@v9/README.md", tmp_path)
    # Refused before anything was queued or fetched.
    assert service.list_jobs() == [] and hub.hub_seen("cdn") == []
    assert {s.method for s in hub.hub_seen("hub") if "/resolve/" in s.path} == {"HEAD"}


def test_a_hub_token_a_header_cannot_carry_is_named_by_where_it_came_from(
    hub: HubOrigin, service: DownloadQueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(REPO, repo_files())
    monkeypatch.setenv("HF_TOKEN", "hf_sec\x1bret")
    with pytest.raises(HubError, match=r"^HF_TOKEN: the access token holds a control") as bad:
        service.repo_download(REPO, tmp_path)
    assert "hf_sec" not in str(bad.value) and service.list_jobs() == []
    token_file = Path(os.environ["HF_HOME"]) / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("hf_caf\u00e9")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=f"^the token file {token_file}: the access token"):
        service.repo_download(REPO, tmp_path)
    url = f"{hub.endpoint}/{REPO}/resolve/main/README.md"
    # As huggingface_hub reads it: surrounding whitespace and line breaks are dropped.
    monkeypatch.setenv("HF_TOKEN", "  hf_padded\n")
    assert token_for(url) == "hf_padded"
    monkeypatch.setenv("HF_TOKEN", "hf_sec\r\nret")
    assert token_for(url) == "hf_secret"


def test_a_gated_repo_whose_card_anyone_may_read_is_refused_before_anything_is_queued(
    hub: HubOrigin, service: DownloadQueueService, tmp_path: Path
) -> None:
    """The hub serves a gated repo's README.md and .gitattributes to anyone: access is judged
    on a file it really gates, whichever file sorts first."""
    files = repo_files()
    hub.add_repo("acme/gated", files, gated=True)
    with pytest.raises(GatedRepoError, match="model acme/gated is gated"):
        service.repo_download(
            "acme/gated", tmp_path, allow_patterns=[".gitattributes", "README.md", "*.json"]
        )
    assert service.list_jobs() == [] and hub.hub_seen("cdn") == []
    # The card alone is what anyone may have: that download is allowed, and completes.
    job = service.repo_download("acme/gated", tmp_path, allow_patterns=["README.md"])
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert (tmp_path / "gated" / "README.md").read_bytes() == files["README.md"]


def test_a_repo_gated_after_it_was_queued_fails_saying_what_to_do(
    hub: HubOrigin, make_service: Callable[..., DownloadQueueService], tmp_path: Path
) -> None:
    hub.add_repo(REPO, repo_files())
    job = make_service(start_worker=False).repo_download(
        REPO, tmp_path, allow_patterns=["unet/*.safetensors"]
    )
    hub.repos[("model", REPO)].gated = True  # the authors gate it while the job waits
    worker = make_service(max_parallel_dl=1)
    worker.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.ERROR
    (part,) = worker.id_to_job(job.id).download_parts
    assert part.error_type is not None
    assert part.error_type.startswith("HTTPError(Unauthorized; the hub says the repo is gated")
    said = describe_error(part.error_type)
    assert said.startswith("401 Unauthorized: the hub says the repo is gated: accept its terms")
    assert "HF_TOKEN" in said and hub.hub_seen("cdn") == []


def test_a_failing_hub_mirror_or_an_unreachable_one_is_a_clear_error(
    hub: HubOrigin,
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
) -> None:
    hub.add_repo(REPO, repo_files())
    hub.failing = True
    service = make_service(start_worker=False)  # nothing gets as far as a worker
    with pytest.raises(HubError, match=f"the hub at {hub.endpoint} answered HTTP 503"):
        service.repo_download(REPO, tmp_path)
    closed = HubOrigin()  # bound, never started: nothing answers there
    closed.server.server_close()
    monkeypatch.setenv("DOWNLOADER_HF_ENDPOINT", closed.endpoint)
    with pytest.raises(HubError, match=r"could not reach the hub .* DOWNLOADER_HF_ENDPOINT"):
        make_service(start_worker=False).download(f"hf://{REPO}/README.md", tmp_path)
    assert service.list_jobs() == []


def test_an_expired_cdn_link_mid_download_resumes_with_a_range_request(
    hub: HubOrigin, service: DownloadQueueService, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    hub.add_repo(REPO, {"big.safetensors": data})
    hub.expire_after_bytes = MiB  # the link expires while the first MiB is on its way
    hub.stale_redirects = 1  # and the hub's cached redirect hands it out once more
    job = service.download(f"hf://{REPO}/big.safetensors", tmp_path)
    service.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert sha256(job.download_path) == digest(data)
    cdn = [(s.range, s.status) for s in hub.hub_seen("cdn")]
    assert cdn == [(None, 200), (f"bytes={MiB}-", 403), (f"bytes={MiB}-", 206)]
    # Each attempt went back to the hub for a link, and the hub saw the resume's Range.
    resolves = [s for s in hub.hub_seen("hub") if "/resolve/" in s.path and s.method == "GET"]
    assert len(resolves) == 3
    assert service.id_to_job(job.id).attempts >= 3


def test_segments_whose_cdn_link_expired_each_take_a_fresh_one_and_resume(
    hub: HubOrigin,
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DOWNLOADER_SEGMENTS", "4")
    monkeypatch.setenv("DOWNLOADER_SEGMENT_THRESHOLD", str(MiB))
    service = make_service(max_parallel_dl=1)
    data = os.urandom(4 * MiB)
    hub.add_repo(REPO, {"big.safetensors": data})
    hub.expire_after_bytes = 64 * KiB  # the first link expires under the size probe
    hub.stale_redirects = 2  # and two segments are handed it again
    job = service.download(f"hf://{REPO}/big.safetensors", tmp_path)
    service.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert sha256(job.download_path) == digest(data)
    cdn = hub.hub_seen("cdn")
    assert [s.status for s in cdn].count(403) == 2
    ranged = [s.range for s in cdn if s.status == 206]
    starts = {int(r.removeprefix("bytes=").split("-")[0]) for r in ranged if r}
    assert {0, MiB, 2 * MiB, 3 * MiB} <= starts  # every segment was fetched by range


def test_a_403_is_retried_only_when_it_comes_from_where_the_source_redirected(
    hub: HubOrigin, tmp_path: Path
) -> None:
    """The expired-link rule on real answers: the CDN's 403 after a redirect is worth another
    try (a fresh link); the hub's own 403 (a gated file) is final."""
    hub.add_repo(REPO, {"big.safetensors": os.urandom(64 * KiB)})
    hub.add_repo("acme/gated", {"w.safetensors": os.urandom(KiB)}, gated=True)
    hub.expire_after_bytes = KiB
    hub.stale_redirects = 1
    url = f"{hub.endpoint}/{REPO}/resolve/main/big.safetensors"
    with requests.Session() as session:
        session.get(url, stream=True).close()  # the first link expires while being sent
        expired = session.get(url)
        gated = session.get(
            f"{hub.endpoint}/acme/gated/resolve/main/w.safetensors",
            headers={"Authorization": "Bearer hf_notGrantedToken"},
        )
    assert expired.status_code == 403 and expired.history
    assert is_retriable(requests.HTTPError("Forbidden", response=expired))
    assert gated.status_code == 403 and not gated.history
    assert not is_retriable(requests.HTTPError("Forbidden", response=gated))


@pytest.mark.parametrize("hostile", ["../escape.json", "/etc/cron.d/evil.json"])
def test_a_listing_with_a_path_outside_the_repo_is_refused_before_anything_is_queued(
    hub: HubOrigin,
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
    hostile: str,
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", hostile: b"{}"})
    service = make_service(start_worker=False)
    with pytest.raises(HubError, match="a file path that is not safe"):
        service.repo_download(REPO, tmp_path)
    assert service.list_jobs() == [] and list(tmp_path.iterdir()) == []


def test_each_hub_token_goes_to_its_own_origin_only(
    hub: HubOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_a")
    monkeypatch.setenv("CIVITAI_API_TOKEN", "civ_b")
    assert token_for(f"{hub.endpoint}/acme/x/resolve/main/a.bin") == "hf_a"
    assert token_for("https://civitai.com/api/download/models/12345") == "civ_b"
    assert token_for("https://www.civitai.com/api/download/models/12345") == "civ_b"
    for elsewhere in (
        hub.cdn.url("/files/x"),  # same host, another port: another origin
        "https://huggingface.co/acme/x/resolve/main/a.bin",  # not the configured hub
        "https://civitai.com.example.net/api/download/models/1",
        "http://civitai.com/api/download/models/1",  # never in clear text
        "https://civitai.com:8443/api/download/models/1",  # nor to another port
    ):
        assert token_for(elsewhere) is None, elsewhere


def test_hf_addresses_name_repos_kinds_revisions_and_paths() -> None:
    assert parse_hf_url("hf://acme/tiny/unet/config.json") == HubRef(
        "acme/tiny", "model", "main", "unet/config.json"
    )
    assert parse_hf_url("hf://datasets/acme/pets@v1.0/data/train.parquet") == HubRef(
        "acme/pets", "dataset", "v1.0", "data/train.parquet"
    )
    assert parse_hf_url("hf://spaces/acme/demo@refs%2Fpr%2F3") == HubRef(
        "acme/demo", "space", "refs/pr/3", None
    )
    for bad in ("hf://acme", "hf://../x/y", "https://acme/tiny", "hf://acme/ti ny/x"):
        with pytest.raises(ValueError):
            parse_hf_url(bad)


def test_resolve_repo_is_what_the_cli_and_rest_api_call(hub: HubOrigin) -> None:
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    resolved = resolve_repo(f"hf://{REPO}", allow_patterns=["unet/*"], ignore_patterns="*.bin")
    assert resolved.commit == commit
    assert [(str(f.path), f.size) for f in resolved.files] == [
        ("tiny-diffusion/unet/config.json", len(files["unet/config.json"])),
        (
            "tiny-diffusion/unet/diffusion_pytorch_model.safetensors",
            len(files["unet/diffusion_pytorch_model.safetensors"]),
        ),
    ]
