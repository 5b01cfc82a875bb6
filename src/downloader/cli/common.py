"""What every command opens: the settings, its queue and a service on it; exit codes; the
option types more than one command checks."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downloader.client.service import DownloadQueueService


EXIT_ERROR = 1
EXIT_USAGE = 2


def redis_failure(exc: BaseException) -> str | None:
    """One line for a failure of Redis found in `exc` or what caused it (kombu wraps redis-py's
    errors), naming the Redis without its password and what to check; None for anything else.
    Imports redis only when there is an exception to look at."""
    from downloader.store.connection import RedisTarget, is_redis_error
    from downloader.store.durability import NotReplicatedError

    seen: BaseException | None = exc
    while seen is not None and not (is_redis_error(seen) or isinstance(seen, NotReplicatedError)):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    if isinstance(seen, NotReplicatedError):
        return str(seen)
    settings = load_settings()
    return RedisTarget(settings.redis_url or "unix:///embedded", settings).explain(seen)


def load_settings() -> Any:
    from downloader.config import Settings

    return Settings()


def queue_of(args: argparse.Namespace) -> str:
    return args.queue or load_settings().queue_id


def open_service(
    args: argparse.Namespace, start_worker: bool = False, **kwargs: Any
) -> DownloadQueueService:
    from downloader.client.service import DownloadQueueService

    return DownloadQueueService(
        max_parallel_dl=getattr(args, "parallel", 5),
        queue_id=queue_of(args),
        start_worker=start_worker,
        **kwargs,
    )


def at_least(minimum: int) -> Any:
    """An argparse type: a whole number from `minimum` on, or a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def rate(text: str) -> int:
    from downloader.jobs.limits import parse_rate

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
