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
    from downloader.models import (
        DownloadJob,
        DownloadJobCancelledException,
        DownloadJobStatus,
        JobVanishedError,
        MultiFileDownloadJob,
        RemoteModelFile,
    )
    from downloader.progress import TqdmProgress
    from downloader.service import DownloadQueueService, UnknownJobIDException

_HOMES = {
    "DownloadJob": "downloader.models",
    "DownloadJobCancelledException": "downloader.models",
    "DownloadJobStatus": "downloader.models",
    "JobVanishedError": "downloader.models",
    "MultiFileDownloadJob": "downloader.models",
    "RemoteModelFile": "downloader.models",
    "TqdmProgress": "downloader.progress",
    "DownloadQueueService": "downloader.service",
    "UnknownJobIDException": "downloader.service",
}

__all__ = [
    "DownloadJob",
    "DownloadJobCancelledException",
    "DownloadJobStatus",
    "DownloadQueueService",
    "JobVanishedError",
    "MultiFileDownloadJob",
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
