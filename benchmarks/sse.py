"""The REST API's event stream: events/s and latency through `GET .../events`. Not a test:
prints figures (the numbers in docs/design.md).

    python benchmarks/sse.py [--events 20000] [--clients 1,20] [--rate 500]

A `downloader api` process serves a namespace of its own on the machine's Redis; each of
`--clients` httpx streams reads the queue's events while this process publishes them on the
queue's channel. Throughput: `--events` events published as fast as the slowest client reads
them (at most `WINDOW` ahead of it, so that no client falls the 256 events behind that get it
dropped), counted from the first publish to the last event the slowest client read, and the
API process's CPU time per event delivered to one client. Latency: `--events / 10` events
at `--rate` per second, each
carrying its publish time; the figures are the delay to each client's read, in ms.
Run it with `PYTHONPATH=<other checkout>/src` to measure another commit's code the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis

REDIS_URL = os.environ.get("DOWNLOADER_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench"
PAD = "x" * 200
"""About the size of a progress event."""
WINDOW = 100
"""Events the publisher may be ahead of the slowest client in the throughput run."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api(namespace: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DOWNLOADER_REDIS_URL": REDIS_URL, "DOWNLOADER_NAMESPACE": namespace}
    env.pop("DOWNLOADER_API_KEY", None)
    env["DOWNLOADER_API_MAX_EVENT_STREAMS"] = "1000"
    command = [sys.executable, "-m", "downloader", "api", "--port", str(port)]
    api = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=1)
            return api, url
        except httpx.HTTPError:
            time.sleep(0.2)
    api.kill()
    raise RuntimeError("the API did not start")


class Reader(threading.Thread):
    """One client: reads the stream until `expected` events came (or the stream ended)."""

    def __init__(self, url: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.url, self.expected = url, expected
        self.subscribed = threading.Event()
        self.seen = 0
        self.delays: list[float] = []
        self.last = 0.0
        self.ended_with: str | None = None

    def run(self) -> None:
        with httpx.stream("GET", f"{self.url}/api/v1/queue/{QUEUE}/events", timeout=120) as r:
            for line in r.iter_lines():
                if line == ": subscribed":
                    self.subscribed.set()
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
                    if payload.get("event") == "error":
                        self.ended_with = payload.get("error")
                        return
                    now = time.time()
                    self.delays.append(now - payload["t"])
                    self.seen += 1
                    self.last = now
                    if self.seen == self.expected:
                        return


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    url: str, namespace: str, api_pid: int, clients: int, events: int, rate: float | None
) -> dict:
    readers = [Reader(url, events) for _ in range(clients)]
    for reader in readers:
        reader.start()
    for reader in readers:
        if not reader.subscribed.wait(30):
            raise RuntimeError("a client was not subscribed")
    client = redis.Redis.from_url(REDIS_URL)
    channel = f"{namespace}:events:{QUEUE}"
    started, cpu = time.time(), cpu_seconds(api_pid)
    if rate is None:
        for first in range(0, events, 10):
            while first - min(reader.seen for reader in readers) >= WINDOW:
                if any(reader.ended_with for reader in readers):
                    break
                time.sleep(0.0005)
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(first + 10, events)):
                payload = {"event": "download_progress", "job_id": i, "t": time.time(), "p": PAD}
                pipe.publish(channel, json.dumps(payload))
            pipe.execute()
    else:
        for i in range(events):
            due = started + i / rate
            time.sleep(max(0.0, due - time.time()))
            payload = {"event": "download_progress", "job_id": i, "t": time.time(), "p": PAD}
            client.publish(channel, json.dumps(payload))
    for reader in readers:
        reader.join(120)
    cpu = cpu_seconds(api_pid) - cpu
    dropped = sum(1 for reader in readers if reader.ended_with)
    complete = [reader for reader in readers if reader.seen == events]
    delays = sorted(d * 1000 for reader in complete for d in reader.delays)
    elapsed = max((reader.last for reader in complete), default=time.time()) - started
    return {
        "clients": clients,
        "events": events,
        "complete_clients": len(complete),
        "dropped_clients": dropped,
        "events_per_s_per_client": round(events / elapsed) if complete else 0,
        "p50_ms": round(statistics.median(delays), 2) if delays else None,
        "p99_ms": round(delays[int(len(delays) * 0.99)], 2) if delays else None,
        "api_cpu_us_per_event": round(cpu / (events * clients) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--clients", default="1,20")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    namespace = f"dlbench-sse-{uuid.uuid4().hex[:8]}"
    api, url = start_api(namespace)
    try:
        for clients in (int(c) for c in args.clients.split(",")):
            for repeat in range(args.repeats):
                burst = run(url, namespace, api.pid, clients, args.events, None)
                paced = run(url, namespace, api.pid, clients, args.events // 10, args.rate)
                print(json.dumps({"repeat": repeat, "burst": burst, "paced": paced}), flush=True)
    finally:
        api.terminate()
        api.wait(15)


if __name__ == "__main__":
    main()
