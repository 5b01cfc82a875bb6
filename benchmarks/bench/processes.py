"""Every process the benchmark starts, so that all of them stop whatever happens.

Children run in sessions of their own (a Ctrl-C reaches the benchmark only, which stops them
in order) and get SIGTERM if the benchmark itself dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from .config import BenchError

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child: get SIGTERM when this benchmark dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)


class Processes:
    """Every process this run started, so that all of them are stopped whatever happens."""

    def __init__(self, owned_dirs: list[Path]) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        self.owned_dirs = owned_dirs

    def start(
        self, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C reaches us only; we stop them in order
                preexec_fn=_die_with_parent,
            )
        self.running.append(process)
        return process

    def run(
        self, args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 600
    ) -> float:
        """Run a command to its end; its wall-clock seconds. BenchError on a non-zero exit."""
        started = time.perf_counter()
        process = self.start(args, log, env)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{args[0]} did not finish within {timeout:.0f} s") from None
        finally:
            self.stop(process)
        seconds = time.perf_counter() - started
        if code != 0:
            tail = log.read_text(errors="replace")[-1500:]
            raise BenchError(f"{args[0]} exited {code}:\n{tail}")
        return seconds

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)
        self.stop_strays()

    def stop_strays(self) -> None:
        """Daemons our children started in our directories (the embedded redis-server)."""
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                cwd = Path(process.cwd())
                if process.pid != os.getpid() and any(
                    cwd.is_relative_to(owned) for owned in self.owned_dirs
                ):
                    process.terminate()
                    with contextlib.suppress(psutil.TimeoutExpired):
                        process.wait(10)


def raise_interrupt(signum: int, frame: object) -> None:
    """Signal handler: SIGTERM and SIGHUP clean up the way Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
