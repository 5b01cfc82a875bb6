"""A service that stops hands back at once what its in-process worker held.

Its running downloads go back to waiting (their partial files kept) and every message its
worker took goes back to the broker's queue, so another worker runs them within seconds,
not after the broker's visibility timeout; and a script that ends on an exception, with the
service still open, does the same at exit, without kombu's assertions on stderr.
"""

from __future__ import annotations

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
from downloader.store.keys import Keys
from tests.conftest import WorkerProcess, cli_env
from tests.origin import Origin
from tests.test_queue import wait_until

MiB = 1 << 20
NO_REDELIVERY = {"DOWNLOADER_VISIBILITY_TIMEOUT": "3600"}
"""An hour: a job that runs again within seconds was handed back, not redelivered."""

SCRIPT = """
import json, sys, time
from downloader import DownloadQueueService

url, dest = sys.argv[1], sys.argv[2]
queue = DownloadQueueService(max_parallel_dl=1)   # never closed: the script fails first
first = queue.download(source=url, dest=dest + "/first.bin")
second = queue.download(source=url + "&second=1", dest=dest + "/second.bin")
deadline = time.monotonic() + 60
while first.bytes == 0 and time.monotonic() < deadline:
    time.sleep(0.02)
print(json.dumps([first.id, second.id]), flush=True)
raise RuntimeError("the script fails with its jobs under way")
"""


def statuses(redis_url: str, namespace: str, ids: list[int]) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    keys = Keys(namespace)
    return [json.loads(client.hget(keys.job(job_id), "status") or "null") for job_id in ids]


def unacked(redis_url: str, namespace: str) -> int:
    """Messages a worker took and has not acknowledged: they come back only after the
    visibility timeout, unless their worker restores them."""
    return int(redis.Redis.from_url(redis_url).hlen(f"{namespace}:celery:unacked"))


def run_failing_script(
    origin: Origin, dest: Path, namespace: str, redis_url: str | None, state: Path | None = None
) -> tuple[list[int], subprocess.CompletedProcess[str], float]:
    """The seed's simple example, as a script that raises while its worker holds a job; on
    the embedded Redis (in `state`) when `redis_url` is None."""
    dest.mkdir()
    url = origin.url("/files/big.bin?rate=1000000")  # 40 s to the end: a wait would show
    env = {**cli_env(namespace, redis_url or ""), **NO_REDELIVERY}
    if redis_url is None:
        del env["DOWNLOADER_REDIS_URL"]
        env["DOWNLOADER_STATE_DIR"] = str(state)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    ids = json.loads(done.stdout.splitlines()[0]) if done.stdout else []
    return ids, done, took


@pytest.mark.slow
def test_a_script_that_raises_hands_its_jobs_back_at_exit_without_kombu_errors(
    origin: Origin, tmp_path: Path, namespace: str, redis_url: str
) -> None:
    origin.add("big.bin", os.urandom(40 * MiB))
    for run in range(4):
        # Each run on a queue of its own (under the test's namespace, which teardown empties)
        # so that the earlier runs' jobs, handed back and waiting, are not what it runs.
        space = f"{namespace}:run{run}"
        ids, done, took = run_failing_script(origin, tmp_path / f"run{run}", space, redis_url)
        assert done.returncode == 1, done.stderr
        assert "RuntimeError: the script fails with its jobs under way" in done.stderr
        assert "Exception ignored" not in done.stderr, done.stderr
        assert "AssertionError" not in done.stderr, done.stderr
        assert took < 20, f"run {run}: exit took {took:.1f} s"
        assert statuses(redis_url, space, ids) == ["waiting", "waiting"], run
        assert unacked(redis_url, space) == 0, f"run {run}: messages left unacknowledged"


def test_a_script_that_raises_on_the_embedded_redis_hands_back_too(
    origin: Origin, tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.add("big.bin", os.urandom(40 * MiB))
    state = tmp_path / "state"
    held: dict[str, list[int]] = {}
    for run in range(3):
        space = f"{namespace}:run{run}"  # a queue of its own, as above
        ids, done, took = run_failing_script(origin, tmp_path / f"run{run}", space, None, state)
        assert done.returncode == 1, done.stderr
        assert "Exception ignored" not in done.stderr, done.stderr
        assert "AssertionError" not in done.stderr, done.stderr
        assert took < 20, f"run {run}: exit took {took:.1f} s"
        held[space] = ids
    monkeypatch.delenv("DOWNLOADER_REDIS_URL")
    monkeypatch.setenv("DOWNLOADER_STATE_DIR", str(state))
    for space, ids in held.items():
        monkeypatch.setenv("DOWNLOADER_NAMESPACE", space)
        with DownloadQueueService(start_worker=False) as queue:
            assert [queue.id_to_job(job_id).status for job_id in ids] == ["waiting", "waiting"]
            assert queue.app.redis.hlen(f"{space}:celery:unacked") == 0


def test_jobs_a_failed_script_held_run_elsewhere_within_seconds(
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
    spawn_worker: Callable[..., WorkerProcess],
    make_service: Callable[..., DownloadQueueService],
) -> None:
    origin.add("big.bin", os.urandom(40 * MiB))
    ids, done, _ = run_failing_script(origin, tmp_path / "run", namespace, redis_url)
    assert done.returncode == 1 and len(ids) == 2, done.stderr
    origin.add("big.bin", os.urandom(2 * MiB))  # another, smaller version: quick this time
    spawn_worker("w2", concurrency=2, env=NO_REDELIVERY)
    client = make_service(start_worker=False)
    wait_until(
        lambda: statuses(redis_url, namespace, ids) == ["completed", "completed"], timeout=60
    )
    assert all(client.id_to_job(job_id).status == DownloadJobStatus.COMPLETED for job_id in ids)


def test_a_closed_service_hands_back_its_running_job_and_another_worker_runs_it_at_once(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    origin.add("big.bin", os.urandom(4 * MiB))
    url = origin.url("/files/big.bin?rate=1000000")
    holder = make_service(max_parallel_dl=1)
    running = holder.download(url, tmp_path / "running.bin")
    queued = holder.download(url + "&queued=1", tmp_path / "queued.bin")
    wait_until(lambda: running.bytes > 0, timeout=30)
    holder.close()
    assert statuses(redis_url, namespace, [running.id, queued.id]) == ["waiting", "waiting"]
    assert unacked(redis_url, namespace) == 0
    assert (tmp_path / "running.bin.downloading").exists()  # kept, to resume

    spawn_worker("w2", concurrency=2, env=NO_REDELIVERY)
    client = make_service(start_worker=False)
    wait_until(
        lambda: (
            statuses(redis_url, namespace, [running.id, queued.id]) == ["completed", "completed"]
        ),
        timeout=60,
    )
    resumed = [r for r in origin.gets("/files/big.bin") if "Range" in r.headers]
    assert resumed, "the handed-back job resumes from its partial file"
    assert client.id_to_job(running.id).status == DownloadJobStatus.COMPLETED
