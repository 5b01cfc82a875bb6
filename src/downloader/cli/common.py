"""What every command opens: the settings, its queue and a service on it; exit codes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downloader.client.service import DownloadQueueService


EXIT_ERROR = 1
EXIT_USAGE = 2


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
