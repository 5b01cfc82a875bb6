"""The floors of a small job and what the job path spends above them (issue 22).

The floors are what this design cannot go under: one Celery task per job (a no-op task on a
bare Celery app, `floor_app.py`, two `-P threads -c 8` workers with task events on) and one
HTTP GET per file (a plain `requests` loop writing each file). Beside them the full job path
is measured in the same run on the same private `redis-server`, so that Redis's own
`INFO commandstats` counts only these runs, and `Monitor` sorts every command the job path
sends by what it is for (claim, start, end, events, leases, reservations, kombu's delivery
and acks, Celery's task events and results, ...).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from downloader.store import scripts

from .processes import Processes, free_port, wait_until

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_NUMBER = re.compile(r"\d+")


def start_redis(procs: Processes, work: Path) -> tuple[str, int]:
    """A private redis-server (no persistence): its URL and pid."""
    port = free_port()
    folder = work / "redis"
    folder.mkdir()
    args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder)]
    process = procs.start(args, folder / "log")
    url = f"redis://127.0.0.1:{port}/0"

    def up() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False

    wait_until(up, 15, "redis-server")
    return url, process.pid


def command_calls(url: str) -> dict[str, int]:
    """Calls per command since the server started (`INFO commandstats`)."""
    info = redis.Redis.from_url(url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}


def script_names() -> dict[str, str]:
    """The SHA-1 of every store script, as sent (with and without the library), to its name."""
    names = {}
    folder = Path(scripts.__file__).parent / "lua"
    for path in folder.glob("*.lua"):
        for library in (False, True):
            text = scripts.source(path.stem, library)
            names[hashlib.sha1(text.encode()).hexdigest()] = path.stem
    return names


def category(command: str, args: list[str], shas: dict[str, str]) -> str:
    """What a command the job path sent is for, from its name and keys."""
    command = command.upper()
    if command in ("EVALSHA", "EVAL") and args:
        name = shas.get(args[0], "unknown")
        return f"store script {name}" if name != "unknown" else "lua (not the store's)"
    key = args[0] if args else ""
    if command == "PUBLISH":
        if "celeryev" in key:
            return "Celery task events (PUBLISH)"
        return "job events (PUBLISH)"
    if command in ("BRPOP", "BLPOP"):
        return "kombu: waiting for messages (BRPOP)"
    if "unacked" in key:
        return f"kombu: unacked bookkeeping, ack ({command})"
    if "celery-task-meta" in key:
        return f"Celery results ({command})"
    if command in ("MULTI", "EXEC"):
        return "pipelines (MULTI/EXEC)"
    if command == "LPUSH" and ":celery:" in key:
        return "kombu: publish (LPUSH)"
    shape = _NUMBER.sub("N", key.split(":", 1)[-1]) if ":" in key else key
    return f"other {command} {shape}"


class Monitor(threading.Thread):
    """Counts the commands a Redis receives, by `category`, until stopped (Redis MONITOR)."""

    def __init__(self, url: str) -> None:
        super().__init__(name="monitor", daemon=True)
        parts = redis.connection.parse_url(url)
        self.address = (parts.get("host", "127.0.0.1"), int(parts.get("port", 6379)))
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        """Commands by (client address, category)."""
        self.script = ""
        self.stopped = threading.Event()
        self.shas = script_names()
        self.ready = threading.Event()

    def run(self) -> None:
        with socket.create_connection(self.address) as sock:
            sock.sendall(b"MONITOR\r\n")
            sock.settimeout(0.2)
            buffer = b""
            while not self.stopped.is_set():
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\r\n")
                for line in lines:
                    self.count(line.decode(errors="replace"))

    def count(self, line: str) -> None:
        if line == "+OK":
            self.ready.set()
            return
        fields = _ARG.findall(line)
        client = line[line.find("[") + 1 : line.find("]")].split(" ")[-1]
        if not fields:
            return
        what = category(fields[0], fields[1:], self.shas)
        if client == "lua":  # run by the script sent last
            self.counts[("lua", f"in {self.script}: {what}")] += 1
            return
        if what.startswith("store script"):
            self.script = what
        self.counts[(client, what)] += 1

    def by(self, sides: dict[str, str]) -> collections.Counter[tuple[str, str]]:
        """The counts by (side, category), a client address named by `sides` (else "other")."""
        named: collections.Counter[tuple[str, str]] = collections.Counter()
        for (client, what), n in self.counts.items():
            named[(sides.get(client, "lua" if client == "lua" else "other"), what)] += n
        return named

    def __enter__(self) -> Monitor:
        self.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(5)


def sides(groups: dict[str, list[int]]) -> dict[str, str]:
    """Each local TCP address of these processes (`host:port`) to the name of its group."""
    named = {}
    for name, pids in groups.items():
        for pid in pids:
            for conn in psutil.Process(pid).net_connections("tcp"):
                if conn.laddr:
                    named[f"{conn.laddr.ip}:{conn.laddr.port}"] = name
    return named


def usage_of(pids: list[int]) -> collections.Counter[str]:
    """User and system CPU seconds and context switches (voluntary: a thread waited, for a
    reply or the GIL; involuntary: preempted) of these processes and their children, and the
    CPU seconds of their main threads (a Celery worker's consumer loop: kombu, Celery's
    message handling, task events) apart."""
    usage: collections.Counter[str] = collections.Counter()
    for pid in pids:
        process = psutil.Process(pid)
        for p in (process, *process.children(recursive=True)):
            times, switches = p.cpu_times(), p.num_ctx_switches()
            usage.update(
                user=times.user,
                sys=times.system,
                voluntary=switches.voluntary,
                involuntary=switches.involuntary,
                main=sum(t.user_time + t.system_time for t in p.threads() if t.id == p.pid),
            )
    return usage


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children."""
    usage = usage_of(pids)
    return usage["user"] + usage["sys"]


def usage_line(before: collections.Counter[str], after: collections.Counter[str], n: int) -> str:
    """Per job: user and system CPU ms, voluntary and involuntary context switches."""
    d = {k: (after[k] - before[k]) / n for k in after}
    return (
        f"user {d['user'] * 1000:.2f} + sys {d['sys'] * 1000:.2f} ms (main thread"
        f" {d['main'] * 1000:.2f}, the others {(d['user'] + d['sys'] - d['main']) * 1000:.2f}),"
        " context switches"
        f" {d['voluntary']:.1f} voluntary + {d['involuntary']:.1f} involuntary"
    )


def celery_floor(
    procs: Processes,
    work: Path,
    url: str,
    jobs: int,
    count: int = 2,
    options: dict[str, Any] | None = None,
    fetches: list[tuple[str, str]] | None = None,
    conf: dict[str, Any] | None = None,
    quiet_task_lines: bool = False,
) -> dict[str, Any]:
    """`jobs` no-op tasks through `count` bare `celery worker -P threads -c 8 -E` (with kombu
    transport `options`): CPU of the workers per task, and the Redis commands per task. With
    `fetches` ((url, file) pairs), `fetch` tasks instead, one per pair; `conf`, Celery
    settings for the workers' app (the project's own, one at a time); `quiet_task_lines`,
    Celery's "received" and "succeeded" lines left out, as `downloader worker` does."""
    env = {**os.environ, "FLOOR_BROKER_URL": url, "PYTHONPATH": str(Path(__file__).parents[2])}
    env["FLOOR_TRANSPORT_OPTIONS"] = json.dumps(options or {})
    env["FLOOR_CONF"] = json.dumps(conf or {})
    env["FLOOR_QUIET_TASK_LINES"] = "1" if quiet_task_lines else ""
    workers = []
    run = len(list((work / "logs").glob("floor-*")))  # each run logs anew
    for i in range(count):
        log = work / "logs" / f"floor-{run + i}.log"
        command = [sys.executable, "-m", "celery", "-A", "benchmarks.bench.floor_app", "worker"]
        command += ["-P", "threads", "-c", "8", "-E", "-n", f"floor{i}@%h", "-l", "info"]
        process = procs.start(command, log, env)
        workers.append(process)
        wait_until(lambda lg=log: " ready." in lg.read_text(errors="replace"), 60, "celery floor")
    from benchmarks.bench.floor_app import app, fetch, noop

    app.conf.broker_url = url
    app.conf.broker_transport_options = options or {}
    client = redis.Redis.from_url(url)
    prefix = (options or {}).get("global_keyprefix", "")

    def drained() -> bool:
        lists = [k for k in client.keys(f"{prefix}floor*") if client.type(k) == b"list"]
        waiting = sum(client.llen(k) for k in lists)
        return waiting == 0 and client.hlen(f"{prefix}unacked") == 0

    def send(n: int) -> None:
        # A connection of its own: the app's pool keeps the options it was first made with.
        connection = app.connection_for_write(transport_options=options or {})
        with connection, app.amqp.Producer(connection) as producer:
            for i in range(n):
                if fetches:
                    fetch.apply_async(fetches[i % len(fetches)], producer=producer)
                else:
                    noop.apply_async((i,), producer=producer)

    send(count * 4)  # warm-up
    wait_until(drained, 60, "floor warm-up")
    pids = [p.pid for p in workers]
    calls0, usage0, started = command_calls(url), usage_of(pids), time.perf_counter()
    send(len(fetches) if fetches else jobs)
    wait_until(drained, 600, "floor tasks")
    seconds = time.perf_counter() - started
    usage, calls = usage_of(pids), calls_between(calls0, command_calls(url))
    cpu = usage["user"] + usage["sys"] - usage0["user"] - usage0["sys"]
    for process in workers:
        procs.stop(process)
    return {
        "seconds": seconds,
        "cpu_ms": cpu / jobs * 1000,
        "calls": calls,
        "usage": usage_line(usage0, usage, jobs),
    }


def requests_floor(get: Callable[[int], str], dest: Path, jobs: int) -> dict[str, Any]:
    """A plain `requests` loop, one thread: GET each file and write it. CPU of this process."""
    session = requests.Session()
    dest.mkdir(exist_ok=True)
    cpu0, started = time.process_time(), time.perf_counter()
    for i in range(jobs):
        answer = session.get(get(i))
        answer.raise_for_status()
        (dest / f"f{i}").write_bytes(answer.content)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_ms": (time.process_time() - cpu0) / jobs * 1000}


def fsync_cost(folder: Path, files: int, size: int) -> dict[str, float]:
    """What the engine's durability costs a small file: write, fsync and rename `files` files
    of `size` bytes, against the same without the fsync. Wall and CPU ms per file of each."""
    folder.mkdir(exist_ok=True)
    data = os.urandom(size)
    figures = {}
    for sync in (False, True):
        cpu0, started = time.process_time(), time.perf_counter()
        for i in range(files):
            partial = folder / f"f{i}.part"
            with partial.open("wb") as handle:
                handle.write(data)
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
            partial.replace(folder / f"f{i}-{sync}")
        label = "with fsync" if sync else "without"
        figures[f"{label}, wall"] = (time.perf_counter() - started) / files * 1000
        figures[f"{label}, CPU"] = (time.process_time() - cpu0) / files * 1000
    return figures
