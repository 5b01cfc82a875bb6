"""The fleet's shared limits (issue 19), with real parts only: real Redis, real worker
processes and `downloader get`s, the real origin counting the GETs it answers at once."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService
from downloader.api import create_api
from downloader.jobs.limits import HostLimit, Limits, format_rate, parse_rate
from downloader.store.pacing import Held, SlotAsk, SlotOutcome
from downloader.worker.jobpacing import host_of
from tests.conftest import WorkerProcess, cli_env
from tests.origin import LoggedRequest, Origin
from tests.test_cli import run_cli, start_cli
from tests.test_queue import wait_until

KiB, MiB = 1 << 10, 1 << 20


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("500K", 500 * KiB),
        ("20M", 20 * MiB),
        ("1G", 1 << 30),
        ("100MiB", 100 * MiB),
        ("512KiB", 512 * KiB),
        ("1.5m", int(1.5 * MiB)),
        ("4096", 4096),
        ("20M/s", 20 * MiB),
        ("0", 0),
        (None, 0),
        (300, 300),
    ],
)
def test_rates_are_read_as_curl_reads_them(text: object, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "12X", "-5", "5 KB per s", "", "1e3"])
def test_a_bad_rate_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate") as raised:
        parse_rate(text)
    assert repr(text.strip()) in str(raised.value) or text.strip() in str(raised.value)


def test_limits_set_at_run_time_win_field_by_field_over_the_settings() -> None:
    defaults = Limits(
        bandwidth=parse_rate("200MiB"),
        hosts={"huggingface.co": {"connections": 8, "bandwidth": "100MiB"}},
    )
    merged = defaults.overlaid(
        {"host_connections": 4}, {"huggingface.co": HostLimit(requests_per_second=10)}
    )
    assert merged.for_host("huggingface.co") == HostLimit(
        connections=8, bandwidth=100 * MiB, requests_per_second=10
    )
    assert merged.for_host("elsewhere.example") == HostLimit(connections=4)
    assert format_rate(merged.bandwidth) == "200MiB/s"


def limits(env: dict[str, str], *args: str) -> dict:
    """`downloader limits [ARGS] --json`, which must succeed."""
    result = run_cli("limits", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def usage_of(report: dict, host: str) -> dict:
    return next((u for u in report["usage"] if u["host"] == host), {"connections": 0})


def test_a_bad_value_is_one_line_naming_it_and_changes_nothing(
    namespace: str, redis_url: str, origin: Origin, tmp_path: Path
) -> None:
    env = cli_env(namespace, redis_url)
    for args in (
        ["limits", "set", "--bandwidth", "fast"],
        ["limits", "set", "--host", "http://h:1", "--connections", "2"],
        ["limits", "set", "--host", "h", "--connections", "0"],
        ["get", origin.url("/files/x.bin"), "-d", str(tmp_path), "--limit-rate", "12X"],
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr
        assert any(word in last for word in ("'fast'", "'http://h:1'", "0", "'12X'")), last
    refused = run_cli("limits", env={**env, "DOWNLOADER_BANDWIDTH": "lots"})
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "downloader: error: DOWNLOADER_BANDWIDTH: not a rate: 'lots' (bytes per second: 500K, "
        "20M, 1G, 100MiB or a number of bytes; 0 is unlimited)"
    )
    assert limits(env)["limits"]["bandwidth"] == 0
    assert origin.gets("/files/x.bin") == []


def test_a_limit_set_from_the_cli_is_seen_by_every_process_until_unset(
    namespace: str, redis_url: str, make_service: Callable[..., DownloadQueueService]
) -> None:
    env = {**cli_env(namespace, redis_url), "DOWNLOADER_BANDWIDTH": "200MiB"}
    assert limits(env)["limits"]["bandwidth"] == 200 * MiB
    report = limits(
        env,
        "set",
        "--host",
        "HuggingFace.co",
        "--connections",
        "8",
        "--bandwidth",
        "100MiB",
        "--requests-per-second",
        "10",
    )
    assert report["limits"]["hosts"]["huggingface.co"] == {
        "connections": 8,
        "bandwidth": 100 * MiB,
        "requests_per_second": 10.0,
    }
    limits(env, "set", "--bandwidth", "40M", "--connections", "4")
    service = make_service(start_worker=False)  # another process's view: the same
    seen = service.limits.in_force()
    assert (seen.bandwidth, seen.host_connections) == (40 * MiB, 4)
    assert seen.for_host("huggingface.co").connections == 8
    text = run_cli("limits", env=env).stdout
    assert "fleet bandwidth: 40MiB/s" in text and "huggingface.co" in text
    after = limits(env, "unset")
    assert after["limits"]["bandwidth"] == 200 * MiB  # the setting again
    assert limits(env, "unset", "--host", "huggingface.co")["limits"]["hosts"] == {}


def test_limits_through_rest_are_validated_and_behind_the_key(
    namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOWNLOADER_API_KEY", "k" * 32)
    with TestClient(create_api()) as api:
        assert api.get("/api/v1/limits").status_code == 401
        api.headers["X-API-Key"] = "k" * 32
        bad = api.put("/api/v1/limits", json={"bandwidth": "fast"})
        assert bad.status_code == 422
        said = bad.json()
        assert said["errors"][0]["loc"] == ["body", "bandwidth"], said
        assert "not a rate" in said["errors"][0]["msg"] and "fast" not in str(said), said
        assert api.put("/api/v1/limits", json={"requests_per_second": 5}).status_code == 422
        put = api.put(
            "/api/v1/limits", json={"host": "127.0.0.2", "connections": 3, "bandwidth": "20M"}
        )
        assert put.status_code == 200, put.text
        assert put.json()["limits"]["hosts"]["127.0.0.2"]["bandwidth"] == 20 * MiB
        env = cli_env(namespace, redis_url)
        assert limits(env)["limits"]["hosts"]["127.0.0.2"]["connections"] == 3
        gone = api.delete("/api/v1/limits", params={"host": "127.0.0.2"})
        assert gone.json()["limits"]["hosts"] == {}
        paths = api.get("/openapi.json").json()["paths"]
        assert {"get", "put", "delete"} <= set(paths["/api/v1/limits"])


@pytest.fixture
def second_host() -> Iterator[Origin]:
    server = Origin("127.0.0.2").start()
    yield server
    server.stop()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Fleet:
    """What most tests here set up: a client of the test's namespace (no worker of its
    own), worker processes as the test spawns them, the origin, and where files land."""

    client: DownloadQueueService
    spawn: Callable[..., WorkerProcess]
    origin: Origin
    dest: Path

    def files(self, prefix: str, count: int, size: int) -> dict[str, str]:
        """`count` random files `<prefix><i>.bin` of `size` bytes served: name to SHA-256."""
        names = (f"{prefix}{i}.bin" for i in range(count))
        return {name: self.origin.add(name, os.urandom(size)) for name in names}

    def download(self, files: dict[str, str], query: str = "") -> list[DownloadJob]:
        """A job for each file, its URL with `query` (e.g. `?rate=...`)."""
        return [
            self.client.download(self.origin.url(f"/files/{n}{query}"), self.dest) for n in files
        ]

    def finish(self, jobs: list[DownloadJob], files: dict[str, str]) -> None:
        """Every job completed, and every file holds what the origin served."""
        for job in jobs:
            self.client.wait_for_job(job, timeout=60)
            assert job.status == DownloadJobStatus.COMPLETED, job.error
        assert all(_sha(self.dest / name) == digest for name, digest in files.items())


@pytest.fixture
def fleet(
    origin: Origin,
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> Fleet:
    return Fleet(make_service(start_worker=False), spawn_worker, origin, tmp_path)


def test_two_workers_and_an_embedded_get_share_a_host_cap_segments_included(
    namespace: str,
    redis_url: str,
    origin: Origin,
    second_host: Origin,
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    segmented = {"DOWNLOADER_SEGMENT_THRESHOLD": str(MiB), "DOWNLOADER_SEGMENTS": "4"}
    env = {**cli_env(namespace, redis_url), **segmented}
    limits(env, "set", "--host", "127.0.0.1", "--connections", "3")
    digests = {f"f{i}.bin": origin.add(f"f{i}.bin", os.urandom(2 * MiB)) for i in range(7)}
    free = second_host.add("free.bin", os.urandom(2 * MiB))
    for name in ("w1", "w2"):
        spawn_worker(name, concurrency=3, env=segmented)
    client = make_service(start_worker=False)
    (tmp_path / "w").mkdir()
    jobs = [
        client.download(origin.url(f"/files/f{i}.bin?rate={MiB}"), tmp_path / "w") for i in range(4)
    ]
    other = client.download(second_host.url(f"/files/free.bin?rate={MiB}"), tmp_path / "w")
    get = start_cli(
        "get",
        "--worker",
        "--queue",
        "mine",
        *(origin.url(f"/files/f{i}.bin?rate={MiB}") for i in range(4, 7)),
        "-d",
        str(tmp_path / "g"),
        env=env,
    )
    _, err = get.communicate(timeout=120)
    assert get.returncode == 0, err
    for job in [*jobs, other]:
        client.wait_for_job(job, timeout=120)
        assert job.status == DownloadJobStatus.COMPLETED, job.error
    for i in range(7):
        where = tmp_path / ("w" if i < 4 else "g") / f"f{i}.bin"
        assert _sha(where) == digests[f"f{i}.bin"]
    assert _sha(tmp_path / "w" / "free.bin") == free
    assert 1 <= origin.peak <= 3, origin.peak  # the fleet's, the get's connections included
    assert second_host.peak == 4  # its segments were not held back by the other host's cap
    assert "waiting for a connection to 127.0.0.1 (" in err, err
    # Metrics by host: the named one, the other under `other`; the get's last bytes too.
    wait_until(lambda: client.limits.counters().get("bytes:127.0.0.1", 0) >= 7 * 2 * MiB, 20)
    wait_until(lambda: client.limits.counters().get("bytes:other", 0) >= 2 * MiB, 20)
    assert len(origin.gets("/files/")) >= 7 * 4  # every segment asked on its own connection


def test_a_sigkilled_workers_slots_come_back_within_the_lease(
    namespace: str,
    redis_url: str,
    origin: Origin,
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = cli_env(namespace, redis_url)
    lease = {"DOWNLOADER_SLOT_LEASE_SECONDS": "3"}
    limits(env, "set", "--host", "127.0.0.1", "--connections", "1")
    origin.add("held.bin", b"held" * 1000)
    data = origin.add("next.bin", os.urandom(300 * KiB))
    doomed = spawn_worker("doomed", concurrency=2, env=lease)
    client = make_service(start_worker=False)
    client.download(origin.url("/files/held.bin?hold=never"), tmp_path)
    wait_until(lambda: usage_of(limits(env), "127.0.0.1")["connections"] == 1, 30)
    doomed.process.kill()
    doomed.process.wait(10)
    began = time.monotonic()
    wait_until(lambda: usage_of(limits(env), "127.0.0.1")["connections"] == 0, 30)
    assert time.monotonic() - began < 3 + 10  # the lease, and the workers' 1 s rounds
    spawn_worker("heir", concurrency=2, env=lease)
    job = client.download(origin.url("/files/next.bin"), tmp_path)
    client.wait_for_job(job, timeout=60)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert _sha(tmp_path / "next.bin") == data
    origin.release("never")


def test_a_cap_set_by_another_process_is_followed_by_a_running_worker_within_2_s(
    fleet: Fleet, origin: Origin
) -> None:
    fleet.client.limits.set(host="127.0.0.1", connections=3)
    fleet.spawn("w1", concurrency=6)
    files = fleet.files("s", 6, 512 * KiB)
    jobs = fleet.download(files, f"?rate={512 * KiB}")
    wait_until(lambda: origin.active >= 1, 30)
    fleet.client.limits.set(host="127.0.0.1", connections=1)  # this process, not the worker's
    changed = time.monotonic()
    fleet.finish(jobs, files)
    gets = origin.gets("/files/s")
    assert origin.peak <= 3
    # From 2 s after the change on, every connection opened alone.
    for late in (r for r in gets if r.began >= changed + 2):
        others = [
            r
            for r in gets
            if r is not late and r.began <= late.began and (r.ended or 1e18) > late.began
        ]
        assert others == [], (late.path, [r.path for r in others])
    assert any(r.began >= changed + 2 for r in gets)  # the test saw connections after it


def test_a_jobs_own_limit_rate_inside_a_fleet_limit(
    namespace: str, redis_url: str, origin: Origin, tmp_path: Path
) -> None:
    env = cli_env(namespace, redis_url)
    limits(env, "set", "--bandwidth", "64M")
    digest = origin.add("paced.bin", os.urandom(768 * KiB))
    began = time.monotonic()
    result = run_cli(
        "get",
        "--worker",
        "--queue",
        "paced",
        "-q",
        origin.url("/files/paced.bin"),
        "-d",
        str(tmp_path),
        "--limit-rate",
        "256K",
        env=env,
        timeout=120,
    )
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert _sha(tmp_path / "paced.bin") == digest
    assert took >= 2.0, took  # 768 KiB at 256 KiB/s is 3 s; generous: no upper bound


def test_a_429_storm_pauses_the_host_for_the_fleet_and_costs_no_retry(
    namespace: str, redis_url: str, fleet: Fleet, origin: Origin
) -> None:
    files = fleet.files("r", 4, 64 * KiB)
    storm: dict[str, float] = {}
    refused: list[float] = []

    def gate(request: LoggedRequest, query: dict[str, str]) -> tuple[int, dict] | None:
        now = time.monotonic()
        until = storm.setdefault("until", now + 3)
        if now < until:
            refused.append(now)
            return 429, {"Retry-After": "2"}
        return None

    origin.gate = gate
    fleet.spawn("w1", concurrency=4, env={"DOWNLOADER_MAX_RETRIES": "0"})  # none to spend
    jobs = fleet.download(files)
    fleet.finish(jobs, files)
    # The first requests come before any pause; then each pause (2 s, twice within the
    # 3 s storm) holds every connection of the fleet, and after it one connection probes
    # the host before the others follow: one request per pause.
    assert 1 <= len(refused) <= len(jobs) + 1, refused
    assert len([t for t in refused if t - refused[0] > 1.0]) <= 1, refused
    assert any(job.attempts >= 2 for job in jobs)  # tried again, though it had no retry
    env = cli_env(namespace, redis_url)
    wait_until(lambda: fleet.client.limits.counters().get("pauses:other", 0) >= 1, 10)
    with TestClient(create_api()) as api:
        text = api.get("/metrics").text
    assert 'downloader_host_pauses_total{host="other"}' in text
    assert 'downloader_host_connections{host="other"} 0.0' in text
    assert limits(env)["usage"][0]["host"] == "127.0.0.1"


def test_a_lower_priority_number_gets_the_next_slot_and_a_waiting_job_says_why(
    fleet: Fleet, origin: Origin
) -> None:
    client, dest = fleet.client, fleet.dest
    client.limits.set(host="127.0.0.1", connections=1)
    fleet.spawn("w1", concurrency=3)
    origin.add("first.bin", b"1" * 1000)
    files = {"late.bin": origin.add("late.bin", b"2" * 1000)}
    files["urgent.bin"] = origin.add("urgent.bin", b"3" * 1000)
    holder = client.download(origin.url("/files/first.bin?hold=slot"), dest)
    wait_until(lambda: origin.active == 1, 30)
    low = client.download(origin.url("/files/late.bin"), dest, priority=50)
    reason = "waiting for a connection to 127.0.0.1 (1 of 1 in use)"
    wait_until(lambda: low.waiting_for == reason, 30)
    high = client.download(origin.url("/files/urgent.bin"), dest, priority=0)
    wait_until(lambda: high.waiting_for == reason, 30)
    assert client.admin.record(low.id).waiting_for == reason  # in its record too
    origin.release("slot")
    fleet.finish([holder, low, high], files)
    order = [r.path for r in origin.gets("/files/") if r.path != "/files/first.bin"]
    assert order == ["/files/urgent.bin", "/files/late.bin"]
    assert low.waiting_for is None and high.waiting_for is None


def test_a_jobs_own_rate_is_kept_in_its_record_and_each_parts(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    from downloader import RemoteModelFile

    client = make_service(start_worker=False)
    single = client.download(origin.url("/files/a.bin"), tmp_path / "a", bandwidth="500K")
    many = client.download_many(
        [{"source": origin.url("/files/b.bin"), "dest": tmp_path / "b", "bandwidth": "1M"}]
    )
    parts = [RemoteModelFile(url=origin.url(f"/files/{n}"), path=n) for n in ("c", "d")]
    multi = client.multifile_download(parts, tmp_path / "m", bandwidth="2MiB")
    rates = {
        job.id: client.admin.record(job.id).bandwidth
        for job in (single, *many, *multi.download_parts)
    }
    assert list(rates.values()) == [500 * KiB, MiB, 2 * MiB, 2 * MiB]
    with pytest.raises(ValueError, match="not a rate: 'quick'"):
        client.download(origin.url("/files/e.bin"), tmp_path / "e", bandwidth="quick")


def test_a_hosts_requests_per_second_spread_its_requests(fleet: Fleet, origin: Origin) -> None:
    fleet.client.limits.set(host="127.0.0.1", requests_per_second=2)
    fleet.spawn("w1", concurrency=6)
    files = fleet.files("q", 6, KiB)
    fleet.finish(fleet.download(files), files)
    began = sorted(r.began for r in origin.gets("/files/q"))
    assert len(began) == 6
    # A bucket of two tokens refilled at 2/s: the last 4 requests wait 2 s between them at
    # least (a lower bound only: a loaded machine is slower, never faster).
    assert began[-1] - began[0] >= 1.5, began
    for first, later in zip(began, began[4:], strict=False):
        assert later - first >= 1.0, began  # any five span 1.5 s when granted; jitter aside


def test_a_slot_given_back_by_a_collection_inside_a_report_does_not_hang_the_pacing(
    namespace: str, redis_url: str
) -> None:
    """A response nobody closed gives its slot back from a finalizer, which a garbage
    collection runs in whatever thread allocates: here inside the pacing thread's own report
    (it held its lock there, and the release waited for that lock for ever)."""
    import gc
    import threading

    import redis

    from downloader.config import Settings
    from downloader.store.keys import Keys
    from downloader.store.pacing import Held
    from downloader.worker.pacing import ProcessPacing

    client = redis.Redis.from_url(redis_url)
    pacing = ProcessPacing(client, Settings(redis_url=redis_url, namespace=namespace))
    slot = Held(host="127.0.0.1", holder=pacing.holder())
    pacing.fleet.take_slot(slot, lease=10.0, cap=4, requests_per_second=0, rank=0, patience=1)
    pacing.hold(slot)
    released: list[str] = []

    def collecting(phase: str, info: dict[str, int]) -> None:
        # A collection while the report holds the pacing's lock (its counters' swap
        # allocates), in the pacing thread: the worst moment for a finalizer.
        if phase == "start" and not released and pacing._lock.locked():
            released.append(phase)
            pacing.release(slot)  # what weakref.finalize(response, slot.release) does

    def report() -> None:
        threshold = gc.get_threshold()
        gc.callbacks.append(collecting)
        gc.set_threshold(1)  # the next allocation collects
        try:
            pacing.report()
        finally:
            gc.set_threshold(*threshold)
            gc.callbacks.remove(collecting)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    reporter.join(timeout=30)
    assert not reporter.is_alive(), "the pacing deadlocked on its own lock"
    assert released, "no collection ran inside the report"
    assert client.zcard(Keys(namespace).host_slots("127.0.0.1")) == 0
    client.close()


def test_small_files_under_a_cap_of_one_hand_their_slot_on_with_their_end(
    fleet: Fleet, origin: Origin
) -> None:
    # A small file's one connection closes after its rename and its slot goes back with the
    # job's end. With a lease of a minute, a slot the end forgot would hold the host for that
    # long: the next job could not start, and the usage would not come back to 0.
    fleet.client.limits.set(host="127.0.0.1", connections=1)
    fleet.spawn("w1", concurrency=4, env={"DOWNLOADER_SLOT_LEASE_SECONDS": "60"})
    files = fleet.files("small", 12, 20 * KiB)
    jobs = fleet.download(files)
    fleet.finish(jobs, files)
    assert origin.peak == 1
    report = fleet.client.limits.report()
    assert [u.connections for u in report.usage if u.host == "127.0.0.1"] in ([], [0]), report


@pytest.mark.parametrize(
    "source",
    [
        "http://127.0.0.2:8080/files/a.bin",
        "https://user:secret@Mirror.Example.ORG/x/y?z=1#f",
        "http://[::1]:9000/files/v6.bin",
        "HTTPS://CDN.example.com",
    ],
)
def test_a_claim_takes_the_first_slot_of_the_host_python_reads_in_the_source(
    fleet: Fleet, source: str
) -> None:
    # The claim script reads the host itself; a slot it took under another name than the
    # worker's `host_of` would be given back and asked for again (a round trip lost).
    job = fleet.client.download(source, fleet.dest)
    store = fleet.client.app.store
    record = store.record(job.id)
    assert record is not None and record.source
    ask = SlotAsk("holder-1", 30, 2, json.dumps({"*": [16, 0]}))
    claim = store.claim(job.id, "test#1", 30, None, ask)
    assert claim.slot is not None, claim
    held, answer = claim.slot
    assert held == Held(host_of(record.source), "holder-1")
    assert answer.outcome is SlotOutcome.TAKEN and answer.in_use == 1
    # The cap the caller passed holds: a second claim's try (another job, same host) with a
    # cap of 1 is refused and leaves nobody waiting in the host's line.
    other = fleet.client.download(source, fleet.dest / "other")
    ask = SlotAsk("holder-2", 30, 2, json.dumps({"*": [1, 0]}))
    refused = store.claim(other.id, "test#2", 30, None, ask)
    assert refused.slot is not None and refused.slot[1].outcome is SlotOutcome.FULL
    assert store.redis.zcard(store.keys.host_waiters(held.host)) == 0
