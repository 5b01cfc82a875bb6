"""What a REST caller can make the API hold: nothing that grows with the names and numbers it
sends. A Redis of the test's own (so its client list is the API's alone) and `downloader api`
as a process of its own (so its threads and memory are the API's alone)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from fastapi.testclient import TestClient

from downloader import DownloadQueueService
from downloader.api import create_api
from downloader.store.pauses import MAX_PAUSED
from tests.test_api import ApiProcess, start_api  # noqa: F401 (start_api: a fixture)
from tests.test_faults import own_redis  # noqa: F401 (a fixture)
from tests.test_queue import wait_until

KEY = "bounds-key"
HEADERS = {"X-API-Key": KEY}
MiB = 1 << 20
BIG = (2**63, 2**64, 10**30)
"""Past the int64 Redis keeps ids and offsets in."""


@pytest.fixture
def redis_url(own_redis: tuple[str, Callable[[], None]]) -> str:  # noqa: F811
    """Every fixture of this module (the namespace, `downloader api`) on the test's own Redis."""
    return own_redis[0]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str) -> Path:
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


def _threads(api: ApiProcess) -> int:
    status = Path(f"/proc/{api.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def _clients(probe: redis.Redis) -> int:
    """Connections to the test's own Redis, but the probe's own."""
    return len(probe.client_list()) - 1


def _q(queue: str) -> str:
    return f"/api/v1/queue/{queue}"


# -- case 3: a caller's queue ids cost nothing that lasts --------------------------------------


@pytest.mark.slow
def test_five_hundred_queue_ids_leave_threads_redis_clients_and_memory_flat(
    start_api: Callable[..., ApiProcess],  # noqa: F811
    redis_url: str,
    root: Path,
) -> None:
    api = start_api(key=KEY)
    probe = redis.Redis.from_url(redis_url)
    session = requests.Session()
    session.headers.update(HEADERS)

    def touch(queue: str) -> None:
        """Each route that takes a queue id from the path and writes: enqueue, cancel, clear,
        and the read of its status."""
        answer = session.post(
            f"{api.url}{_q(queue)}/enqueue",
            json={"source": "http://127.0.0.1:9/nothing.bin", "dest": "d"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        item = answer.json()["items"][0]["item_id"]
        answer = session.post(f"{api.url}{_q(queue)}/i/{item}/cancel", timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text
        answer = session.delete(f"{api.url}{_q(queue)}/clear", timeout=30)
        assert answer.status_code == 200, answer.text
        assert session.get(f"{api.url}{_q(queue)}/status", timeout=30).status_code == 200

    for i in range(20):  # the pools, the thread pool and the allocator settle
        touch(f"warm{i}")
    threads, clients, rss = _threads(api), _clients(probe), api.memory_kib("VmRSS")
    for i in range(500):
        touch(f"junk{i}")
    grown = {
        "threads": _threads(api) - threads,
        "redis clients": _clients(probe) - clients,
        "rss KiB": api.memory_kib("VmRSS") - rss,
    }
    assert grown["threads"] <= 2 and grown["redis clients"] <= 2, grown
    assert grown["rss KiB"] < 4 * 1024, grown
    answer = session.get(f"{api.url}{_q('default')}/status", timeout=10)
    assert answer.status_code == 200, answer.text


def _open_stream(port: int, queue: str) -> socket.socket:
    """An event stream on a raw socket, read up to its `: subscribed` line."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"GET {_q(queue)}/events HTTP/1.1\r\nHost: api\r\nX-API-Key: {KEY}\r\n\r\n".encode()
    )
    _read_until(sock, b": subscribed")
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        data = sock.recv(65536)
        assert data, f"the stream ended before {marker!r}: {seen[-500:]!r}"
        seen += data
    return seen


def test_two_hundred_event_streams_share_one_redis_connection_and_the_next_is_503(
    start_api: Callable[..., ApiProcess],  # noqa: F811
    redis_url: str,
    namespace: str,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOWNLOADER_API_MAX_EVENT_STREAMS", "200")
    api = start_api(key=KEY)
    probe = redis.Redis.from_url(redis_url)
    assert requests.get(f"{api.url}{_q('warm')}/status", headers=HEADERS, timeout=30).ok
    threads, clients = _threads(api), _clients(probe)
    streams = [_open_stream(api.port, f"s{i % 50}") for i in range(200)]
    try:
        grown = {"threads": _threads(api) - threads, "redis clients": _clients(probe) - clients}
        assert grown["threads"] <= 2 and grown["redis clients"] <= 1, grown

        refused = requests.get(f"{api.url}{_q('s0')}/events", headers=HEADERS, timeout=30)
        assert refused.status_code == 503, refused.text
        detail = refused.json()["detail"]
        assert "200" in detail and "DOWNLOADER_API_MAX_EVENT_STREAMS" in detail

        # Each message goes to the clients of its queue, and to no other.
        event = {"event": "download_started", "id": 7, "queue_id": "s1"}
        probe.publish(f"{namespace}:events:s1", json.dumps(event))
        for i in range(1, 200, 50):
            seen = _read_until(streams[i], b"event: download_started")
            assert json.dumps(event).encode() in seen
        streams[2].settimeout(1)
        with pytest.raises(TimeoutError):
            streams[2].recv(65536)
        assert requests.get(f"{api.url}{_q('s0')}/status", headers=HEADERS, timeout=10).ok
    finally:
        for sock in streams:
            sock.close()

    channels = [f"{namespace}:events:s{i}" for i in range(50)]
    wait_until(lambda: not any(n for _, n in probe.pubsub_numsub(*channels)), timeout=30)
    _open_stream(api.port, "s0").close()  # the slots came back


def test_a_client_that_stops_reading_is_dropped_and_told_so(
    start_api: Callable[..., ApiProcess],  # noqa: F811
    redis_url: str,
    namespace: str,
    root: Path,
) -> None:
    api = start_api(key=KEY)
    probe = redis.Redis.from_url(redis_url)
    slow = _open_stream(api.port, "busy")  # reads nothing more until the end
    rss = api.memory_kib("VmRSS")
    api.reset_peak()
    published, batch = 2000, 100
    payload = json.dumps({"event": "download_progress", "pad": "x" * 16384})
    received = [0]

    def read(lines: Iterator[str]) -> None:
        for line in lines:
            if line == "event: download_progress":
                received[0] += 1
                if received[0] == published:
                    return

    with requests.get(
        f"{api.url}{_q('busy')}/events", headers=HEADERS, stream=True, timeout=60
    ) as fast:
        lines = fast.iter_lines(decode_unicode=True)
        assert next(lines) == ": subscribed"
        reader = threading.Thread(target=read, args=(lines,), daemon=True)
        reader.start()
        for sent in range(batch, published + 1, batch):  # as fast as a reader keeps up
            for _ in range(batch):
                probe.publish(f"{namespace}:events:busy", payload)
            wait_until(lambda sent=sent: received[0] >= sent, timeout=60)
        reader.join(10)
    assert received[0] == published  # a slow client holds no other back

    seen = b""
    slow.settimeout(60)
    while data := slow.recv(1 << 20):
        seen += data
    text = seen.decode(errors="replace")
    assert text.count("event: download_progress") < published
    assert "event: error" in text and "too slow" in text, text[-500:]
    assert api.memory_kib("VmHWM") - rss < 32 * 1024


# -- case 3: queue ids are checked wherever they come in ----------------------------------------


@pytest.fixture
def api(root: Path) -> Iterator[TestClient]:
    with TestClient(create_api()) as client:
        yield client


@pytest.mark.parametrize("queue", ["a" * 101, "a:b", "a b", "a%2Fb", "é"])
def test_a_queue_id_out_of_bounds_is_422_naming_the_rule(api: TestClient, queue: str) -> None:
    for method, route in (("get", "status"), ("delete", "clear"), ("get", "events")):
        answer = api.request(method, f"{_q(queue)}/{route}")
        assert answer.status_code in (404, 422), answer.text  # `a%2Fb`: no such route
        if answer.status_code == 422:
            assert "letters, digits" in answer.text, answer.text


def test_a_queue_id_out_of_bounds_is_refused_by_the_service_and_the_cli(
    namespace: str, redis_url: str, tmp_path: Path
) -> None:
    for queue in ("a" * 101, "a:b", "", "a\nb"):
        with pytest.raises(ValueError, match="letters, digits"):
            DownloadQueueService(redis_url=redis_url, queue_id=queue, start_worker=False)
    env = {"DOWNLOADER_REDIS_URL": redis_url, "DOWNLOADER_NAMESPACE": namespace}
    done = subprocess.run(
        [sys.executable, "-m", "downloader", "list", "--queue", "a:b"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert done.returncode == 2 and "letters, digits" in done.stderr, done
    assert "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "downloader", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "DOWNLOADER_QUEUE_ID": "a:b"},
        timeout=60,
    )
    assert done.returncode != 0 and "DOWNLOADER_QUEUE_ID" in done.stderr, done
    assert "Traceback" not in done.stderr


# -- case 5: every number a caller sends is bounded by the schema -------------------------------


def test_numbers_past_int64_are_4xx_never_5xx(api: TestClient) -> None:
    for big in BIG:
        for query in ({"offset": big}, {"cursor": big}, {"limit": big}, {"cursor": -big}):
            answer = api.get(f"{_q('default')}/list", params=query)
            assert answer.status_code == 422, (query, answer.text)
        for route in (f"i/{big}", f"i/{big}/cancel"):
            method = "post" if route.endswith("cancel") else "get"
            answer = api.request(method, f"{_q('default')}/{route}")
            assert answer.status_code == 422, (route, answer.text)
        for body in (
            {"source": "http://127.0.0.1:9/x", "dest": "d", "priority": big},
            {"parts": [{"url": "http://127.0.0.1:9/x", "path": "x", "size": big}], "dest": "d"},
            {"items": [{"source": "http://127.0.0.1:9/x", "dest": "d", "priority": -big}]},
        ):
            answer = api.post(f"{_q('default')}/enqueue", json=body)
            assert answer.status_code == 422, (body, answer.text)
    assert api.get(f"{_q('default')}/list").json()["total"] == 0


def test_the_bounds_are_in_the_openapi_document(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    listing = document["paths"]["/api/v1/queue/{queue_id}/list"]["get"]["parameters"]
    bounds = {p["name"]: p["schema"] for p in listing if p["in"] == "query"}
    for name in ("offset", "limit"):
        assert "maximum" in bounds[name] and "minimum" in bounds[name], bounds[name]
    cursor = bounds["cursor"]["anyOf"][0]
    assert cursor["maximum"] == 2**63 - 1 and cursor["minimum"] == 0, cursor
    item = document["paths"]["/api/v1/queue/{queue_id}/i/{item_id}"]["get"]["parameters"]
    (item_id,) = [p["schema"] for p in item if p["name"] == "item_id"]
    assert item_id["maximum"] == 2**63 - 1, item_id
    for form in ("SourceForm", "PartsForm", "RepoForm", "BatchItem"):
        priority = document["components"]["schemas"][form]["properties"]["priority"]
        assert "maximum" in priority and "minimum" in priority, (form, priority)


def test_pausing_is_bounded_and_resuming_frees_a_place(api: TestClient, redis_url: str) -> None:
    """A pause outlives every job, so it is the one name a caller could leave in Redis for
    ever: at most `MAX_PAUSED` queues are paused at once."""
    for i in range(MAX_PAUSED):
        assert api.post(f"{_q(f'p{i}')}/processor/pause").status_code == 200
    refused = api.post(f"{_q('one-more')}/processor/pause")
    assert refused.status_code == 409 and "resume one first" in refused.json()["detail"]
    assert api.post(f"{_q('p0')}/processor/pause").status_code == 200  # paused already: fine
    assert api.post(f"{_q('p0')}/processor/resume").status_code == 200
    assert api.post(f"{_q('one-more')}/processor/pause").json()["is_paused"]
