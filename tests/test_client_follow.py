"""A client follows its jobs on one channel of its own (issue 22): the records name it, the
workers' events go there, no job costs a subscription, and a live job ends from its event
as its record says; a listener that redis-py reconnects asks the store what it missed."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService
from downloader.config import Settings
from downloader.store.bus import RESUBSCRIBED, Subscription
from downloader.store.connection import RedisTarget
from downloader.store.keys import Keys
from downloader.store.pushes import plain_socket
from tests.origin import Origin
from tests.redis_server import RedisServer


@pytest.fixture
def redis_url(private: RedisServer) -> str:
    """A Redis of these tests alone: its pub/sub channels and clients are theirs."""
    return private.url


def test_jobs_are_followed_on_the_clients_channel_and_end_as_their_records_say(
    make_service: Callable[..., DownloadQueueService],
    private: RedisServer,
    namespace: str,
    origin: Origin,
    tmp_path: Path,
) -> None:
    quiet = make_service(start_worker=False, follow=False)
    service = make_service(start_worker=False)
    seen: list[tuple[str, int]] = []

    def note(name: str) -> Callable[[DownloadJob], None]:
        return lambda job: seen.append((name, job.id))

    for i in range(6):
        origin.add(f"f{i}.bin", os.urandom(10_000 + i))
    urls = [origin.url(f"/files/f{i}.bin") for i in range(6)]
    jobs = [
        service.download(url, tmp_path, on_start=note("start"), on_complete=note("complete"))
        for url in urls
    ]
    forgotten = quiet.download(urls[0], tmp_path / "quiet")
    keys, redis = Keys(namespace), private.client()
    records = service.app.store.records([job.id for job in jobs])
    followers = {record.follower for record in records}
    assert len(followers) == 1 and None not in followers
    assert service.app.store.record(forgotten.id).follower is None
    # One subscription for the client, none per job.
    (follower,) = followers
    assert dict(redis.pubsub_numsub(keys.client_channel(follower))) == {
        keys.client_channel(follower).encode(): 1
    }
    assert redis.pubsub_channels(f"{namespace}:job-events:*") == []

    make_service(max_parallel_dl=3)  # a worker: it starts them now
    for job in jobs:
        service.wait_for_job(job, timeout=60)

    for job, record in zip(jobs, service.app.store.records([j.id for j in jobs]), strict=True):
        assert job.status == record.status == DownloadJobStatus.COMPLETED
        assert (job.bytes, job.total_bytes) == (record.bytes, record.total_bytes)
        assert (job.job_ended, job.attempts) == (record.job_ended, record.attempts)
        assert job.download_path == record.download_path
        assert [name for name, job_id in seen if job_id == job.id] == ["start", "complete"]


def test_a_listener_reconnected_by_redis_py_finishes_a_job_that_ended_unheard(
    make_service: Callable[..., DownloadQueueService],
    private: RedisServer,
    tmp_path: Path,
) -> None:
    service = make_service(start_worker=False)
    completed: list[DownloadJob] = []
    job = service.download("http://127.0.0.1:9/never.bin", tmp_path, on_complete=completed.append)
    # Its end reaches the store and no subscriber (as when the listener's connection drops
    # the moment a worker publishes it).
    assert service.app.store.finish(job.id, DownloadJobStatus.COMPLETED, bytes=0)
    assert job.status == DownloadJobStatus.WAITING
    redis = private.client()
    for client in redis.client_list(_type="pubsub"):
        redis.client_kill_filter(_id=client["id"])

    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED and completed == [job]


def test_a_clients_channel_read_off_its_socket_gets_every_event_whole_and_in_order(
    private: RedisServer,
) -> None:
    """A burst larger than one read (events cut across reads), a health check's answer among
    them, then the connection killed: every event arrives once, in order, and the
    subscription comes back by itself, saying so, and hears what follows."""
    client = RedisTarget(private.url, Settings()).riding_client()  # as a client's own
    keys = Keys("follow-test")
    channel = keys.client_channel("c1")
    subscription = Subscription(client, "follow-test", poll=0.2, client_channel=channel)
    assert plain_socket(subscription.pubsub) is not None  # read off the socket, not by redis-py
    events = iter(subscription)
    pad = "x" * 3000  # 400 events of ~3 KB: some 20 reads of `pushes.READ_SIZE`
    for first in (0, 200):
        pipe = client.pipeline(transaction=False)
        for n in range(first, first + 200):
            pipe.publish(channel, json.dumps({"event": "e", "n": n, "pad": pad}))
        pipe.execute()
        if first == 0:
            subscription.pubsub.ping()  # its answer comes among the events and is not one

    heard = [payload["n"] for payload in take(events, 400)]
    assert heard == list(range(400))

    for info in client.client_list(_type="pubsub"):
        client.client_kill_filter(_id=info["id"])
    assert next(payload for payload in events if payload is not None) == {"event": RESUBSCRIBED}
    client.publish(channel, json.dumps({"event": "after", "n": 400}))
    assert [payload["n"] for payload in take(events, 1)] == [400]
    subscription.close()


def take(events: Iterator[dict[str, Any] | None], count: int) -> list[dict[str, Any]]:
    """The next `count` events (quiet polls skipped), failing after 20 s of nothing."""
    taken: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while len(taken) < count:
        assert time.monotonic() < deadline, f"heard {len(taken)} of {count}"
        payload = next(events)
        if payload is not None:
            taken.append(payload)
    return taken


def test_a_quiet_clients_channel_is_health_checked_once_per_interval(
    private: RedisServer,
) -> None:
    """Read off the socket, a quiet subscription still sends redis-py's health check (a PING
    once its interval passes with nothing read), once per interval, not once per poll, and
    its answer never shows as an event."""
    client = RedisTarget(private.url, Settings()).client(health_check_interval=1)
    channel = Keys("follow-test").client_channel("c2")
    subscription = Subscription(client, "follow-test", poll=0.05, client_channel=channel)
    assert plain_socket(subscription.pubsub) is not None
    private.client().config_resetstat()
    events = iter(subscription)
    started = time.monotonic()
    while time.monotonic() - started < 3.2:  # some 60 quiet polls, 3 intervals
        assert next(events) is None
    pings = private.client().info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    assert 1 <= pings <= 4
    client.publish(channel, json.dumps({"event": "after"}))
    assert take(events, 1) == [{"event": "after"}]
    subscription.close()


def test_a_client_closing_while_its_redis_is_gone_says_nothing_of_its_event_stream(
    make_service: Callable[..., DownloadQueueService],
    private: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service closed while its listener rides out a Redis that is gone (a `get` ending as
    its Redis restarts): the listener ends without a warning or a traceback, since losing
    the stream is what closing does."""
    monkeypatch.setenv("DOWNLOADER_REDIS_RIDE_OUT", "1")
    service = make_service(start_worker=False)
    service.download("http://127.0.0.1:9/never.bin", tmp_path)
    listener = service._live.listener
    assert listener is not None
    private.kill()
    with caplog.at_level(logging.WARNING, logger="downloader"):
        service.close()
        listener.join(30)
        assert not listener.is_alive()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("downloader")] == []
    private.start()  # back (empty) for the namespace's clean-up
