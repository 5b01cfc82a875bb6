"""What the parts of one attempt share: the runtime, the job's record, the lease owner and the
lease, and the job's events.

An attempt is split along its seams: `hooks` (what the transfer engine calls while bytes come
in), `retries` (fetching again after a transient failure), `ending` (the one store call that
ends the attempt, and the job's files), and `runner`, which claims a job and drives them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from downloader.jobs.record import JobRecord
from downloader.store.bus import Announcement
from downloader.worker.leases import Lease

if TYPE_CHECKING:
    from downloader.config import Settings
    from downloader.worker.jobpacing import JobPacing
    from downloader.worker.runtime import Runtime


log = logging.getLogger("downloader.worker.runner")
"""The log of every attempt; `downloader get` shows its warnings as lines (`RetryLines`)."""


class WorkerStopping(Exception):
    """The worker is shutting down; the job goes back to the queue to resume elsewhere."""


class JobPaused(Exception):
    """A caller paused the job: the attempt stops, keeps its partial file and frees its slot."""


class LeaseLost(Exception):
    """Another attempt owns the job now (this one could not renew its lease): step aside."""


class Attempt:
    """One attempt at one job on this worker."""

    def __init__(self, app: Runtime, record: JobRecord, owner: str) -> None:
        self.app = app
        self.record = record
        """As the claim answered it; the transfer's start adds the path and ETag it found."""
        self.owner = owner
        """The lease owner, unique per attempt: `<worker node>#<random>`."""
        self.keeper: Lease | None = None
        """The lease while the attempt runs (None before the transfer starts)."""
        self.pacing: JobPacing | None = None
        """Its side of the fleet's limits (set by the run, once the hooks it tells exist)."""
        self.made_dirs: list[Path] = []
        """The directories below the job's root this attempt made (a part's subdirectories):
        the ones left empty go when the job fails or is cancelled."""

    @property
    def job_id(self) -> int:
        return self.record.id

    @property
    def queue_id(self) -> str:
        return self.record.queue_id

    @property
    def source(self) -> str:
        return self.record.source or ""

    def count_retry(self, reason: str) -> None:
        """One more try, whose failure was `reason`: counted in the store and in `record`,
        whose `attempts` the start and end events carry."""
        self.app.store.record_retry(self.job_id, reason)
        self.record.attempts += 1

    def publish(self, event: str, **fields: Any) -> None:
        """Publish an event of this job now (progress, which changes nothing stored)."""
        self.app.publisher.publish(
            event, self.queue_id, self.job_id, self.record.follower, **fields
        )

    def event(self, event: str, **fields: Any) -> Announcement:
        """An event of this job, for the store call that makes the change it reports."""
        return self.app.publisher.prepare(
            event, self.queue_id, self.job_id, self.record.follower, **fields
        )


def job_root(record: JobRecord, settings: Settings) -> Path:
    """The directory the job's caller chose, below which the engine follows no link on the way
    to the job's files: a multi-file job's `dest` for its parts, else the job's own directory.
    For an untrusted job (the REST API's) it is the download root when that holds the job:
    the API checked `dest` inside it when the job was queued, and a directory on the way that
    has become a link since is refused."""
    dest = record.dest
    own = record.root or (dest if record.dest_is_dir else dest.parent)
    if record.untrusted:
        download_root = settings.download_root.resolve()  # as the API confined it
        if download_root == own or download_root in own.parents:
            return download_root
    return own
