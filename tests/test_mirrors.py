"""Mirrors: other URLs of a job's file take over when its source fails or stalls, and share a
segmented download, only when their answers are that file. Real Redis, real workers, a second
local origin as the mirror (tests/origin.py) and a second local hub (tests/hub_origin.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.api import create_api
from downloader.engine.filestate import PartialState, Validators, partial_path, state_path
from downloader.engine.mirrors import Mirrors
from downloader.engine.transfer import TransferRequest, fetch
from tests.conftest import cli_env
from tests.hub_origin import HubOrigin
from tests.origin import Origin
from tests.test_faults import FAST_RETRIES
from tests.test_hub import digest, hub, repo_files  # noqa: F401  (`hub` is a fixture)
from tests.test_queue import sha256, wait_until

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture
def mirror() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture
def queue(
    monkeypatch: pytest.MonkeyPatch, make_service: Callable[..., DownloadQueueService]
) -> DownloadQueueService:
    for key, value in FAST_RETRIES.items():
        monkeypatch.setenv(key, value)
    return make_service(max_parallel_dl=2)


def ranges(origin: Origin, path: str) -> list[str]:
    return [r.headers.get("Range", "") for r in origin.gets(path)]


def test_a_source_that_always_fails_hands_over_to_a_mirror_without_its_token(
    queue: DownloadQueueService, origin: Origin, mirror: Origin, tmp_path: Path
) -> None:
    data = os.urandom(700 * KiB)
    origin.add("model.bin", data)
    mirror.add("model.bin", data)
    job = queue.download(
        origin.url("/files/model.bin?fail=1000"),
        tmp_path,
        access_token="job-token-123",
        mirrors=[mirror.url("/files/model.bin")],
    )
    queue.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert job.download_path == tmp_path / "model.bin"
    assert sha256(tmp_path / "model.bin") == hashlib.sha256(data).hexdigest()
    assert origin.gets("/files/model.bin") and mirror.gets("/files/model.bin")
    # The token goes to the source's origin only; the mirror is on another one.
    assert all(r.headers.get("Authorization") for r in origin.gets("/files/"))
    assert not any("Authorization" in r.headers for r in mirror.requests)
    record = queue.app.store.record(job.id)
    assert record is not None and record.mirrors == [mirror.url("/files/model.bin")]
    assert "job-token-123" not in json.dumps(record.to_hash())


def test_a_source_or_a_mirror_whose_host_does_not_exist_leaves_the_file_to_the_other(
    queue: DownloadQueueService, origin: Origin, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING, logger="downloader.engine.mirrors")
    data = os.urandom(300 * KiB)
    origin.add("model.bin", data)
    from_mirror = queue.download(
        "http://no-such-source.invalid/model.bin",
        tmp_path / "a",
        mirrors=[origin.url("/files/model.bin")],
    )
    # The source's 503 is worth a retry; the mirror that does not resolve is not.
    from_source = queue.download(
        origin.url("/files/model.bin?fail=1"),
        tmp_path / "b",
        mirrors=["http://no-such-mirror.invalid/model.bin"],
    )
    queue.join()
    for job in (from_mirror, from_source):
        assert job.status == DownloadJobStatus.COMPLETED, job.error
        assert sha256(job.download_path) == hashlib.sha256(data).hexdigest()
    assert from_mirror.attempts == 1 and from_source.attempts == 2
    assert "its host no-such-mirror.invalid does not resolve" in caplog.text


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_a_source_that_drops_or_stalls_mid_file_resumes_from_the_mirror_with_a_range_request(
    fault: str,
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    mirror: Origin,
    tmp_path: Path,
) -> None:
    # A stall: below 10 kB/s for a whole second (the source sends nothing after the cut).
    for key, value in {**FAST_RETRIES, "DOWNLOADER_LOWEST_SPEED_WINDOW": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOWNLOADER_LOWEST_SPEED", "10000")
    queue = make_service(max_parallel_dl=2)
    data = os.urandom(MiB + 5)
    origin.add("weights.bin", data)
    mirror.add("weights.bin", data)  # the same bytes: the same strong ETag
    cut = 300 * KiB
    job = queue.download(
        origin.url(f"/files/weights.bin?{fault}={cut}"),
        tmp_path,
        mirrors=[mirror.url("/files/weights.bin")],
    )
    queue.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert sha256(tmp_path / "weights.bin") == hashlib.sha256(data).hexdigest()
    assert ranges(origin, "/files/weights.bin") == [""]  # asked once, dropped
    [resume] = mirror.gets("/files/weights.bin")
    first = int(resume.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < first <= cut  # it went on from the partial file, not from the start
    etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'  # tests/origin.py's ETag
    assert resume.headers["If-Range"] == etag  # the file's ETag, which they share


@pytest.mark.parametrize("difference", ["etag", "size"])
def test_a_mirror_of_another_file_is_never_used_and_the_source_finishes(
    difference: str,
    queue: DownloadQueueService,
    origin: Origin,
    mirror: Origin,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="downloader.engine.mirrors")
    data = os.urandom(MiB)
    origin.add("ckpt.bin", data)
    # Same length, other bytes (so another ETag); or the same bytes and one more.
    mirror.add("ckpt.bin", os.urandom(MiB) if difference == "etag" else data + b"!")
    job = queue.download(
        origin.url(f"/files/ckpt.bin?drop={200 * KiB}"),
        tmp_path,
        # A broken cache that answers every Range with 206, whatever If-Range says.
        mirrors=[mirror.url("/files/ckpt.bin?ignoreifrange=1")],
    )
    queue.wait_for_job(job, timeout=30)

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert sha256(tmp_path / "ckpt.bin") == hashlib.sha256(data).hexdigest()
    assert len(mirror.gets("/files/ckpt.bin")) == 1  # asked once, dropped for the job
    resumed = ranges(origin, "/files/ckpt.bin")
    assert resumed[0] == "" and resumed[1].startswith("bytes=") and len(resumed) == 2
    assert "dropped" in caplog.text and mirror.base in caplog.text


def test_an_untrusted_jobs_mirrors_pass_the_same_address_guard(
    queue: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("x.bin", os.urandom(KiB))
    job = queue.download(
        "http://mirror-source.invalid/x.bin",  # fails to connect: the mirror is next in line
        tmp_path,
        untrusted=True,
        mirrors=[origin.url("/files/x.bin")],
    )
    queue.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.ERROR
    assert (job.error_type or "").startswith("ForbiddenAddressError")
    assert origin.requests == []


def test_mirrors_are_checked_like_sources_at_enqueue(
    queue: DownloadQueueService, tmp_path: Path
) -> None:
    for bad in (["ftp://example.com/x"], ["not a url"], "http://example.com/x"):
        with pytest.raises(ValueError):
            queue.download("http://example.com/x", tmp_path, mirrors=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        queue.download_many(
            [{"source": "http://example.com/x", "dest": tmp_path, "mirrors": ["file:///etc"]}]
        )
    assert queue.list_jobs() == []


def test_segments_spread_over_the_mirrors_and_a_failing_one_hands_its_segment_over(
    origin: Origin, tmp_path: Path
) -> None:
    a, b = Origin().start(), Origin().start()
    try:
        data = os.urandom(8 * MiB + 3)
        expected = origin.add("big.bin", data)
        a.add("big.bin", data)
        b.add("big.bin", data)
        cut = 100 * KiB
        result = fetch(
            TransferRequest(
                url=origin.url("/files/big.bin"),
                dest=tmp_path,
                segments=4,
                segment_threshold=MiB,
                mirrors=Mirrors(
                    origin.url("/files/big.bin"),
                    [a.url("/files/big.bin"), b.url(f"/files/big.bin?drop={cut}")],
                ),
            )
        )
    finally:
        a.stop()
        b.stop()

    assert sha256(tmp_path / "big.bin") == expected
    assert result.bytes == len(data)
    size = -(-len(data) // 4)
    starts = list(range(0, len(data), size))
    plan = [f"bytes={s}-{min(s + size, len(data)) - 1}" for s in starts]
    # One probe and two segments from the source, one segment from each mirror...
    assert ranges(a, "/files/big.bin") == [plan[1]]
    assert ranges(b, "/files/big.bin") == [plan[2]]
    served = sorted(ranges(origin, "/files/big.bin"))
    # ...and the source went on with the segment the failing mirror dropped, where it stopped.
    handed = [r for r in served if r not in ("", plan[0], plan[3])]
    assert sorted(set(served) - set(handed)) == sorted(["", plan[0], plan[3]])
    [rest] = handed
    first, _, last = rest.removeprefix("bytes=").partition("-")
    assert starts[2] < int(first) <= starts[2] + cut
    assert last == plan[2].rpartition("-")[2]


def test_hub_files_also_come_from_a_hub_mirror_verified_by_the_hub_hash(
    hub: HubOrigin,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    tmp_path: Path,
) -> None:
    files = repo_files()
    commit = hub.add_repo("acme/tiny-diffusion", files)
    hub_mirror = HubOrigin().start()
    try:
        hub_mirror.add_repo("acme/tiny-diffusion", files, commit=commit)
        monkeypatch.setenv("DOWNLOADER_HF_MIRRORS", json.dumps([hub_mirror.endpoint]))
        monkeypatch.setenv("HF_TOKEN", hub.token)
        queue = make_service(max_parallel_dl=2)
        wanted = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
        job = queue.repo_download("acme/tiny-diffusion", tmp_path, allow_patterns=wanted)
        hub.failing = True  # resolved and pinned; from now on the hub answers 503
        queue.wait_for_job(job, timeout=60)
    finally:
        hub_mirror.stop()

    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert job.revision == commit
    root = tmp_path / "tiny-diffusion"
    for path in wanted:
        assert sha256(root / path) == digest(files[path])
    resolved = [s.path for s in hub_mirror.hub_seen("hub") if s.method == "GET"]
    for path in wanted:
        assert f"/acme/tiny-diffusion/resolve/{commit}/{path}" in resolved
    assert [s.status for s in hub_mirror.hub_seen("cdn")] == [200]  # the LFS file, once
    # The hub token went to the hub only: neither the mirror nor any CDN saw it.
    assert any(s.authorization for s in hub.hub_seen("hub"))
    assert not any(s.authorization for s in hub_mirror.seen)
    assert not any(s.authorization for s in hub.hub_seen("cdn"))


def test_a_segment_never_takes_bytes_from_a_mirror_of_another_version(
    origin: Origin, mirror: Origin, tmp_path: Path
) -> None:
    data = os.urandom(4 * MiB)
    expected = origin.add("v.bin", data)
    mirror.add("v.bin", os.urandom(4 * MiB))  # same size, other bytes: another ETag
    fetch(
        TransferRequest(
            url=origin.url("/files/v.bin"),
            dest=tmp_path,
            segments=4,
            segment_threshold=MiB,
            mirrors=Mirrors(
                origin.url("/files/v.bin"), [mirror.url("/files/v.bin?ignoreifrange=1")]
            ),
        )
    )
    assert sha256(tmp_path / "v.bin") == expected
    size = MiB
    plan = [f"bytes={s}-{s + size - 1}" for s in range(0, len(data), size)]
    # Segments 1 and 3 began on the mirror; it answered another ETag and was dropped (one
    # of them may have been planned after the drop), and the source served every segment.
    asked = ranges(mirror, "/files/v.bin")
    assert asked and set(asked) <= {plan[1], plan[3]}
    assert sorted(ranges(origin, "/files/v.bin")) == sorted(["", *plan])


def test_a_shorter_mirror_never_empties_a_finished_partial_file(
    origin: Origin, mirror: Origin, tmp_path: Path
) -> None:
    data = os.urandom(256 * KiB)
    expected = origin.add("done.bin", data)
    mirror.add("done.bin", data[: 100 * KiB])  # answers 416 to a Range past its own end
    source = origin.url("/files/done.bin?fail=1")
    final = tmp_path / "done.bin"
    partial_path(final).write_bytes(data)  # every byte is in; only the rename was missing
    etag = f'"{expected[:16]}"'
    PartialState(Validators(source, etag=etag, total=len(data))).save(
        state_path(partial_path(final))
    )
    mirrors = Mirrors(source, [mirror.url("/files/done.bin?ignoreifrange=1")])

    def attempt() -> None:
        fetch(TransferRequest(url=source, dest=tmp_path, download_path=final, mirrors=mirrors))

    with pytest.raises(requests.HTTPError):  # the source's 503; the mirror was dropped
        attempt()
    assert partial_path(final).read_bytes() == data
    attempt()  # the retry: the source says the partial file is whole
    assert sha256(final) == expected
    assert mirror.gets("/files/done.bin")[0].headers["Range"] == f"bytes={len(data)}-"
    assert len(mirror.gets("/files/done.bin")) == 1


def test_a_dropped_mirror_is_logged_without_its_query_or_user_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="downloader.engine.mirrors")
    mirrors = Mirrors("https://src.example/f?sig=s1", ["https://u:pw@m.example:8443/f?sig=s2"])
    mirrors.drop("https://u:pw@m.example:8443/f?sig=s2", "its ETag differs")
    mirrors.drop("https://src.example/f?sig=s1", "the source is never dropped")
    assert mirrors.line() == ["https://src.example/f?sig=s1"]
    assert "mirror https://m.example:8443/f dropped for https://src.example/f" in caplog.text
    assert "sig=" not in caplog.text and "pw" not in caplog.text


def test_mirrors_from_rest_and_the_command_line_take_over_from_a_failing_source(
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    mirror: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    """The same rule for every way in: each REST form carries its own `mirrors`, and `get`
    takes `--mirror`; the source always fails, so only the mirror can have served the bytes."""
    for key, value in FAST_RETRIES.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")  # both are loopback
    (tmp_path / "root").mkdir()
    data = {name: os.urandom(50 * KiB) for name in ("s.bin", "i.bin", "p.bin", "c.bin")}
    for name, body in data.items():
        origin.add(name, body)
        mirror.add(name, body)

    def failing(name: str) -> str:
        return origin.url(f"/files/{name}?fail=1000")

    worker = make_service(max_parallel_dl=2)
    with TestClient(create_api()) as api:
        bodies = [
            {"source": failing("s.bin"), "dest": "s", "mirrors": [mirror.url("/files/s.bin")]},
            {"items": [{"source": failing("i.bin"), "dest": "i",
                        "mirrors": [mirror.url("/files/i.bin")]}]},
            {"parts": [{"url": failing("p.bin"), "path": "p.bin",
                        "mirrors": [mirror.url("/files/p.bin")]}], "dest": "p"},
        ]  # fmt: skip
        ids = []
        for body in bodies:
            answer = api.post("/api/v1/queue/default/enqueue", json=body)
            assert answer.status_code == 200, answer.text
            ids += [item["item_id"] for item in answer.json()["items"]]
        refused = api.post(
            "/api/v1/queue/default/enqueue",
            json={"parts": [{"url": failing("p.bin"), "path": "x"}], "dest": "p",
                  "mirrors": [mirror.url("/files/p.bin")]},
        )  # fmt: skip
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["body", "parts", "mirrors"], refused.text

        def ended() -> bool:
            statuses = [api.get(f"/api/v1/queue/default/i/{i}").json()["status"] for i in ids]
            return all(status not in ("pending", "in_progress") for status in statuses)

        wait_until(ended, timeout=60)
    worker.close()
    for name, folder in (("s.bin", "s"), ("i.bin", "i"), ("p.bin", "p")):
        assert sha256(tmp_path / "root" / folder / name) == hashlib.sha256(data[name]).hexdigest()

    got = subprocess.run(
        [sys.executable, "-m", "downloader", "get", failing("c.bin"), "-d", str(tmp_path / "c"),
         "--worker", "--mirror", mirror.url("/files/c.bin")],
        env=cli_env(namespace, redis_url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert sha256(tmp_path / "c" / "c.bin") == hashlib.sha256(data["c.bin"]).hexdigest()
    assert len(mirror.gets("/files/c.bin")) == 1
    two = subprocess.run(
        [sys.executable, "-m", "downloader", "get", failing("c.bin"), failing("s.bin"),
         "--mirror", mirror.url("/files/c.bin")],
        env=cli_env(namespace, redis_url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert two.returncode == 2 and "--mirror names other URLs of one" in two.stderr
