"""`downloader worker` processes on a namespace of their own, fed by an enqueue-only client,
with their RSS sampled, so a case measures the distributed path as it is deployed."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from downloader import DownloadJobStatus

from .config import SAMPLE_INTERVAL, BenchError, MiB
from .context import Context, clean_env, queue_client
from .processes import wait_until
from .tools import Sample, downloader_command


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

    def __init__(
        self, ctx: Context, tag: str, count: int, settings: dict[str, Any], warm: bool = True
    ) -> None:
        assert ctx.redis_url is not None
        self.ctx, self.tag, self.count, self.warm = ctx, tag, count, warm
        self.namespace = ctx.namespace(tag)
        self.env = clean_env(redis_url=ctx.redis_url, namespace=self.namespace, **settings)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.samplers: list[RssSampler] = []
        self.stack = contextlib.ExitStack()
        self.idle_rss = 0

    def start(self) -> None:
        for i in range(self.count):
            log = self.ctx.log(f"worker-{self.tag}-{i}")
            args = downloader_command(
                "worker", "-c", str(self.ctx.profile.concurrency), "-n", f"{self.tag}-{i}@%h"
            )
            process = self.ctx.procs.start(args, log, self.env)
            self.processes.append(process)
            wait_until(lambda p=process, lg=log: _ready(p, lg), 60, f"worker {self.tag}-{i}")
            self.samplers.append(RssSampler(process.pid))
            self.samplers[-1].start()
        assert self.ctx.redis_url is not None
        self.client = self.stack.enter_context(queue_client(self.ctx.redis_url, self.namespace))
        if self.warm:
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
    ctx: Context, tag: str, count: int = 1, warm: bool = True, **settings: str | int | None
) -> Iterator[Worker]:
    """Started workers on a namespace of their own; stopped on the way out, whatever happens.

    `warm=False` skips the warm-up jobs, for a queue that already holds jobs they would wait
    behind.
    """
    worker = Worker(ctx, tag, count, settings, warm)
    try:
        worker.start()
        yield worker
    finally:
        worker.close()
