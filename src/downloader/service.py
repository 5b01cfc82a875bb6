"""`DownloadQueueService`, the client API: enqueue, watch, cancel, wait. It never downloads.

The service writes jobs to the store and queues their ids; workers (in this process or
anywhere else on the same Redis) do the work and report through the store and pub/sub. One
listener thread per service turns those events into updates of the live `DownloadJob`
objects this service handed out and runs their callbacks, so callbacks of one service never
run concurrently and always see events in the order they were published.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import redis
import requests

from downloader import events as ev
from downloader import parents
from downloader.celery_app import DownloaderApp, create_app
from downloader.config import Settings
from downloader.embedded import EmbeddedRedis, InProcessWorker
from downloader.events import Subscription
from downloader.models import (
    DownloadEventHandler,
    DownloadJob,
    DownloadJobStatus,
    MultiFileDownloadJob,
    RemoteModelFile,
)
from downloader.store import KIND_MULTIFILE, KIND_SINGLE, utcnow

log = logging.getLogger(__name__)

Job = DownloadJob | MultiFileDownloadJob

_LOST_EVENT_GRACE = timedelta(seconds=2)
"""How long a job may be finished in the store before its missing final event is presumed lost."""


_open_services: weakref.WeakSet[DownloadQueueService] = weakref.WeakSet()


@atexit.register
def _close_open_services() -> None:
    """A script that never called close() must not leave its embedded redis-server behind."""
    for service in list(_open_services):
        service.close()


class UnknownJobIDException(KeyError):
    """No job with that id in this queue."""


class EventBus(Protocol):
    def emit(self, event_name: str, payload: dict[str, Any]) -> None: ...


_TERMINAL_CALLBACK = {
    ev.DOWNLOAD_COMPLETE: "on_complete",
    ev.DOWNLOAD_ERROR: "on_error",
    ev.DOWNLOAD_CANCELLED: "on_cancelled",
    ev.MULTIFILE_COMPLETE: "on_complete",
    ev.MULTIFILE_ERROR: "on_error",
    ev.MULTIFILE_CANCELLED: "on_cancelled",
}
_STARTED = (ev.DOWNLOAD_STARTED, ev.MULTIFILE_STARTED)
_PROGRESS = (ev.DOWNLOAD_PROGRESS, ev.MULTIFILE_PROGRESS)


class DownloadQueueService:
    """A download queue on Celery and Redis with the InvokeAI download-queue API."""

    def __init__(
        self,
        max_parallel_dl: int = 5,
        event_bus: EventBus | Callable[[str, dict[str, Any]], None] | None = None,
        requests_session: requests.Session | None = None,
        *,
        redis_url: str | None = None,
        queue_id: str = "default",
        start_worker: bool = True,
    ) -> None:
        self._settings = Settings()
        self._max_parallel_dl = max_parallel_dl
        self._event_bus = event_bus
        self._requests_session = requests_session
        self._redis_url = redis_url or self._settings.redis_url
        self._queue_id = queue_id
        self._start_worker = start_worker
        self._jobs: dict[int, Job] = {}
        self._finalised: set[int] = set()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._app: DownloaderApp | None = None
        self._worker: InProcessWorker | None = None
        self._listener: threading.Thread | None = None
        self._uses_embedded = False
        self.start()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, *args: Any, **kwargs: Any) -> None:
        """Connect, subscribe and (if asked) start the in-process worker. Idempotent."""
        if self._app is not None:
            return
        url = self._redis_url
        if url is None:
            url = EmbeddedRedis.acquire(self._settings)
            self._uses_embedded = True
        self._app = create_app(url, self._settings)
        self._app.session_override = self._requests_session
        self._stop.clear()
        subscription = Subscription(self._app.redis, self._settings.namespace, self._queue_id)
        self._listener = threading.Thread(
            target=self._listen, args=(subscription,), name="downloader-events", daemon=True
        )
        self._listener.start()
        _open_services.add(self)
        if self._start_worker:
            # Poll the broker every 0.2 s instead of 1 s, so that close() does not wait a
            # second for the last BRPOP to time out.
            options = self._app.conf.broker_transport_options
            self._app.conf.broker_transport_options = {**options, "polling_interval": 0.2}
            self._worker = InProcessWorker(
                self._app, self._max_parallel_dl, [self._app.celery_queue(self._queue_id)]
            )
            self._worker.start()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop what this service started; jobs still queued stay in Redis for a later worker."""
        app, self._app = self._app, None
        if app is None:
            return
        self._stop.set()  # the listener winds down while the worker does
        if self._worker is not None:
            app.stopping.set()
            self._worker.stop()
            self._worker = None
        if self._listener is not None:
            self._listener.join(5)
            self._listener = None
        _disconnect(app)
        if self._uses_embedded:
            EmbeddedRedis.release()
            self._uses_embedded = False
        _open_services.discard(self)

    def __enter__(self) -> DownloadQueueService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def app(self) -> DownloaderApp:
        if self._app is None:
            raise RuntimeError("the download queue is closed")
        return self._app

    @property
    def queue_id(self) -> str:
        return self._queue_id

    # -- enqueueing ---------------------------------------------------------------------------

    def download(
        self,
        source: str,
        dest: str | Path,
        priority: int = 10,
        access_token: str | None = None,
        on_start: DownloadEventHandler | None = None,
        on_progress: DownloadEventHandler | None = None,
        on_complete: DownloadEventHandler | None = None,
        on_cancelled: DownloadEventHandler | None = None,
        on_error: DownloadEventHandler | None = None,
        *,
        sha256: str | None = None,
        untrusted: bool = False,
        download_path: Path | None = None,
        etag: str | None = None,
    ) -> DownloadJob:
        """Queue one URL; it starts as soon as a worker has a free slot.

        With `sha256`, the file is verified before it takes its final name. `untrusted` marks
        a job from an untrusted caller (the REST API): its worker refuses private addresses
        unless `DOWNLOADER_ALLOW_PRIVATE_NETWORKS` is set. `download_path` and `etag`, from an
        earlier job that was stopped, let the worker resume that job's partial file with its
        first request (a Range request, conditional on the ETag).
        """
        job = DownloadJob(
            source=source,
            dest=Path(dest),
            priority=priority,
            access_token=access_token,
            download_path=download_path,
            etag=etag,
        )
        job.set_callbacks(
            on_start=on_start,
            on_progress=on_progress,
            on_complete=on_complete,
            on_cancelled=on_cancelled,
            on_error=on_error,
        )
        job.id = self.app.store.new_ids(1)[0]
        self._track(job)
        record = {**self._record(job), "sha256": sha256, "untrusted": untrusted}
        self.app.store.create(self._queue_id, [record], access_token)
        self.app.submit(job.id, self._queue_id, priority)
        return job

    def multifile_download(
        self,
        parts: Sequence[RemoteModelFile],
        dest: str | Path,
        access_token: str | None = None,
        on_start: DownloadEventHandler | None = None,
        on_progress: DownloadEventHandler | None = None,
        on_complete: DownloadEventHandler | None = None,
        on_cancelled: DownloadEventHandler | None = None,
        on_error: DownloadEventHandler | None = None,
        *,
        priority: int = 10,
        untrusted: bool = False,
    ) -> MultiFileDownloadJob:
        """Queue several files under `dest` as one job that ends when its last part does."""
        dest = Path(dest)
        parts = [RemoteModelFile.model_validate(part) for part in parts]
        _check_part_paths(parts)
        ids = self.app.store.new_ids(len(parts) + 1)
        job = MultiFileDownloadJob(
            id=ids[0], dest=dest, priority=priority, download_path=_common_root(dest, parts)
        )
        job.set_callbacks(
            on_start=on_start, on_progress=on_progress, on_complete=on_complete,
            on_cancelled=on_cancelled, on_error=on_error,
        )
        for part_id, part in zip(ids[1:], parts, strict=True):
            job.download_parts.append(DownloadJob(
                id=part_id, source=part.url, dest=dest / part.path, priority=priority,
                download_path=dest / part.path, total_bytes=part.size or 0,
                access_token=access_token,
            ))
        parent_record = {
            "kind": KIND_MULTIFILE, "part_ids": ids[1:],
            **job.model_dump(mode="json", exclude={"download_parts"}),
        }
        part_records = [
            {**self._record(part_job), "parent_id": job.id, "sha256": part.sha256,
             "untrusted": untrusted}
            for part_job, part in zip(job.download_parts, parts, strict=True)
        ]
        for tracked in (job, *job.download_parts):
            self._track(tracked)
        self.app.store.create(self._queue_id, [parent_record, *part_records], access_token)
        self.app.submit_multifile(job.id, ids[1:], self._queue_id, priority)
        return job

    @staticmethod
    def _record(job: DownloadJob) -> dict[str, Any]:
        return {"kind": KIND_SINGLE, **job.model_dump(mode="json")}

    def _track(self, job: Job) -> None:
        with self._changed:
            self._jobs[job.id] = job

    # -- looking ------------------------------------------------------------------------------

    def list_jobs(self) -> list[Job]:
        """Every job of this queue in Redis, from any client, oldest first."""
        return [self._live(record) for record in self.app.store.queue_records(self._queue_id)]

    def id_to_job(self, id: int) -> Job:
        record = self.app.store.record(id)
        if record is None or record.get("queue_id") != self._queue_id:
            raise UnknownJobIDException(f"no job {id} in queue {self._queue_id!r}")
        return self._live(record)

    def _live(self, record: dict[str, Any]) -> Job:
        """The live object this service handed out for the record, else a snapshot."""
        fresh = self.app.store.to_model(record)
        job = self._jobs.get(fresh.id)
        if job is None:
            return fresh
        _copy_state(fresh, job)
        return job

    # -- waiting ------------------------------------------------------------------------------

    def wait_for_job(self, job: Job, timeout: float | None = None) -> Job:
        """Block until `job` ends; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._is_over(job):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"job {job.id} did not finish within {timeout} s")
                self._changed.wait(1.0 if remaining is None else min(remaining, 1.0))
        return job

    def join(self) -> None:
        """Block until every job this service queued has ended."""
        with self._changed:
            while not all(self._is_over(job) for job in self._jobs.values()):
                self._changed.wait(1.0)

    def _is_over(self, job: Job) -> bool:
        if job.id in self._jobs:
            return job.id in self._finalised
        return job.in_terminal_state

    # -- control ------------------------------------------------------------------------------

    def cancel_job(self, job: Job) -> None:
        """Stop `job`: at once if it waits, within a second if it runs; a parent, all its parts."""
        record = self.app.store.record(job.id)
        if record is None:
            raise UnknownJobIDException(f"no job {job.id} in queue {self._queue_id!r}")
        if record.get("kind") == KIND_MULTIFILE:
            parents.cancel(self.app, record)
            return
        self.app.cancel(job.id, self._queue_id)
        if record.get("parent_id") is not None:
            parents.settle(self.app, record["parent_id"])  # a cancelled part ends its parent

    def cancel_all_jobs(self) -> None:
        for record in self.app.store.queue_records(self._queue_id):
            if not DownloadJobStatus(record["status"]).finished:
                self.cancel_job(self.app.store.to_model(record))

    def prune_jobs(self) -> None:
        """Forget every finished job of this queue."""
        finished = [
            record["id"]
            for record in self.app.store.queue_records(self._queue_id)
            if DownloadJobStatus(record["status"]).finished
        ]
        self.app.store.remove(self._queue_id, finished)
        with self._changed:
            for job_id in finished:
                self._jobs.pop(job_id, None)
                self._finalised.discard(job_id)

    # -- events -------------------------------------------------------------------------------

    def _listen(self, subscription: Subscription) -> None:
        """The one thread that applies events to live jobs and runs callbacks."""
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                for payload in subscription:
                    if self._stop.is_set():
                        break
                    if payload is not None:
                        self._handle(payload)
                    if time.monotonic() - last_sweep > 1.0:
                        self._sweep()
                        last_sweep = time.monotonic()
            except redis.RedisError:
                log.warning("lost the event stream; reconnecting", exc_info=True)
                subscription = self._resubscribe()
                if subscription is None:
                    return
        subscription.close()

    def _resubscribe(self) -> Subscription | None:
        delay = 0.2
        while not self._stop.wait(delay):
            try:
                subscription = Subscription(
                    self.app.redis, self._settings.namespace, self._queue_id
                )
            except (redis.RedisError, TimeoutError, RuntimeError):
                delay = min(delay * 2, 5.0)
                continue
            self._sweep()
            return subscription
        return None

    def _sweep(self) -> None:
        """Finish jobs whose final event was lost (Redis pub/sub does not replay)."""
        with self._changed:
            pending = [job for job in self._jobs.values() if job.id not in self._finalised]
        if not pending:
            return
        now = utcnow()
        for record in self.app.store.records(job.id for job in pending):
            ended = record.get("job_ended")
            if ended and now - datetime.fromisoformat(ended) > _LOST_EVENT_GRACE:
                multi = record.get("kind") == KIND_MULTIFILE
                if record["status"] == DownloadJobStatus.COMPLETED.value:
                    event = ev.MULTIFILE_COMPLETE if multi else ev.DOWNLOAD_COMPLETE
                elif record.get("cancelled"):
                    event = ev.MULTIFILE_CANCELLED if multi else ev.DOWNLOAD_CANCELLED
                else:
                    event = ev.MULTIFILE_ERROR if multi else ev.DOWNLOAD_ERROR
                self._handle({"event": event, "job_id": record["id"]}, forward=False)

    def _handle(self, payload: dict[str, Any], forward: bool = True) -> None:
        """Apply one event; `forward=False` for the ones the sweep infers, which the event
        bus never saw published and should not receive half-filled."""
        job = self._jobs.get(payload.get("job_id", -1))
        if job is None or job.id in self._finalised:
            return
        event = payload["event"]
        if forward:
            self._forward(event, payload)
        if event in _STARTED:
            self._refresh(job)
            job.status = DownloadJobStatus.RUNNING
            self._callback(job, "on_start")
        elif event in _PROGRESS:
            job.status = DownloadJobStatus.RUNNING
            job.bytes = payload["current_bytes"]
            job.total_bytes = payload["total_bytes"]
            self._callback(job, "on_progress")
        elif event in _TERMINAL_CALLBACK:
            self._refresh(job)
            with self._changed:
                self._finalised.add(job.id)
                self._changed.notify_all()
            self._callback(job, _TERMINAL_CALLBACK[event])

    def _refresh(self, job: Job) -> None:
        fresh = self.app.store.get(job.id)
        if fresh is not None:
            _copy_state(fresh, job)

    def _forward(self, event: str, payload: dict[str, Any]) -> None:
        bus = self._event_bus
        if bus is None:
            return
        try:
            if hasattr(bus, "emit"):
                bus.emit(event, payload)
            else:
                bus(event, payload)
        except Exception:
            log.exception("the event bus failed on %s", event)

    @staticmethod
    def _callback(job: Job, name: str) -> None:
        handler = job.callback(name)
        if handler is None:
            return
        try:
            handler(job)
        except Exception:
            log.exception("%s callback of job %s raised; the job goes on", name, job.id)


def _check_part_paths(parts: Sequence[RemoteModelFile]) -> None:
    """Refuse a part list that would collide or be empty, before anything is written."""
    if not parts:
        raise ValueError("a multi-file download needs at least one part")
    seen: set[str] = set()
    for part in parts:
        key = part.path.as_posix()
        if key in seen:
            raise ValueError(f"two parts have the same path {key!r}")
        seen.add(key)


def _common_root(dest: Path, parts: Sequence[RemoteModelFile]) -> Path:
    """`dest/<first component>` when every part lies under that same directory, else `dest`."""
    firsts = {part.path.parts[0] for part in parts if len(part.path.parts) > 1}
    if len(firsts) == 1 and all(len(part.path.parts) > 1 for part in parts):
        return dest / firsts.pop()
    return dest


def _disconnect(app: DownloaderApp) -> None:
    """Close every connection of the app, so an embedded Redis sees its last client go."""
    app.pool.force_close_all()
    backend_client = getattr(app.backend, "client", None)
    if backend_client is not None:
        backend_client.connection_pool.disconnect()
    app.redis.connection_pool.disconnect()


def _copy_state(source: Job, target: Job) -> None:
    """Update a live job in place from a fresher copy, keeping its callbacks and token."""
    for name in type(source).model_fields:
        if name not in ("access_token", "download_parts"):
            setattr(target, name, getattr(source, name))
    target.cancelled = source.cancelled
