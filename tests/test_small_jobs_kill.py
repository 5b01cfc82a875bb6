"""Issue 22's correctness check for the small-file path: 2,000 small jobs over two worker
processes, one SIGKILLed in the middle (a fresh one takes its place). Every file arrives
whole, every job ends exactly once, and each job's events come in order with none after its
end, as a follower of the queue's channel hears them.

The killed worker's running jobs come back when their two-second leases run out (the orphan
watch), the messages it had taken but not started when the visibility timeout brings them
back: the waits below are for those, with room for a machine shared with other suites.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.jobs import events as ev
from downloader.store.bus import EventPublisher, Subscription
from downloader.store.jobs import JobStore
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.test_event_order import MARKER, Collector, check_order, follow_pubsub
from tests.test_queue import wait_until

JOBS = 2000
WORKER_ENV = {
    "DOWNLOADER_LEASE_SECONDS": "2",
    "DOWNLOADER_VISIBILITY_TIMEOUT": "10",
}


def ended(store: JobStore, queue_id: str) -> int:
    counts = store.counts(queue_id)
    return counts.get("completed", 0) + counts.get("error", 0)


@pytest.mark.timeout(1200)  # two suites at once on two cores: minutes where alone it is 30 s
def test_2000_small_jobs_over_two_workers_one_killed_end_once_whole_and_in_order(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    digests = {f"s{i:04}.bin": origin.add(f"s{i:04}.bin", os.urandom(4096)) for i in range(JOBS)}
    client_redis = redis.Redis.from_url(redis_url)
    events = Collector(JobStore(client_redis, namespace))
    subscription = Subscription(client_redis, namespace, "default")
    listener = threading.Thread(target=follow_pubsub, args=(subscription, events), daemon=True)
    listener.start()

    workers = [spawn_worker(name, concurrency=8, env=WORKER_ENV) for name in ("k1", "k2")]
    client = make_service(start_worker=False)
    out = tmp_path / "out"
    out.mkdir()
    jobs = client.download_many(
        [{"source": origin.url(f"/files/{name}"), "dest": out} for name in digests]
    )
    store = client.app.store
    wait_until(lambda: ended(store, client.queue_id) >= JOBS // 3, timeout=600)
    workers[0].process.send_signal(signal.SIGKILL)
    workers[0].process.wait(30)
    killed_at = ended(store, client.queue_id)
    workers.append(spawn_worker("k3", concurrency=8, env=WORKER_ENV))
    wait_until(lambda: ended(store, client.queue_id) == JOBS, timeout=900)

    for worker in workers[1:]:
        worker.stop()  # no worker publishes any more: the marker comes after every event
    EventPublisher(client_redis, namespace).publish(MARKER, "default", 0)
    listener.join(60)
    assert events.done.is_set()
    assert killed_at < JOBS, "the kill came after the last job: nothing was in flight"

    final = [client.id_to_job(job.id) for job in jobs]
    assert [job.id for job in final if job.status != DownloadJobStatus.COMPLETED] == []
    for name, digest in digests.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    check_order(in_order(events), final)  # one end per job, its last event; the start first


def in_order(events: Collector) -> Collector:
    """The events without the `download_waiting` of jobs that waited for the fleet's limits
    (the killed worker's connection slots are held until their lease runs out): a job may
    wait before its start, which `check_order` does not expect of the jobs it sees."""
    kept = Collector(events.store)
    kept.events = [e for e in events.events if e["event"] != ev.DOWNLOAD_WAITING]
    return kept
