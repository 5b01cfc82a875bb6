"""What every case gets: the profile, the processes, the origin, the files, the Redis, and
fresh directories, namespaces and logs, so that no case sees another's keys or files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from downloader import DownloadQueueService

from .config import Profile
from .files import TestFiles
from .origin import Origin
from .processes import Processes


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


def clean_env(**settings: str | int | Path | None) -> dict[str, str]:
    """This process's environment without DOWNLOADER_*, plus the given settings. Without
    PYTHONDONTWRITEBYTECODE too: a user's commands import from cached bytecode, and with it
    set (some sandboxes do) every `downloader get` compiled the package anew, about 0.3 s."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DOWNLOADER_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in settings.items():
        if value is not None:
            env[f"DOWNLOADER_{name.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def queue_client(
    redis_url: str, namespace: str, follow: bool = True
) -> Iterator[DownloadQueueService]:
    """An enqueue-only service on `namespace` (the service reads its settings from the env);
    with `follow` false, one that does not follow its jobs either."""
    saved = dict(os.environ)
    os.environ.update({"DOWNLOADER_NAMESPACE": namespace, "DOWNLOADER_REDIS_URL": redis_url})
    try:
        service = DownloadQueueService(start_worker=False, redis_url=redis_url, follow=follow)
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
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
        return deleted
    finally:
        client.close()


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False
