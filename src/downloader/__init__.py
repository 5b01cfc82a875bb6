"""downloader: a distributed download queue on Celery and Redis.

The public API is the InvokeAI download queue's: `DownloadQueueService` hands out live
`DownloadJob` objects whose work is done by Celery workers anywhere on the same Redis.
"""

from downloader.models import (
    DownloadJob,
    DownloadJobCancelledException,
    DownloadJobStatus,
    MultiFileDownloadJob,
    RemoteModelFile,
)
from downloader.progress import TqdmProgress
from downloader.service import DownloadQueueService, UnknownJobIDException

__all__ = [
    "DownloadJob",
    "DownloadJobCancelledException",
    "DownloadJobStatus",
    "DownloadQueueService",
    "MultiFileDownloadJob",
    "RemoteModelFile",
    "TqdmProgress",
    "UnknownJobIDException",
]
