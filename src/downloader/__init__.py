"""downloader: a distributed download queue on Celery and Redis.

The public API is the InvokeAI download queue's: `DownloadQueueService` hands out live
`DownloadJob` objects whose work is done by Celery workers anywhere on the same Redis.
The names are imported on first use, so that `downloader --help` and `python -m downloader`
do not pay for Celery, requests and pydantic before a command needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downloader.client.progress import TqdmProgress
    from downloader.client.service import DownloadQueueService, UnknownJobIDException
    from downloader.jobs.models import (
        DownloadJob,
        DownloadJobCancelledException,
        DownloadJobStatus,
        JobVanishedError,
        MultiFileDownloadJob,
        RemoteModelFile,
    )
    from downloader.jobs.transitions import InvalidTransitionError
    from downloader.store.durability import NotReplicatedError

_HOMES = {
    "DownloadJob": "downloader.jobs.models",
    "DownloadJobCancelledException": "downloader.jobs.models",
    "DownloadJobStatus": "downloader.jobs.models",
    "InvalidTransitionError": "downloader.jobs.transitions",
    "JobVanishedError": "downloader.jobs.models",
    "MultiFileDownloadJob": "downloader.jobs.models",
    "NotReplicatedError": "downloader.store.durability",
    "RemoteModelFile": "downloader.jobs.models",
    "TqdmProgress": "downloader.client.progress",
    "DownloadQueueService": "downloader.client.service",
    "UnknownJobIDException": "downloader.client.service",
}

__all__ = [
    "DownloadJob",
    "DownloadJobCancelledException",
    "DownloadJobStatus",
    "DownloadQueueService",
    "InvalidTransitionError",
    "JobVanishedError",
    "MultiFileDownloadJob",
    "NotReplicatedError",
    "RemoteModelFile",
    "TqdmProgress",
    "UnknownJobIDException",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'downloader' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
