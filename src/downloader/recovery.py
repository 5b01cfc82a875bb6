"""Finding jobs whose worker died and queueing them again.

A worker killed mid-download leaves its job `running` with a lease nobody renews, and its
Celery message unacknowledged until the broker's visibility timeout (an hour by default).
Every worker runs an `OrphanWatch`: every half lease it looks for running jobs whose lease has
expired, sets them back to waiting (once, atomically) and queues them again, so the download
resumes from its partial file within a lease or two instead of an hour.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from downloader.celery_app import DownloaderApp

log = logging.getLogger(__name__)


def requeue_orphans(app: DownloaderApp) -> list[int]:
    """Queue again every running job whose worker is gone; answers their ids."""
    requeued = app.store.orphans()
    for record in app.store.records(requeued):
        log.warning("job %s lost its worker; queued again to resume", record["id"])
        app.submit(record["id"], record["queue_id"], int(record.get("priority", 10)))
    return requeued


class OrphanWatch(threading.Thread):
    def __init__(self, app: DownloaderApp) -> None:
        super().__init__(name="downloader-orphans", daemon=True)
        self.app = app

    def run(self) -> None:
        interval = self.app.settings.lease_seconds / 2
        while not self.app.stopping.wait(interval):
            try:
                requeue_orphans(self.app)
            except Exception:  # Redis may be restarting: look again next round
                log.exception("could not look for orphaned jobs")
