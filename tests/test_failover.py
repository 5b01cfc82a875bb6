"""Redis fails over under a running queue: a primary, a replica and three sentinels of the
test's own (`tests.redis_server.Replication`), real `downloader worker` processes, the REST
API, a `downloader events` subscriber and a client waiting on its jobs; the primary is
SIGKILLed mid-run, the sentinels promote the replica, and later the new primary is killed too.
Nothing acknowledged is lost, nothing runs twice, and everyone follows the new primary.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from downloader import DownloadQueueService, NotReplicatedError, RemoteModelFile
from downloader.api import create_api
from downloader.config import Settings
from downloader.store.connection import RedisTarget
from tests.children import popen, stop_process
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.redis_server import Replication, free_port, tls_binary

pytestmark = pytest.mark.skipif(tls_binary() is None, reason="needs the machine's Redis 7")

KiB = 1024
SMALL = 300
LARGE = 3


@pytest.fixture
def replication() -> Iterator[Replication]:
    executable = tls_binary()
    assert executable is not None
    with Replication(executable) as cluster:
        yield cluster


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout} s for {what}")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EventLog:
    """Lines of events with the time each arrived, from a thread reading them."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

    def add(self, payload: dict) -> None:
        with self.lock:
            self.events.append((time.monotonic(), payload))

    def since(self, moment: float) -> list[dict]:
        with self.lock:
            return [payload for at, payload in self.events if at > moment]

    def ends(self) -> Counter[int]:
        """How often each job was reported finished."""
        with self.lock:
            return Counter(
                payload["job_id"]
                for _, payload in self.events
                if payload["event"] in ("download_complete", "multifile_download_complete")
            )


def follow_sse(url: str, log: EventLog, stop: threading.Event) -> None:
    """Read the API's event stream; a stream the API ends is opened again (as a browser's
    EventSource does), which the test counts as a failure of the shared subscription. The
    API stopped at the test's end cuts the stream: that is its end, not an error."""
    with requests.get(url, stream=True, timeout=120) as stream:
        try:
            for line in stream.iter_lines(decode_unicode=True):
                if stop.is_set():
                    return
                if line.startswith("data: "):
                    log.add(json.loads(line[6:]))
        except requests.RequestException:
            if not stop.is_set():
                raise


def follow_cli(process: subprocess.Popen[str], log: EventLog) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        log.add(json.loads(line))


@pytest.mark.slow
@pytest.mark.timeout(300)  # two failovers; about 100 s on a busy machine
def test_a_failover_mid_run_loses_nothing_and_everyone_follows_the_new_primary(
    replication: Replication,
    origin: Origin,
    spawn_worker: Callable[..., WorkerProcess],
    namespace: str,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    env = {
        **os.environ,
        "DOWNLOADER_REDIS_URL": replication.url,
        "DOWNLOADER_NAMESPACE": namespace,
        "DOWNLOADER_VISIBILITY_TIMEOUT": "10",
        "DOWNLOADER_ALLOW_PRIVATE_NETWORKS": "true",
        "DOWNLOADER_DOWNLOAD_ROOT": str(tmp_path),
    }
    env.pop("DOWNLOADER_API_KEY", None)
    small = {f"s{i}.bin": os.urandom(512 + i) for i in range(SMALL)}
    large = {f"large{i}.bin": os.urandom(1536 * KiB) for i in range(LARGE)}
    parts = {f"part{i}.bin": os.urandom(512 * KiB) for i in range(3)}
    for name, data in {**small, **large, **parts}.items():
        origin.add(name, data)
    # Slow enough to span both failovers on a busy machine (about 45 s and 20 s).
    large_url = {name: origin.url(f"/files/{name}?rate={34 * KiB}") for name in large}
    part_url = {name: origin.url(f"/files/{name}?rate={24 * KiB}") for name in parts}

    workers = [spawn_worker(name, concurrency=6, env=env) for name in ("f1", "f2")]
    api_port = free_port()
    api_log = tmp_path / "api.log"
    api = popen(
        [sys.executable, "-m", "downloader", "api", "--port", str(api_port)],
        env=env,
        stdout=api_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    events_cli = popen(
        [sys.executable, "-m", "downloader", "events"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "events.err").open("w"),
        text=True,
    )
    sse, cli = EventLog(), EventLog()
    stop = threading.Event()
    base = f"http://127.0.0.1:{api_port}/api/v1/queue/default"
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{api_port}/health"), 60, "the API")
        sse_thread = threading.Thread(
            target=follow_sse, args=(f"{base}/events", sse, stop), daemon=True
        )
        sse_thread.start()
        threading.Thread(target=follow_cli, args=(events_cli, cli), daemon=True).start()
        service = DownloadQueueService(
            redis_url=replication.url, start_worker=False, queue_id="default"
        )
        try:
            big = [service.download(large_url[name], tmp_path / "large" / name) for name in large]
            multi = service.multifile_download(
                [RemoteModelFile(url=part_url[name], path=f"m/{name}") for name in parts],
                tmp_path / "multi",
            )
            first = service.download_many(
                [
                    {"source": origin.url(f"/files/{name}"), "dest": f"{tmp_path}/small/"}
                    for name in list(small)[:200]
                ]
            )
            wait_until(
                lambda: sum(job.status.value == "completed" for job in first) >= 20,
                60,
                "the first small jobs",
            )
            wait_until(lambda: all(job.bytes > 0 for job in big), 60, "the large jobs to run")
            assert sse.events and cli.events, "the event streams were quiet before the failover"

            # -- first failover: SIGKILL the primary -------------------------------------------
            killed_at = time.monotonic()
            old = replication.kill_primary()
            new = replication.wait_promoted(old)
            promoted = time.monotonic() - killed_at
            second = service.download_many(
                [
                    {"source": origin.url(f"/files/{name}"), "dest": f"{tmp_path}/small/"}
                    for name in list(small)[200:250]
                ]
            )
            wait_until(
                lambda: all(job.status.value == "completed" for job in second),
                90,
                "jobs queued after the failover",
            )
            wait_until(lambda: sse.since(killed_at + promoted), 30, "SSE events after failover")
            wait_until(lambda: cli.since(killed_at + promoted), 30, "CLI events after failover")

            # -- second failover, once the old primary rejoined as a replica -------------------
            replication.rejoin(old)
            killed_again = time.monotonic()
            replication.kill_primary()
            newer = replication.wait_promoted(new)
            promoted_again = time.monotonic() - killed_again
            assert newer.port == old.port
            third = service.download_many(
                [
                    {"source": origin.url(f"/files/{name}"), "dest": f"{tmp_path}/small/"}
                    for name in list(small)[250:]
                ]
            )
            everything = [*big, multi, *first, *second, *third]
            joined = threading.Thread(target=service.join, daemon=True)
            joined.start()
            joined.join(120)
            assert not joined.is_alive(), "join() did not return: " + ", ".join(
                f"{job.id}:{job.status.value}" for job in everything if not job.in_terminal_state
            )
            wait_until(lambda: sse.since(killed_again + promoted_again), 30, "SSE events again")
            wait_until(lambda: cli.since(killed_again + promoted_again), 30, "CLI events again")

            # -- every job exactly once, with the right bytes ----------------------------------
            for job in everything:
                assert job.status.value == "completed", (job.id, job.status, job.error)
            for job, name in zip([*first, *second, *third], small, strict=True):
                assert sha(Path(job.download_path).read_bytes()) == sha(small[name])
                # Fetched once. A job whose end was written to the primary just before it died
                # (so never reached the replica) is claimed again and finds its file under the
                # final name, stamped: it only asks whether that version is still current.
                asked = origin.gets(f"/files/{name}")
                whole = [r for r in asked if "If-None-Match" not in r.headers]
                assert len(whole) == 1, (name, job.attempts, asked)
            for job, name in zip(big, large, strict=True):
                assert sha(Path(job.download_path).read_bytes()) == sha(large[name])
            for name, data in parts.items():
                assert sha((tmp_path / "multi" / "m" / name).read_bytes()) == sha(data)
            assert sha(b"".join(large.values())) == sha(
                b"".join(Path(job.download_path).read_bytes() for job in big)
            )
            for log in (sse, cli):
                twice = {job: n for job, n in log.ends().items() if n > 1}
                assert not twice, f"jobs reported finished twice: {twice}"
            status = requests.get(f"{base}/status", timeout=30).json()["queue"]
            total = SMALL + LARGE + 1 + len(parts)
            assert status["completed"] == total and status["total"] == total, status
            assert status["pending"] == status["in_progress"] == status["failed"] == 0, status
            assert not [w.name for w in workers if w.process.poll() is not None]
            inspected = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "downloader.celery_app", "inspect",
                 "stats", "--json", "--timeout", "10"],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert inspected.returncode == 0, inspected.stderr[-2000:]
            stats = json.loads(inspected.stdout)
            assert len(stats) == 2
            assert {s["broker"]["transport"] for s in stats.values()} == {"downloader-sentinel"}
        finally:
            service.close()
    finally:
        stop.set()
        for process in (api, events_cli):
            stop_process(process)
    print(
        f"failover test: promoted in {promoted:.1f} s and {promoted_again:.1f} s, "
        f"whole test {time.monotonic() - started:.1f} s"
    )


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
        return True
    except requests.ConnectionError:
        return False


def test_a_job_no_replica_confirms_is_refused_and_nothing_stays_queued(
    replication: Replication, origin: Origin, namespace: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("DOWNLOADER_REDIS_MIN_REPLICAS", "1")
    monkeypatch.setenv("DOWNLOADER_REDIS_WAIT_TIMEOUT", "0.5")
    origin.add("kept.bin", b"kept")
    with DownloadQueueService(redis_url=replication.url, start_worker=False) as service:
        queued = service.download(origin.url("/files/kept.bin"), tmp_path / "kept.bin")
        assert service.id_to_job(queued.id).status.value == "waiting"
        replication.replica().kill()
        with pytest.raises(NotReplicatedError, match="only 0 of 1 Redis replica"):
            service.download(origin.url("/files/kept.bin"), tmp_path / "other.bin")
        with pytest.raises(NotReplicatedError):
            service.download_many([{"source": origin.url("/files/kept.bin"), "dest": tmp_path}])
        # nothing half-queued: only the first job, no record, index entry or path held
        assert [job.id for job in service.list_jobs()] == [queued.id]
        client = replication.primary().client()
        keys = {key.decode() for key in client.scan_iter(f"{namespace}:job:*", count=1000)}
        assert keys == {f"{namespace}:job:{queued.id}"}
        assert client.zcard(f"{namespace}:queue:default:status:waiting") == 1
        assert not list(client.scan_iter(f"{namespace}:path:*other*", count=1000))
    # a REST enqueue answers 503, saying why
    monkeypatch.setenv("DOWNLOADER_REDIS_URL", replication.url)
    monkeypatch.delenv("DOWNLOADER_API_KEY", raising=False)
    with TestClient(create_api()) as api:
        answer = api.post(
            "/api/v1/queue/default/enqueue",
            json={"source": origin.url("/files/kept.bin"), "dest": "rest"},
        )
    assert answer.status_code == 503 and "only 0 of 1 Redis replica" in answer.json()["detail"]
    assert client.zcard(f"{namespace}:queue:default:status:waiting") == 1
    # the CLI says so in one line
    env = {
        **os.environ,
        "DOWNLOADER_REDIS_URL": replication.url,
        "DOWNLOADER_NAMESPACE": namespace,
        "DOWNLOADER_REDIS_MIN_REPLICAS": "1",
        "DOWNLOADER_REDIS_WAIT_TIMEOUT": "0.5",
    }
    run = subprocess.run(
        [sys.executable, "-m", "downloader", "get", origin.url("/files/kept.bin"), "-d",
         str(tmp_path / "cli")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "only 0 of 1 Redis replica" in run.stderr.strip().splitlines()[-1]
    assert "Traceback" not in run.stderr


def test_a_command_the_failover_cut_off_is_sent_again_to_the_new_primary(
    replication: Replication,
) -> None:
    # redis-py reconnects a connection dropped in the middle of a command to the address it
    # last had: after a failover, the dead primary's, for the whole ride-out, and the command
    # fails. Ours asks the sentinels on each try, so the command goes to the new primary.
    client = RedisTarget(replication.url, Settings(redis_ride_out=20)).riding_client()
    answers: list[object] = []

    def blocked() -> None:
        try:
            answers.append(client.blpop(["never"], timeout=3))
        except Exception as exc:  # what the test reports
            answers.append(exc)

    waiting = threading.Thread(target=blocked, daemon=True)
    primary = replication.primary()
    waiting.start()
    wait_until(
        lambda: int(primary.client().info("clients")["blocked_clients"]) == 1,
        30,
        "the command to be in flight",
    )
    old = replication.kill_primary()
    new = replication.wait_promoted(old)
    waiting.join(60)
    assert answers == [None], answers  # BLPOP timed out on the new primary: no error
    assert client.connection_pool.get_master_address()[1] == new.port


def test_with_a_replica_a_small_files_start_is_stored_before_its_body(
    replication: Replication, origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where writes wait for a replica, a small file's start is not held for its end: an end
    lost with a primary that died first would take the start along, and the next run would
    fetch the file whole again. Its body stalled after 1 KiB, the job's record already names
    the file, on the replica too."""
    monkeypatch.setenv("DOWNLOADER_REDIS_MIN_REPLICAS", "1")
    data = os.urandom(64 * KiB)
    origin.add("small.bin", data)
    with DownloadQueueService(redis_url=replication.url, max_parallel_dl=1) as service:
        job = service.download(origin.url("/files/small.bin?stall=1024"), tmp_path)
        replica = replication.replica().client()
        key = service.app.keys.job(job.id)
        # Within 20 s: the origin holds the stalled answer for 30 s (a start stored only as
        # the attempt fails, the held start's way, would come after that).
        wait_until(lambda: replica.hget(key, "download_path"), 20, "the start on the replica")
        assert [r.ended for r in origin.gets("/files/small.bin")] == [None]  # still stalled
        assert replica.hget(key, "status") == b'"running"'
        service.cancel_job(job)
        service.wait_for_job(job, timeout=60)
    assert job.status.value == "error" and job.cancelled
