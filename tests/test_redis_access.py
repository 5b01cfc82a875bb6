"""Reaching Redis as production runs it: TLS with the test's own certificates, an ACL user
with the least rights the queue needs (deploy/redis-acl.conf), and a worker that says in one
line, with a non-zero status, when it cannot reach its broker or is refused."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from downloader import DownloadQueueService, RemoteModelFile
from tests.children import popen, stop_process
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.redis_server import Certificates, RedisServer, free_port, tls_binary

ROOT = Path(__file__).resolve().parents[1]

needs_redis_7 = pytest.mark.skipif(tls_binary() is None, reason="needs the machine's Redis 7")


def run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "downloader", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(stderr: str) -> str:
    """The one line a refused command prints (Celery's warnings aside), never a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("downloader")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        port = free_port()
        log = tmp_path / f"api-{port}.log"
        command = [sys.executable, "-m", "downloader", "api", "--port", str(port)]
        process = popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{url}/health", timeout=2)
                return url
            except requests.ConnectionError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
        raise TimeoutError(log.read_text())

    yield start
    for process in started:
        stop_process(process)


@pytest.fixture
def own_redis() -> Iterator[Callable[..., RedisServer]]:
    """Starts Redis servers of the test's own, stopped only after the test's worker and API:
    a test requests it before `spawn_worker` and `api_process`, so it is torn down after them
    (a worker or an API whose Redis is gone would ride its absence out, for
    `DOWNLOADER_REDIS_RIDE_OUT`, before obeying SIGTERM)."""
    servers: list[RedisServer] = []

    def start(**options: object) -> RedisServer:
        server = RedisServer(**options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def queue_env(namespace: str, url: str, tmp_path: Path, **more: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DOWNLOADER_REDIS_URL": url,
        "DOWNLOADER_NAMESPACE": namespace,
        "DOWNLOADER_ALLOW_PRIVATE_NETWORKS": "true",
        "DOWNLOADER_DOWNLOAD_ROOT": str(tmp_path / "root"),
        **more,
    }
    env.pop("DOWNLOADER_API_KEY", None)
    return env


def started_together(
    spawn_worker: Callable[..., WorkerProcess],
    name: str,
    api_process: Callable[[dict[str, str]], str],
    env: dict[str, str],
) -> str:
    """A worker `name` and an API on `env`, started side by side (each takes seconds on a
    loaded machine); answers the API's URL once both are up."""
    with ThreadPoolExecutor(2) as pool:
        worker = pool.submit(spawn_worker, name, env=env)
        api = api_process(env)
        worker.result()
    return api


def wait_healthy(api: str) -> None:
    deadline = time.monotonic() + 60
    while requests.get(f"{api}/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, requests.get(f"{api}/health", timeout=10).text
        time.sleep(0.3)


def enqueue_and_wait(api: str, origin: Origin, name: str) -> None:
    """One job through the REST API, done by the worker."""
    base = f"{api}/api/v1/queue/default"
    answer = requests.post(
        f"{base}/enqueue", json={"source": origin.url(f"/files/{name}"), "dest": "rest"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    item = answer.json()["items"][0]["item_id"]
    deadline = time.monotonic() + 60
    while requests.get(f"{base}/i/{item}", timeout=10).json()["status"] != "completed":
        assert time.monotonic() < deadline, requests.get(f"{base}/i/{item}", timeout=10).text
        time.sleep(0.2)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_redis_7
def test_workers_api_and_cli_reach_a_tls_only_redis_with_the_ca_file(
    own_redis: Callable[..., RedisServer],
    origin: Origin,
    spawn_worker: Callable[..., WorkerProcess],
    api_process: Callable[[dict[str, str]], str],
    namespace: str,
    tmp_path: Path,
) -> None:
    certificates = Certificates(tmp_path / "tls")
    server = own_redis(executable=tls_binary(), tls=certificates)
    assert server.url.startswith("rediss://")
    with pytest.raises(redis.ConnectionError):  # TLS only: a plain client gets nowhere
        redis.Redis(port=server.port, socket_timeout=2).ping()
    env = queue_env(namespace, server.url, tmp_path, **certificates.env())
    data = os.urandom(200_000)
    origin.add("tls.bin", data)
    api = started_together(spawn_worker, "tls1", api_process, env)
    wait_healthy(api)
    enqueue_and_wait(api, origin, "tls.bin")
    got = run_cli("get", origin.url("/files/tls.bin"), "-d", str(tmp_path / "cli"), env=env)
    assert got.returncode == 0, got.stderr
    saved = Path(got.stdout.strip().splitlines()[-1])
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(data).digest()
    listed = run_cli("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["status"] for line in listed.stdout.splitlines()] == [
        "completed",
        "completed",
    ]

    # a CA that did not sign the server's certificate: one line, exit 1, at once
    other = Certificates(tmp_path / "other")
    wrong = {**env, "DOWNLOADER_REDIS_TLS_CA_FILE": str(other.ca_file)}
    started = time.monotonic()
    refused = run_cli("list", env=wrong)
    assert refused.returncode == 1
    line = one_line(refused.stderr)
    assert "certificate does not verify" in line and "DOWNLOADER_REDIS_TLS_CA_FILE" in line
    worker = run_cli("worker", env=wrong)
    assert worker.returncode == 1
    assert "certificate does not verify" in one_line(worker.stderr)
    assert time.monotonic() - started < 30
    # a TLS setting with a plain URL is refused as a setting
    plain = run_cli("list", env={**env, "DOWNLOADER_REDIS_URL": f"redis://127.0.0.1:{server.port}"})
    assert plain.returncode == 2 and "use rediss://" in one_line(plain.stderr)


# -- ACL ----------------------------------------------------------------------------------------


def acl_rules(namespace: str, password: str, without: tuple[str, ...] = ()) -> list[str]:
    """The rules of the shipped ACL file's user, for `namespace`, with `password`."""
    text = (ROOT / "deploy" / "redis-acl.conf").read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("user ")]
    rules = line.split()[2:]
    rules = [rule.replace("downloader:", f"{namespace}:") for rule in rules]
    rules = [f">{password}" if rule.startswith("#") else rule for rule in rules]
    return [rule for rule in rules if rule not in without]


def test_the_shipped_acl_allows_every_command_the_store_scripts_call() -> None:
    # The whole-path test below runs what it runs; a script's rarer branch (a slot's lease, a
    # paused host) would fail only in production, as "can't run this command" for a user.
    allowed = {rule[1:].lower() for rule in acl_rules("ns", "p") if rule.startswith("+")}
    lua = ROOT / "src" / "downloader" / "store" / "lua"
    called = {
        match.lower()
        for script in lua.glob("*.lua")
        for match in re.findall(r"redis\.p?call\('([A-Za-z]+)'", script.read_text())
    }
    assert called, "no command found in the scripts"
    assert called <= allowed, sorted(called - allowed)


@pytest.mark.slow
@needs_redis_7
def test_an_acl_user_with_the_shipped_rights_runs_the_whole_job_path_and_the_api(
    own_redis: Callable[..., RedisServer],
    origin: Origin,
    spawn_worker: Callable[..., WorkerProcess],
    api_process: Callable[[dict[str, str]], str],
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = own_redis(executable=tls_binary())
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "downloader", *acl_rules(namespace, "s3cr3t-pw"))
    admin.execute_command(
        "ACL", "SETUSER", "nobrpop", *acl_rules(namespace, "other-pw", without=("+brpop",))
    )
    url = f"redis://downloader:s3cr3t-pw@127.0.0.1:{server.port}/0"
    restricted = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        restricted.set("elsewhere:key", 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        restricted.keys("*")
    admin.execute_command("ACL", "LOG", "RESET")  # what follows must need nothing more
    env = queue_env(namespace, url, tmp_path)
    for name, size in (("a.bin", 1000), ("b.bin", 300_000), ("p1.bin", 5000), ("p2.bin", 7)):
        origin.add(name, os.urandom(size))
    events = popen(
        [sys.executable, "-m", "downloader", "events", "--all"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        api = started_together(spawn_worker, "acl1", api_process, env)
        wait_healthy(api)
        enqueue_and_wait(api, origin, "a.bin")
        monkeypatch.setenv("DOWNLOADER_NAMESPACE", namespace)
        with DownloadQueueService(redis_url=url, start_worker=False) as service:
            single = service.download(origin.url("/files/b.bin"), tmp_path / "b.bin")
            multi = service.multifile_download(
                [
                    RemoteModelFile(url=origin.url("/files/p1.bin"), path="m/p1.bin"),
                    RemoteModelFile(url=origin.url("/files/p2.bin"), path="m/p2.bin"),
                ],
                tmp_path / "multi",
            )
            slow = service.download(origin.url("/files/b.bin?rate=1000"), tmp_path / "s.bin")
            for job in (single, multi):
                assert service.wait_for_job(job, 60).status.value == "completed", job.error
            service.cancel_job(slow)
            assert service.wait_for_job(slow, 60).cancelled
        assert (tmp_path / "b.bin").read_bytes() == origin.files["b.bin"]
        assert (tmp_path / "multi" / "m" / "p2.bin").read_bytes() == origin.files["p2.bin"]
        for command in (("list", "--all"), ("pause",), ("resume",), ("prune",)):
            done = run_cli(*command, env=env)
            assert done.returncode == 0, (command, done.stderr)
        status = requests.get(f"{api}/api/v1/queue/default/status", timeout=10).json()
        assert status["processor"]["is_started"], status
        with requests.get(f"{api}/api/v1/queue/default/events", stream=True, timeout=10) as s:
            assert next(s.iter_lines(decode_unicode=True)) == ": subscribed"
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=15)
    seen = [json.loads(line)["event"] for line in out.splitlines()]
    assert "download_complete" in seen and "multifile_download_complete" in seen
    assert not admin.acl_log(), admin.acl_log()

    # a command outside the user's rights: the worker stops at once and says which user
    started = time.monotonic()
    stopped = run_cli(
        "worker",
        "-n",
        "nobrpop@%h",
        env={
            **env,
            "DOWNLOADER_REDIS_URL": url.replace("downloader:s3cr3t-pw", "nobrpop:other-pw"),
        },
        timeout=90,
    )
    assert stopped.returncode != 0
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith("downloader worker: error:") and "'nobrpop'" in line, line
    assert "other-pw" not in stopped.stderr + stopped.stdout
    assert time.monotonic() - started < 60


# -- a worker without its broker --------------------------------------------------------------


def test_a_worker_refused_by_its_broker_exits_non_zero_with_one_line(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    if not redis_url.startswith("redis://"):
        pytest.skip("needs a TCP Redis")
    wrong = redis_url.replace("redis://", "redis://nobody:not-the-password@")
    refused = run_cli("worker", env=queue_env(namespace, wrong, tmp_path))
    assert refused.returncode == 1
    line = one_line(refused.stderr)
    assert "refused the login" in line and "not-the-password" not in refused.stderr


def test_a_worker_whose_broker_never_answers_exits_non_zero_with_one_line(
    namespace: str, tmp_path: Path
) -> None:
    """It waits for a Redis still starting for `DOWNLOADER_REDIS_RIDE_OUT` (60 s by default;
    5 here, so that the test also sees the setting obeyed), then gives up."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    env = queue_env(namespace, nowhere, tmp_path, DOWNLOADER_REDIS_RIDE_OUT="5")
    started = time.monotonic()
    refused = run_cli("worker", env=env, timeout=110)
    assert refused.returncode == 1
    assert "cannot reach Redis at " + nowhere in one_line(refused.stderr)
    assert time.monotonic() - started < 50


def test_a_url_of_another_kind_is_one_line_naming_the_setting(
    namespace: str, tmp_path: Path
) -> None:
    bad = run_cli("worker", env=queue_env(namespace, "amqp://guest:guest@host//", tmp_path))
    assert bad.returncode == 2
    line = one_line(bad.stderr)
    assert "DOWNLOADER_REDIS_URL must be" in line and "guest" not in line
