"""Scale-out and Flower: several worker processes on one Redis, as a deployment runs them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from downloader import DownloadJobStatus, DownloadQueueService
from tests.children import popen, stop_process
from tests.conftest import WorkerProcess, cli_env
from tests.origin import Origin
from tests.test_queue import wait_until

ENQUEUE_SCRIPT = """
import json, sys
from downloader import DownloadQueueService
urls, dest = json.loads(sys.argv[1]), sys.argv[2]
with DownloadQueueService(start_worker=False) as queue:
    print(json.dumps([queue.download(url, dest).id for url in urls]))
"""


@pytest.mark.slow
@pytest.mark.timeout(360)  # three worker processes; minutes when two suites share two cores
def test_three_workers_share_300_jobs_each_file_fetched_once(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    digests = {f"f{i:03}.bin": origin.add(f"f{i:03}.bin", os.urandom(4096 + i)) for i in range(300)}
    # A few slow ones keep a worker busy while it is told to stop.
    for i in range(6):
        digests[f"slow{i}.bin"] = origin.add(f"slow{i}.bin", os.urandom(3 << 20))
    workers = [spawn_worker(name, concurrency=4) for name in ("w1", "w2", "w3")]
    urls = [origin.url(f"/files/slow{i}.bin?rate=2000000") for i in range(6)]
    urls += [origin.url(f"/files/f{i:03}.bin") for i in range(300)]
    enqueued = subprocess.run(
        [sys.executable, "-c", ENQUEUE_SCRIPT, json.dumps(urls), str(tmp_path)],
        env=cli_env(namespace, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enqueued.returncode == 0, enqueued.stderr
    ids = json.loads(enqueued.stdout)
    assert len(ids) == 306

    client = make_service(start_worker=False)
    stopped = workers[0]

    def claimed_by_the_first_worker() -> bool:
        # A durable fact (the record keeps its worker), not a state that may already be past.
        records = client.app.store.records(ids)
        return any((r.worker or "").startswith("w1@") for r in records)

    wait_until(claimed_by_the_first_worker, timeout=60)
    stopped.process.send_signal(signal.SIGTERM)  # mid-run: it hands its downloads back
    stopped.process.wait(30)

    def all_done() -> bool:
        return all(job.in_terminal_state for job in client.list_jobs())

    wait_until(all_done, timeout=240)
    jobs = {job.id: job for job in client.list_jobs()}
    assert sorted(jobs) == sorted(ids)
    assert {job.status for job in jobs.values()} == {DownloadJobStatus.COMPLETED}
    for name, digest in digests.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    for i in range(300):
        assert len(origin.gets(f"/files/f{i:03}.bin")) == 1  # fetched exactly once
    ran_by = {client.app.store.record(i).worker.split("@")[0] for i in ids}
    assert ran_by == {"w1", "w2", "w3"}
    assert not list(tmp_path.glob("*.downloading"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def flower(namespace: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = tmp_path / "flower.log"
    env = {**cli_env(namespace, redis_url), "FLOWER_UNAUTHENTICATED_API": "true"}
    process = popen(
        [sys.executable, "-m", "downloader", "flower", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthcheck", timeout=1).ok
        except requests.ConnectionError:
            assert process.poll() is None, log.read_text()
            return False

    wait_until(up, timeout=30)
    yield base
    stop_process(process)


def test_flower_shows_each_download_task_with_its_job_id_worker_and_outcome(
    flower: str,
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    spawn_worker("flowered", concurrency=2)
    origin.add("shown.bin", os.urandom(6 << 20))
    client = make_service(start_worker=False)
    job = client.download(
        origin.url("/private/shown.bin?rate=3000000"), tmp_path, access_token=origin.token
    )

    def task_state() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", timeout=5).json()
        mine = [t for t in tasks.values() if t.get("args") in (f"({job.id},)", f"[{job.id}]")]
        return mine[0] if mine else None

    wait_until(lambda: (task_state() or {}).get("state") == "PROGRESS", timeout=30)
    client.wait_for_job(job, timeout=30)
    wait_until(lambda: (task_state() or {}).get("state") == "SUCCESS", timeout=30)
    task = task_state()
    assert task is not None
    assert task["name"] == "downloader.download"
    assert task["worker"].startswith("flowered@")
    assert f"'job_id': {job.id}" in task["result"] and "completed" in task["result"]
    everything = requests.get(f"{flower}/api/tasks", timeout=5).text
    assert origin.token not in everything


def test_flower_with_basic_auth_refuses_strangers(
    namespace: str, redis_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    process = popen(
        [
            sys.executable,
            "-m",
            "downloader",
            "flower",
            "--port",
            str(port),
            "--basic-auth=admin:secret",
        ],
        env=cli_env(namespace, redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                requests.get(f"{base}/healthcheck", timeout=1)
                return True
            except requests.ConnectionError:
                return False

        wait_until(answers, timeout=30)
        assert requests.get(f"{base}/api/tasks", timeout=5).status_code == 401
        allowed = requests.get(f"{base}/api/tasks", auth=("admin", "secret"), timeout=5)
        assert allowed.status_code == 200
    finally:
        stop_process(process)


def _flower_env(namespace: str, redis_url: str, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env(namespace, redis_url).items() if not k.startswith("FLOWER_")}
    return {**env, **variables}


def _refused_connection(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(
    ("args", "variables", "said"),
    [
        (
            [],
            {},
            "Flower has no credentials and --address 0.0.0.0 is not a loopback address: set "
            "FLOWER_BASIC_AUTH=user:password (or --basic-auth=user:password, or --auth with an "
            "OAuth provider), or pass --no-auth to serve it without authentication",
        ),
        (
            [],
            {"FLOWER_BASIC_AUTH": ""},
            "FLOWER_BASIC_AUTH (or --basic-auth) is blank or holds an entry that is not "
            "user:password with both set (entries are separated by commas)",
        ),
        (
            ["--basic-auth=admin:"],
            {},
            "FLOWER_BASIC_AUTH (or --basic-auth) is blank or holds an entry that is not "
            "user:password with both set (entries are separated by commas)",
        ),
        (
            [],
            {"FLOWER_BASIC_AUTH": "admin:SECRETPW,:SECRETPW2"},
            "FLOWER_BASIC_AUTH (or --basic-auth) is blank or holds an entry that is not "
            "user:password with both set (entries are separated by commas)",
        ),
    ],
)
def test_flower_beyond_loopback_refuses_to_start_without_credentials(
    namespace: str,
    redis_url: str,
    args: list[str],
    variables: dict[str, str],
    said: str,
) -> None:
    """As `downloader api` does without a key: one line, exit 2, nothing listening."""
    port = _free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "downloader",
            "flower",
            "--address=0.0.0.0",
            f"--port={port}",
            *args,
        ],
        env=_flower_env(namespace, redis_url, **variables),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"downloader flower: {said}"]
    assert "SECRETPW" not in result.stderr
    assert _refused_connection("127.0.0.1", port)


@pytest.mark.parametrize(
    ("args", "variables", "stranger"),
    [
        (["--no-auth"], {"FLOWER_UNAUTHENTICATED_API": "true"}, 200),
        ([], {"FLOWER_BASIC_AUTH": "admin:s3cret"}, 401),
    ],
)
def test_flower_beyond_loopback_starts_with_credentials_or_an_explicit_no_auth(
    namespace: str,
    redis_url: str,
    tmp_path: Path,
    args: list[str],
    variables: dict[str, str],
    stranger: int,
) -> None:
    port = _free_port()
    log = tmp_path / "flower.log"
    process = popen(
        [
            sys.executable,
            "-m",
            "downloader",
            "flower",
            "--address=0.0.0.0",
            f"--port={port}",
            *args,
        ],
        env=_flower_env(namespace, redis_url, **variables),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                requests.get(f"{base}/healthcheck", timeout=1)
                return True
            except requests.ConnectionError:
                assert process.poll() is None, log.read_text()
                return False

        wait_until(up, timeout=30)
        assert requests.get(f"{base}/api/tasks", timeout=5).status_code == stranger
        warned = "authentication is OFF on 0.0.0.0 (--no-auth)" in log.read_text()
        assert warned == ("--no-auth" in args), log.read_text()
    finally:
        stop_process(process)


def _outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


@pytest.mark.parametrize(
    ("host_args", "bound"), [([], "127.0.0.1"), (["--metrics-host", "0.0.0.0"], "0.0.0.0")]
)
def test_worker_metrics_listen_on_loopback_unless_told_otherwise(
    spawn_worker: Callable[..., WorkerProcess], host_args: list[str], bound: str
) -> None:
    port = _free_port()
    worker = spawn_worker("metered", celery_options=["--metrics-port", str(port), *host_args])
    listening = {
        connection.laddr.ip
        for connection in psutil.Process(worker.process.pid).net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }
    assert listening == {bound}
    answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200 and "downloader_jobs" in answer.text
    assert 'downloader_host_connections{host="other"}' in answer.text  # per host too
    outside = _outside_address()
    if outside is not None:
        assert _refused_connection(outside, port) == (bound == "127.0.0.1")
    if bound != "127.0.0.1":
        assert "metrics on 0.0.0.0" in worker.output() and "no authentication" in worker.output()


def test_a_metrics_port_in_use_stops_the_worker_with_one_line(
    namespace: str, redis_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "downloader", "worker", "--metrics-port", str(port)],
            env=cli_env(namespace, redis_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"downloader worker: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
