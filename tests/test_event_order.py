"""Events in order and none after the end, for every kind of job, parents included, as the
REST event stream (SSE) and Redis pub/sub deliver them; a multi-file job's parts end before
(or with) their parent, and its end shows no part still running."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests

from downloader import DownloadJobStatus, DownloadQueueService, MultiFileDownloadJob
from downloader import RemoteModelFile as Part
from downloader.jobs import events as ev
from downloader.store.bus import EventPublisher, Subscription
from downloader.store.jobs import JobStore
from tests.origin import Origin
from tests.test_api import served  # noqa: F401  (the API on uvicorn, a fixture)
from tests.test_queue import wait_until

MiB = 1 << 20
MARKER = "test_marker"
"""Published after the worker stopped: every event of the jobs came before it."""
ENDS = {
    ev.DOWNLOAD_COMPLETE,
    ev.DOWNLOAD_ERROR,
    ev.DOWNLOAD_CANCELLED,
    ev.MULTIFILE_COMPLETE,
    ev.MULTIFILE_ERROR,
    ev.MULTIFILE_CANCELLED,
}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str) -> Path:
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")
    monkeypatch.setenv("DOWNLOADER_PROGRESS_INTERVAL", "0.02")  # many progress events
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


class Collector:
    """Events of the default queue from one source, in arrival order, until the marker; at
    each parent's end, what its parts' records said at that moment."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.events: list[dict] = []
        self.parts_at_parent_end: dict[int, list[DownloadJobStatus]] = {}
        self.done = threading.Event()

    def take(self, event: dict) -> None:
        if event["event"] == MARKER:
            self.done.set()
            return
        self.events.append(event)
        if event["event"] in (ev.MULTIFILE_COMPLETE, ev.MULTIFILE_ERROR, ev.MULTIFILE_CANCELLED):
            parent = self.store.record(event["job_id"])
            parts = self.store.records(parent.part_ids) if parent else []
            self.parts_at_parent_end[event["job_id"]] = [part.status for part in parts]


def follow_sse(url: str, collector: Collector, ready: threading.Event) -> None:
    with requests.get(url, stream=True, timeout=60) as stream:
        name = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith(":"):
                ready.set()
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = json.loads(line[6:])
                assert payload["event"] == name
                collector.take(payload)
                if collector.done.is_set():
                    return


def follow_pubsub(subscription: Subscription, collector: Collector) -> None:
    for event in subscription:
        if event is not None:
            collector.take(event)
            if collector.done.is_set():
                return


def check_order(collector: Collector, jobs: list) -> None:
    """Each job's first event is its start, its end is its last and only end; a parent's
    parts all ended before it, and none read unfinished when its end arrived."""
    by_job: dict[int, list[dict]] = {}
    for event in collector.events:
        by_job.setdefault(event["job_id"], []).append(event)
    for job in jobs:
        names = [e["event"] for e in by_job[job.id]]
        assert names, job.id
        first = ev.MULTIFILE_STARTED if isinstance(job, MultiFileDownloadJob) else None
        if first is not None:
            assert names[0] == first, (job.id, names)
        elif ev.DOWNLOAD_STARTED in names:
            assert names[0] == ev.DOWNLOAD_STARTED, (job.id, names)
        ends = [name for name in names if name in ENDS]
        assert len(ends) == 1 and names[-1] == ends[0], (job.id, names)
        if isinstance(job, MultiFileDownloadJob):
            at_end = collector.events.index(by_job[job.id][-1])
            for part in job.download_parts:
                part_end = collector.events.index(by_job[part.id][-1])
                assert part_end < at_end, (job.id, part.id)
            statuses = collector.parts_at_parent_end[job.id]
            assert statuses and all(status.finished for status in statuses), statuses


def test_every_job_ends_last_on_sse_and_pubsub(
    served: str,  # noqa: F811
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    root: Path,
    namespace: str,
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client, namespace)
    sse, pubsub = Collector(store), Collector(store)
    ready = threading.Event()
    threads = [
        threading.Thread(
            target=follow_sse, args=(f"{served}/api/v1/queue/default/events", sse, ready)
        ),
        threading.Thread(
            target=follow_pubsub, args=(Subscription(client, namespace, "default"), pubsub)
        ),
    ]
    for thread in threads:
        thread.daemon = True
        thread.start()
    assert ready.wait(10)

    worker = make_service(start_worker=True, max_parallel_dl=4)
    for name in ("a", "b", "c"):
        origin.add(f"{name}.bin", os.urandom(MiB))
    slow = "rate=2000000"
    single = worker.download(origin.url(f"/files/a.bin?{slow}"), root)
    completed = worker.multifile_download(
        [Part(url=origin.url(f"/files/{n}.bin?{slow}"), path=f"{n}.bin") for n in "bc"],
        root / "completed",
    )
    worker.wait_for_job(single, timeout=30)
    worker.wait_for_job(completed, timeout=30)
    failed = worker.multifile_download(
        [
            Part(url=origin.url(f"/files/b.bin?{slow}&x=1"), path="b.bin"),
            Part(url=origin.url("/files/c.bin?fail=1&code=404"), path="c.bin"),
        ],
        root / "failed",
    )
    worker.wait_for_job(failed, timeout=30)
    cancelled = worker.multifile_download(
        [Part(url=origin.url(f"/files/{n}.bin?rate=500000&x=2"), path=f"{n}.bin") for n in "abc"],
        root / "cancelled",
    )
    wait_until(lambda: worker.id_to_job(cancelled.id).bytes > 0, timeout=30)
    worker.cancel_job(cancelled)
    worker.wait_for_job(cancelled, timeout=30)
    jobs = [worker.id_to_job(job.id) for job in (single, completed, failed, cancelled)]
    assert [job.status for job in jobs] == [
        DownloadJobStatus.COMPLETED,
        DownloadJobStatus.COMPLETED,
        DownloadJobStatus.ERROR,
        DownloadJobStatus.ERROR,
    ]
    assert not jobs[2].cancelled and jobs[3].cancelled
    dumped = json.loads(jobs[3].model_dump_json())  # the job's JSON says so, not only `error`
    assert dumped["status"] == "error" and dumped["cancelled"] is True
    assert all(part["cancelled"] for part in dumped["download_parts"])
    assert json.loads(jobs[2].model_dump_json())["cancelled"] is False
    worker.close()  # no worker thread publishes any more
    EventPublisher(client, namespace).publish(MARKER, "default", 0)
    for thread in threads:
        thread.join(30)
    for collector in (sse, pubsub):
        assert collector.done.is_set()
        check_order(collector, jobs)
    assert [e["event"] for e in sse.events] == [e["event"] for e in pubsub.events]
