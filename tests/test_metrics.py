"""`/metrics` adds up: read with prometheus_client's own parser after real downloads (single
and multi-file, completed, failed and cancelled), it agrees with `/status`; bytes are counted
once; queue names a caller makes up create no series."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from downloader import DownloadJobStatus, DownloadQueueService, MultiFileDownloadJob
from downloader import RemoteModelFile as Part
from downloader.api import create_api
from tests.origin import Origin
from tests.test_queue import wait_until

STORE_WORD = {
    "waiting": "pending",
    "running": "in_progress",
    "paused": "paused",
    "completed": "completed",
    "error": "failed",
    "cancelled": "canceled",
}
"""The metrics' status label and the word `/status` counts it under."""


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str) -> Iterator[TestClient]:
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")  # the origin is loopback
    with TestClient(create_api()) as client:
        yield client


def scrape(api: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    answer = api.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(answer.text)
    }


def test_metrics_agree_with_status_and_count_bytes_once(
    api: TestClient,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
) -> None:
    service = make_service(start_worker=True, max_parallel_dl=2)
    sizes = {"a": 1000, "b": 2500, "c": 1500, "d": 700}
    for name, size in sizes.items():
        origin.add(f"{name}.bin", bytes([ord(name)]) * size)
    url = origin.url
    for folder in ("single", "missing", "held"):
        (tmp_path / folder).mkdir()
    jobs = [
        service.download(url("/files/a.bin"), tmp_path / "single"),
        service.download(url("/files/b.bin"), tmp_path / "single"),
        service.download(url("/status/404"), tmp_path / "missing"),
        service.multifile_download(
            [Part(url=url("/files/a.bin"), path="a.bin"), Part(url=url("/files/c.bin"), path="c")],
            tmp_path / "multi-ok",
        ),
        service.multifile_download(
            [Part(url=url("/files/d.bin"), path="d"), Part(url=url("/status/404?x=e"), path="e")],
            tmp_path / "multi-failed",
        ),
    ]
    held = service.download(url("/files/b.bin?hold=one"), tmp_path / "held")
    held_multi = service.multifile_download(
        [Part(url=url(f"/files/{n}.bin?hold=multi"), path=n) for n in ("c", "d")],
        tmp_path / "multi-cancelled",
    )
    wait_until(lambda: service.id_to_job(held.id).status is DownloadJobStatus.RUNNING, 30)
    service.cancel_job(held)
    service.cancel_job(held_multi)
    origin.release("one")
    origin.release("multi")
    for job in [*jobs, held, held_multi]:
        service.wait_for_job(job, timeout=30)
    # Twenty queue names a caller makes up: read, and one job queued in each (nobody works them).
    for i in range(20):
        assert api.get(f"/api/v1/queue/junk{i}/status").status_code == 200
        assert api.get(f"/api/v1/queue/junk{i}/i/1").status_code == 404
        queued = api.post(
            f"/api/v1/queue/junk{i}/enqueue", json={"source": url("/files/a.bin"), "dest": "j"}
        )
        assert queued.status_code == 200, queued.text

    families = scrape(api)
    gauge = families["downloader_jobs"]
    assert {dict(labels)["queue"] for labels in gauge} == {"default", "other"}
    assert len(gauge) == 2 * len(STORE_WORD)
    for label, queues in (("default", ["default"]), ("other", [f"junk{i}" for i in range(20)])):
        counts = [api.get(f"/api/v1/queue/{q}/status").json()["queue"] for q in queues]
        for status, word in STORE_WORD.items():
            value = gauge[(("queue", label), ("status", status))]
            assert value == sum(c[word] for c in counts), (label, status)
        series = [v for labels, v in gauge.items() if dict(labels)["queue"] == label]
        assert sum(series) == sum(c["total"] for c in counts)  # each job in one status

    listed = service.list_jobs()
    assert {job.status for job in listed} <= {DownloadJobStatus.COMPLETED, DownloadJobStatus.ERROR}
    ended = families["downloader_jobs_ended"]
    outcomes = {"completed": 0, "error": 0, "cancelled": 0}
    for job in listed:
        cancelled = "cancelled" if job.cancelled else "error"
        outcomes["completed" if job.complete else cancelled] += 1
    assert outcomes["cancelled"] >= 3 and outcomes["error"] >= 3  # two 404s and a parent
    for outcome, count in outcomes.items():
        assert ended.get((("outcome", outcome), ("queue", "default")), 0) == count, outcome

    downloads = [job for job in listed if not isinstance(job, MultiFileDownloadJob)]
    done = [job for job in downloads if job.complete]
    on_disk = sum(job.download_path.stat().st_size for job in done if job.download_path)
    assert len(done) >= 4  # a, b and the first multi-file job's a and c at least
    (downloaded,) = families["downloader_downloaded_bytes"].values()
    assert downloaded == sum(job.total_bytes for job in done) == on_disk
