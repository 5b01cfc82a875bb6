"""The Celery tasks: thin glue from a message to the runner.

A task's only argument is a job id: the job, and above all its access token, live in the job
store, so Flower and the broker never see more than a number.
"""

from __future__ import annotations

import contextlib
import logging
import time

from celery import Task, shared_task
from celery.signals import worker_ready, worker_shutting_down
from kombu.exceptions import OperationalError

from downloader.celery_app.app import DownloaderApp
from downloader.engine.redact import scrub_log_handlers
from downloader.jobs.models import DownloadJobStatus
from downloader.worker.outcome import Outcome
from downloader.worker.runner import run_download, tidy_cancelled
from downloader.worker.runtime import Runtime

log = logging.getLogger(__name__)

FLOWER_PROGRESS_AFTER = 1.0
"""Seconds a download runs before it reports its progress to Flower."""


class DownloadFailed(Exception):
    """Raised by the download task, after the job's end is recorded, when the job ended as an
    error or cancelled, so that Flower shows the task as FAILURE (its counts then match the
    jobs). An expected exception (`throws`): Celery logs one line at INFO, no traceback, and
    no retry follows. Its one argument is its text (`job 7 error: HTTPError(Not Found)`),
    so Celery can rebuild it from the task event."""


@shared_task(bind=True, name="downloader.download", throws=(DownloadFailed,))
def download(self: Task, job_id: int) -> dict[str, object]:
    """Download job `job_id`; answers its id and what became of it (for Flower).

    Raises:
        DownloadFailed: the job ended as an error or cancelled, in this delivery or before it
            (a job cancelled while it waited): Flower counts the task as failed.
    """

    started = time.monotonic()

    def tell_flower(current: int, total: int) -> None:
        # A custom task event: Flower shows the task as PROGRESS with these fields. Only for
        # downloads long enough to watch: for small files it would cost more than the bytes.
        # A notification, as the job's own events are: a broker out of reach (a failover
        # longer than kombu rides out) loses this one, never the download.
        if time.monotonic() - started >= FLOWER_PROGRESS_AFTER:
            with contextlib.suppress(OperationalError):
                self.send_event(
                    "task-progress", job_id=job_id, current_bytes=current, total_bytes=total
                )

    # The level the message came at: a job whose priority moved it since is sent again at its
    # new level, and this copy is dropped (`JobStore.claim`).
    level = (self.request.delivery_info or {}).get("priority")
    runtime = self.app.runtime
    outcome = run_download(
        runtime,
        job_id,
        self.request.hostname or "worker",
        tell_flower,
        level if isinstance(level, int) else None,
    )
    failed = failed_end(runtime, job_id, outcome)
    if failed is not None:
        ended, error_type = failed
        said = f"job {job_id} {ended}: {error_type or ended}"
        # Celery's own line for it is left out with the per-task lines (see `logs`).
        log.info("%s", said)
        raise DownloadFailed(said)
    return {"job_id": job_id, "outcome": outcome.value}


def failed_end(runtime: Runtime, job_id: int, outcome: Outcome) -> tuple[str, str | None] | None:
    """(outcome, error_type) when this delivery saw its job end badly, else None.

    A job cancelled while it waited ended without a worker; its message, when a worker takes
    it, finds it finished: that delivery is the job's only task in Flower, so it fails too.
    A message delivered again keeps its task id, so Flower still counts the job once.
    """
    if outcome is Outcome.ERROR or outcome is Outcome.CANCELLED:
        record = runtime.store.record(job_id)
        return outcome.value, record.error_type if record is not None else None
    if outcome is Outcome.FINISHED:
        record = runtime.store.record(job_id)
        if record is not None and record.status is DownloadJobStatus.ERROR:
            return ("cancelled" if record.cancelled else "error"), record.error_type
    return None


@shared_task(bind=True, name="downloader.discard")
def discard(self: Task, job_id: int) -> dict[str, object]:
    """Remove the partial file of a job cancelled after its worker died."""
    outcome = tidy_cancelled(self.app.runtime, job_id, self.request.hostname or "worker")
    return {"job_id": job_id, "outcome": outcome.value}


@worker_shutting_down.connect
def _hand_back_running_jobs(sender: object = None, **_: object) -> None:
    """On SIGTERM a worker's running downloads go back to the queue instead of being waited on."""
    from celery import current_app

    if isinstance(current_app, DownloaderApp):
        current_app.runtime.stopping.set()


@worker_ready.connect
def _remember_redis(sender: object = None, **_: object) -> None:
    """A worker notes its Redis's marker: a job whose record vanishes later is then told
    lost with Redis's data (its partial is kept) from removed by someone (a cancel)."""
    app = getattr(sender, "app", None)
    if isinstance(app, DownloaderApp):
        app.runtime.remember_redis()


@worker_ready.connect
def _watch_for_orphans(sender: object = None, **_: object) -> None:
    """Every worker process keeps a heartbeat and requeues the jobs of workers that died."""
    app = getattr(sender, "app", None)
    if isinstance(app, DownloaderApp):
        queues = getattr(sender, "downloader_queues", ())  # see control.KeepPaused
        app.orphan_watch(getattr(sender, "hostname", None), queues).start()


@worker_ready.connect
def _scrub_tokens_from_logs(sender: object = None, **_: object) -> None:
    """A worker's log lines are as public as its error texts: mask every token in them."""
    app = getattr(sender, "app", None)
    if isinstance(app, DownloaderApp):
        scrub_log_handlers(t.get_secret_value() for t in app.runtime.settings.host_tokens.values())
