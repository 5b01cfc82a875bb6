"""The store's indexes, counters and retention at size, and what is built on them: metrics,
lost messages dispatched again, a 2,000-part job over two worker processes."""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from downloader import DownloadJobStatus, DownloadQueueService, RemoteModelFile
from downloader.api.metrics import render
from downloader.jobs.record import JobRecord
from downloader.store.base import BATCH
from downloader.store.jobs import JobStore
from downloader.store.keys import CANCELLED, STATUSES
from downloader.worker import recovery
from tests.conftest import WorkerProcess, keys_matching
from tests.origin import Origin
from tests.test_queue import wait_until


@pytest.fixture
def store(namespace: str, redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), namespace)


def add_jobs(store: JobStore, queue_id: str, count: int) -> list[int]:
    ids = store.new_ids(count)
    store.create(
        queue_id,
        [JobRecord(id=i, source=f"http://x/{i}", dest=Path("/tmp")) for i in ids],
    )
    return ids


def full_scan(store: JobStore, queue_id: str) -> dict[str, int]:
    """Counts the slow way: every record of the queue read and looked at."""
    counted: Counter[str] = Counter()
    for raw in store.redis.zrange(store.keys.queue_jobs(queue_id), 0, -1):
        record = store.record(int(raw))
        assert record is not None, "an index entry without its record"
        counted[record.status.value] += 1
        counted[CANCELLED] += record.cancelled
        counted["total"] += 1
    return {name: counted[name] for name in (*STATUSES, CANCELLED, "total")}


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["enqueue", "claim", "complete", "fail", "cancel", "prune", "clear", "expire"]
        ),
        st.integers(0, 30),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_counts_equal_a_full_scan_after_any_mix_of_operations(
    store: JobStore, ops: list[tuple[str, int]]
) -> None:
    queue_id = uuid.uuid4().hex[:8]
    ids: list[int] = []
    for op, n in ops:
        pick = ids[n % len(ids)] if ids else None
        if op == "enqueue":
            ids += add_jobs(store, queue_id, 1 + n % 4)
        elif pick is None:
            continue
        elif op == "claim":
            store.claim(pick, "w#1", 30)
        elif op == "complete":
            store.finish(pick, DownloadJobStatus.COMPLETED, bytes=n)
        elif op == "fail":
            store.finish_once(pick, DownloadJobStatus.ERROR, error_type="E")
        elif op == "cancel":
            store.cancel(pick)
        elif op == "prune":
            finished = [
                r.id for s in ("completed", "error") for r in store.iter_records(queue_id, s)
            ]
            store.remove(queue_id, finished)
        elif op == "clear":
            unfinished = [
                r.id for s in ("waiting", "running") for r in store.iter_records(queue_id, s)
            ]
            store.cancel_many(unfinished)
            store.remove(queue_id, unfinished)
        elif op == "expire":
            store.expire(queue_id, time.time() + 1)
    assert store.counts(queue_id) == full_scan(store, queue_id)
    # A queue is named exactly while it holds a job.
    assert (queue_id in store.queue_names()) == (store.counts(queue_id)["total"] > 0)
    for status in STATUSES:
        by_index = [r.id for r in store.iter_records(queue_id, status)]
        by_scan = [r.id for r in store.iter_records(queue_id) if r.status == status]
        assert by_index == by_scan


def test_pages_by_cursor_stay_stable_while_jobs_come_and_go(store: JobStore) -> None:
    ids = add_jobs(store, "q", 130)
    first, cursor = store.page("q", limit=50)
    assert [r.id for r in first] == ids[:50] and cursor == ids[49]
    # Meanwhile: jobs of the first page and of later pages go, new jobs come.
    store.remove("q", ids[:10] + ids[60:65])
    newer = add_jobs(store, "q", 5)
    seen, pages = [r.id for r in first], 1
    while cursor is not None:
        page, cursor = store.page("q", cursor=cursor, limit=50)
        seen += [r.id for r in page]
        pages += 1
    assert seen == ids[:60] + ids[65:] + newer  # nothing twice, nothing skipped
    assert pages == 3


def test_retention_removes_records_and_index_entries_together(store: JobStore) -> None:
    done, failed, waiting = add_jobs(store, "q", 3)
    store.finish(done, DownloadJobStatus.COMPLETED)
    store.cancel(failed)
    assert store.sweep_expired("q", 0) == 0  # 0 keeps them for ever
    assert store.expire("q", time.time() - 3600) == []  # not old enough
    assert sorted(store.expire("q", time.time() + 1)) == [done, failed]
    assert store.counts("q") == {
        **dict.fromkeys((*STATUSES, CANCELLED), 0),
        "waiting": 1,
        "total": 1,
    }
    for job_id in (done, failed):
        assert store.record(job_id) is None
    leftovers = [
        k.decode() for k in keys_matching(store.redis, f"{store.keys.namespace}:queue:q:*")
    ]
    for key in leftovers:
        members = {int(m) for m in store.redis.zrange(key, 0, -1)}
        assert members <= {waiting}, key


def test_queue_names_go_with_their_last_job_and_come_back_with_the_next(
    make_service: Callable[..., DownloadQueueService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `get` of the embedded default has a queue of its own, and the orphan watch
    walks every queue name every few seconds: the names must not outlive the jobs."""
    monkeypatch.setenv("DOWNLOADER_RESULT_TTL", "0.01")
    app = make_service(start_worker=False).app
    store = app.store
    gets = [f"get-{uuid.uuid4().hex[:12]}" for _ in range(40)]
    for queue_id in gets:
        (job_id,) = add_jobs(store, queue_id, 1)
        store.finish(job_id, DownloadJobStatus.COMPLETED)
    (busy,) = add_jobs(store, "busy", 1)  # waiting: never expires
    store.redis.sadd(store.keys.queues, "left-by-an-older-version")  # a name without jobs
    assert set(store.queue_names()) == {*gets, "busy", "left-by-an-older-version"}

    def swept_to_busy() -> bool:
        recovery.sweep_expired(app)  # what every worker's watch runs each round
        return store.queue_names() == ["busy"]

    wait_until(swept_to_busy, timeout=10)
    assert store.record(busy) is not None
    assert keys_matching(store.redis, f"{store.keys.namespace}:queue:get-*") == []
    assert [f for f in store.redis.hkeys(store.keys.stats) if f.startswith(b"ended:get-")] == []

    add_jobs(store, gets[0], 1)  # a queue that gets a job again is named again
    assert store.queue_names() == sorted(["busy", gets[0]])
    store.cancel_many([busy])
    store.remove("busy", [busy])  # prune and clear remove through the same call
    assert store.queue_names() == [gets[0]]


def test_a_queue_emptied_between_two_batches_of_a_create_keeps_its_name(store: JobStore) -> None:
    ids = store.new_ids(BATCH + 1)

    def records() -> Iterator[JobRecord]:
        for n, job_id in enumerate(ids):
            if n == BATCH:  # the first batch is in Redis: empty the queue, as `clear` would
                store.cancel_many(ids[:BATCH])
                store.remove("q", ids[:BATCH])
                assert store.queue_names() == []
            yield JobRecord(id=job_id, source="http://x/", dest=Path("/tmp"))

    store.create("q", records())
    assert store.queue_names() == ["q"] and store.counts("q")["total"] == 1


def test_a_service_sweeps_jobs_past_the_result_ttl(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOWNLOADER_RESULT_TTL", "1")
    service = make_service(max_parallel_dl=1)
    origin.add("a.bin", b"a" * 100)
    job = service.download(origin.url("/files/a.bin"), tmp_path)
    service.wait_for_job(job, timeout=30)
    wait_until(lambda: not service.list_jobs(), timeout=10)
    assert service.app.store.record(job.id) is None
    assert service.app.store.counts(service.queue_id)["total"] == 0


def test_metrics_parse_and_agree_with_the_counts(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(max_parallel_dl=2)
    origin.add("a.bin", b"a" * 1000)
    jobs = service.download_many(
        [{"source": origin.url("/files/a.bin"), "dest": tmp_path / str(i)} for i in range(3)]
        + [{"source": origin.url("/files/missing"), "dest": tmp_path}]
    )
    service.join()
    assert [j.status for j in jobs] == ["completed"] * 3 + ["error"]
    families = {f.name: f for f in text_string_to_metric_families(render(service.admin).decode())}
    by_status = {
        s.labels["status"]: s.value
        for s in families["downloader_jobs"].samples
        if s.labels["queue"] == service.queue_id
    }
    counts = service.app.store.counts(service.queue_id)
    assert by_status == {k: v for k, v in counts.items() if k != "total"}
    assert {s.name: s.value for s in families["downloader_downloaded_bytes"].samples} == {
        "downloader_downloaded_bytes_total": 3000
    }
    durations = {s.name: s.value for s in families["downloader_job_duration_seconds"].samples}
    assert durations["downloader_job_duration_seconds_count"] == 4
    assert "downloader_live_workers" in families


def test_a_message_lost_with_a_frozen_worker_runs_on_another_within_the_visibility_timeout(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    digest = origin.add("lost.bin", os.urandom(50_000))
    # The frozen worker's BRPOP waits ten minutes instead of kombu's one second, and it is
    # frozen only once that BRPOP is seen pending: Redis then hands it the message whenever
    # the job is sent, however slow the machine. Without mingle, whose reply queue is read
    # with a BRPOP of the same length, that BRPOP is the consumer's only one.
    name = f"dltest-frozen-{uuid.uuid4().hex}"
    frozen = spawn_worker(
        "frozen",
        concurrency=1,
        transport_options={"polling_interval": 600, "client_name": name},
        celery_options=["--without-mingle"],
    )
    client = make_service(start_worker=False)
    wait_until(
        lambda: any(
            c["name"] == name and c["cmd"] == "brpop" and "b" in c["flags"]
            for c in client.app.redis.client_list()
        ),
        timeout=30,
    )
    frozen.process.send_signal(signal.SIGSTOP)
    job = client.download(origin.url("/files/lost.bin"), tmp_path)
    broker_lists = [client.app.keys.broker_list(client.queue_id, level) for level in range(10)]
    wait_until(lambda: not any(client.app.redis.llen(key) for key in broker_lists))
    frozen.process.send_signal(signal.SIGKILL)
    frozen.process.wait(10)
    assert client.app.store.record(job.id).status == "waiting"
    spawn_worker("rescuer", concurrency=1, env={"DOWNLOADER_VISIBILITY_TIMEOUT": "10"})
    client.wait_for_job(job, timeout=60)
    assert job.status == DownloadJobStatus.COMPLETED
    assert hashlib.sha256((tmp_path / "lost.bin").read_bytes()).hexdigest() == digest
    assert len(origin.gets("/files/lost.bin")) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)  # two suites at once on two cores take minutes over it
def test_a_2000_part_job_over_two_workers_completes_once_with_every_byte(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    parts, digests = [], {}
    for i in range(2000):
        name = f"p{i:04}.bin"
        digests[name] = origin.add(name, os.urandom(1024))
        parts.append(RemoteModelFile(url=origin.url(f"/files/{name}"), path=Path("m") / name))
    for name in ("w1", "w2"):
        spawn_worker(name, concurrency=8)
    events: list[str] = []
    client = make_service(start_worker=False, event_bus=lambda name, _: events.append(name))
    job = client.multifile_download(parts, tmp_path)
    client.wait_for_job(job, timeout=300)
    assert job.status == DownloadJobStatus.COMPLETED
    assert events.count("multifile_download_complete") == 1
    record = client.app.store.record(job.id)
    assert record.parts_done == 2000 and record.bytes == 2000 * 1024
    fetched = Counter(r.path for r in origin.gets("/files/"))
    for name, digest in digests.items():
        assert hashlib.sha256((tmp_path / "m" / name).read_bytes()).hexdigest() == digest
        assert fetched[f"/files/{name}"] == 1
    records = client.app.store.records(p.id for p in job.download_parts)
    assert {r.worker.split("@")[0] for r in records} == {"w1", "w2"}
