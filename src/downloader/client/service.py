"""`DownloadQueueService`, the client API: enqueue, look, cancel, wait. It never downloads.

The service writes jobs to the store and queues their ids; workers (in this process or
anywhere else on the same Redis) do the work and report through the store and pub/sub, which
`livejobs.LiveJobs` turns into updates of the job objects this service handed out.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from downloader import hub
from downloader.client.livejobs import EventBus, LiveJobs
from downloader.config import Settings
from downloader.engine.naming import is_engine_name
from downloader.jobs.models import (
    DownloadEventHandler,
    DownloadJob,
    DownloadJobStatus,
    MultiFileDownloadJob,
    RemoteModelFile,
    bearer_token,
    mirror_urls,
)
from downloader.jobs.queues import check_queue_id
from downloader.jobs.record import JobRecord
from downloader.store.durability import NotReplicatedError
from downloader.store.embedded import EmbeddedRedis
from downloader.store.keys import Keys
from downloader.store.reservations import Reservations
from downloader.worker import parents
from downloader.worker.runtime import Dispatch, Runtime

if TYPE_CHECKING:
    from downloader.celery_app.app import DownloaderApp
    from downloader.celery_app.inprocess import InProcessWorker
    from downloader.worker.local import LocalWorker

log = logging.getLogger(__name__)

Job = DownloadJob | MultiFileDownloadJob

_open_services: weakref.WeakSet[DownloadQueueService] = weakref.WeakSet()


@atexit.register
def _close_open_services() -> None:
    """A script that never called close() must not leave its embedded redis-server behind."""
    for service in list(_open_services):
        service.close()


@functools.cache
def _close_before_threads_join() -> None:
    """Close the open services at exit *before* the interpreter joins its threads.

    A script that ends (or raises) with a service open would otherwise exit in this order:
    the interpreter first joins every non-daemon thread, among them the Celery thread pool's,
    so a running download went on to its end (minutes, for a large file) instead of being
    handed back; then multiprocessing's exit hook, registered after ours and so run before
    it, restored the kombu channel's unacknowledged messages while the in-process consumer
    still ran, and a message it took after that stayed in Redis's unacked set until the
    visibility timeout (and kombu asserted when the channel closed). Hooks registered with
    `threading._register_atexit` (CPython's, as `concurrent.futures` uses it) run before the
    threads are joined, newest first: registered after `concurrent.futures.thread`'s own,
    this one closes the services first, so running jobs are handed back and every message
    the worker took is restored at once.
    """
    import concurrent.futures.thread  # noqa: F401  (its hook joins the pool: ours goes after)

    # RuntimeError: the interpreter is already exiting; the atexit hook closes them then.
    with contextlib.suppress(RuntimeError):
        threading._register_atexit(_close_open_services)  # type: ignore[attr-defined]


class UnknownJobIDException(KeyError):
    """No job with that id in this queue."""


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
        follow: bool = True,
        own_jobs_only: bool = False,
    ) -> None:
        self._settings = Settings()
        self._own_jobs_only = own_jobs_only
        """With `start_worker`: the worker runs the jobs this service queues and no others,
        on threads of this process, without the broker (`downloader get` on the embedded
        default); otherwise it is a Celery worker that takes its share of the whole queue."""
        self._follow = follow
        """False: jobs are queued and forgotten (no live objects, callbacks or per-job
        subscriptions), for enqueue-only front ends whose memory must not grow with the jobs
        they queue, such as the REST API."""
        self._max_parallel_dl = max_parallel_dl
        self._requests_session = requests_session
        self._redis_url = redis_url or self._settings.redis_url
        self._queue_id = check_queue_id(queue_id)
        self._start_worker = start_worker
        self._live = LiveJobs(
            self._settings.namespace,
            queue_id,
            Keys(self._settings.namespace).client_channel(uuid.uuid4().hex),
            event_bus,
        )
        self._app: Runtime | None = None
        self._celery: DownloaderApp | None = None
        self._worker: InProcessWorker | LocalWorker | None = None
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
        if self._start_worker and self._own_jobs_only:
            runtime = Runtime(url, self._settings)  # sends nothing: no Celery
            from downloader.worker.local import LocalWorker

            local = LocalWorker(runtime, self._max_parallel_dl, self._queue_id)
            runtime.dispatchers.append(local)
            self._worker = local
        else:
            from downloader.celery_app import create_app

            app = self._celery = create_app(url, self._settings)
            runtime = app.runtime
            if self._start_worker:
                from downloader.celery_app.inprocess import InProcessWorker

                # Poll the broker every 0.05 s instead of 1 s, so that close() does not wait
                # for the last BRPOP to time out: an idle in-process worker costs about 0.8% of
                # a core this way (0.3% at 0.2 s), and a script ends 0.25 s sooner.
                options = app.conf.broker_transport_options
                app.conf.broker_transport_options = {**options, "polling_interval": 0.05}
                self._worker = InProcessWorker(
                    app, self._max_parallel_dl, [runtime.keys.celery_queue(self._queue_id)]
                )
        runtime.session_override = self._requests_session
        self._app = runtime
        runtime.remember_redis()
        self._live.start(runtime)
        _open_services.add(self)
        _close_before_threads_join()
        if self._worker is not None:
            self._worker.start()

    def stop(self, *args: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop what this service started; jobs still queued stay in Redis for a later worker."""
        app, self._app = self._app, None
        if app is None:
            return
        self._live.begin_stop()  # the listener winds down while the worker does
        if self._worker is not None:
            app.stopping.set()
            self._worker.stop()
            self._worker = None
        self._live.stop()
        celery, self._celery = self._celery, None
        (celery or app).disconnect()
        if self._uses_embedded:
            EmbeddedRedis.release()
            self._uses_embedded = False
        _open_services.discard(self)

    def __enter__(self) -> DownloadQueueService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def app(self) -> Runtime:
        """What this service holds on its Redis: the job store, events, settings."""
        if self._app is None:
            raise RuntimeError("the download queue is closed")
        return self._app

    @property
    def celery(self) -> DownloaderApp:
        """The Celery app, for what goes through the broker (pausing a queue, asking the
        workers); a service of its own jobs only has none."""
        self.app  # noqa: B018  (raises when closed)
        if self._celery is None:
            raise RuntimeError("a service of its own jobs only has no broker to talk to")
        return self._celery

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
        mirrors: Sequence[str] | None = None,
    ) -> DownloadJob:
        """Queue one URL; it starts as soon as a worker has a free slot.

        With `sha256`, the file is verified before it takes its final name. `untrusted` marks
        a job from an untrusted caller (the REST API): its worker refuses private addresses
        unless `DOWNLOADER_ALLOW_PRIVATE_NETWORKS` is set. An `hf://` source is resolved here,
        once, to the hub's file at the commit its revision names now, verified against the
        hub's SHA-256 (see `downloader.hub`). `download_path`, the final path of an earlier
        job that was stopped, lets this one resume that job's partial file with its first
        request (a Range request, if the file still has the version the partial was begun on).
        `mirrors`, other URLs of the same file, take over when the source fails or stalls, and
        share a segmented download, when their answers match the file (README: Mirrors); the
        job's token is never sent to them unless they are on the source's own origin.
        """
        source = str(source)  # the seed's callers pass pydantic URLs too
        mirrors = mirror_urls(mirrors)
        if hub.is_hub_source(source):
            part = hub.resolve_file(
                source, token=access_token, settings=self._settings, session=self._requests_session
            )
            source, sha256 = str(part.url), sha256 or part.sha256
            mirrors = mirror_urls([*mirrors, *part.mirrors])
        access_token = access_token or hub.token_for(source, self._settings)
        job, record = self._new_job(
            self.app.store.new_ids(1)[0],
            source,
            dest,
            priority,
            access_token,
            sha256,
            untrusted,
            download_path,
            mirrors,
        )
        job.set_callbacks(
            on_start=on_start,
            on_progress=on_progress,
            on_complete=on_complete,
            on_cancelled=on_cancelled,
            on_error=on_error,
        )
        self._enqueue(self._queue_id, [job], [record])
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
        revision: str | None = None,
    ) -> MultiFileDownloadJob:
        """Queue several files under `dest` as one job that ends when its last part does."""
        return self._multifile_download(
            self._queue_id,
            parts,
            dest,
            access_token,
            priority=priority,
            untrusted=untrusted,
            revision=revision,
            callbacks={
                "on_start": on_start,
                "on_progress": on_progress,
                "on_complete": on_complete,
                "on_cancelled": on_cancelled,
                "on_error": on_error,
            },
        )

    def _multifile_download(
        self,
        queue_id: str,
        parts: Sequence[RemoteModelFile],
        dest: str | Path,
        access_token: str | None,
        *,
        priority: int,
        untrusted: bool,
        revision: str | None,
        callbacks: Mapping[str, DownloadEventHandler | None] | None = None,
    ) -> MultiFileDownloadJob:
        """`multifile_download` into `queue_id`, any queue of this Redis: the `_` methods
        that take a queue id let one service serve every queue (the REST API does)."""
        access_token = bearer_token(access_token)
        dest = Path(dest).absolute()
        parts = [RemoteModelFile.model_validate(part) for part in parts]
        _check_part_paths(parts)
        ids = self.app.store.new_ids(len(parts) + 1)
        job = MultiFileDownloadJob(
            id=ids[0],
            dest=dest,
            priority=priority,
            download_path=_common_root(dest, parts),
            revision=revision,
        )
        job.set_callbacks(**(callbacks or {}))
        for part_id, part in zip(ids[1:], parts, strict=True):
            job.download_parts.append(
                DownloadJob(
                    id=part_id,
                    source=part.url,
                    dest=dest / part.path,
                    priority=priority,
                    download_path=dest / part.path,
                    total_bytes=part.size or 0,
                    access_token=access_token,
                )
            )
        parent_record = JobRecord.for_job(
            job,
            part_ids=ids[1:],
            parts_total=len(parts),
            total_bytes=sum(part.size or 0 for part in parts),
        )
        part_records = [
            JobRecord.for_job(
                part_job,
                parent_id=job.id,
                sha256=part.sha256,
                size=part.size,
                untrusted=untrusted,
                dest_is_dir=False,
                mirrors=mirror_urls(part.mirrors),
                root=dest,
            )
            for part_job, part in zip(job.download_parts, parts, strict=True)
        ]
        owned = [(part.id, part.dest) for part in job.download_parts]
        reservations = Reservations(self.app.store)
        reservations.acquire(owned, pending=True)
        self._track([job, *job.download_parts])
        # The parts download, with the token; the parent never does, and holds none.
        tokens = {part.id: access_token for part in job.download_parts} if access_token else {}
        self.app.store.create(queue_id, [parent_record, *part_records], access_tokens=tokens)
        self._created([job, *job.download_parts])
        reservations.confirm(owned)
        self._submit_replicated(
            queue_id, ids, owned, [(part_id, queue_id, priority) for part_id in ids[1:]]
        )
        return job

    def download_many(self, items: Iterable[Mapping[str, Any]]) -> list[DownloadJob]:
        """Queue many URLs at once; answers their jobs, in order.

        Each item holds `download`'s arguments by name (`source` and `dest` at least, and
        `mirrors` when it has some; no callbacks). The records are written in pipelined
        batches and the messages published over one producer, so queueing thousands costs a
        few round trips per thousand.
        """
        return self._download_many(self._queue_id, items)

    def _download_many(
        self, queue_id: str, items: Iterable[Mapping[str, Any]]
    ) -> list[DownloadJob]:
        """`download_many` into `queue_id` (see `_multifile_download`)."""
        items = list(items)
        ids = self.app.store.new_ids(len(items))
        made = [
            self._new_job(
                job_id,
                item["source"],
                item["dest"],
                item.get("priority", 10),
                item.get("access_token") or hub.token_for(str(item["source"]), self._settings),
                item.get("sha256"),
                bool(item.get("untrusted")),
                mirrors=mirror_urls(item.get("mirrors")),
            )
            for job_id, item in zip(ids, items, strict=True)
        ]
        jobs = [job for job, _ in made]
        self._enqueue(queue_id, jobs, [record for _, record in made])
        return jobs

    @classmethod
    def _new_job(
        cls,
        job_id: int,
        source: str,
        dest: str | Path,
        priority: int,
        access_token: str | None,
        sha256: str | None,
        untrusted: bool,
        download_path: Path | None = None,
        mirrors: list[str] | None = None,
    ) -> tuple[DownloadJob, JobRecord]:
        """A single job and its record, with `dest` read as a directory or a file path."""
        dest_is_dir = _names_a_directory(dest)
        if not dest_is_dir and is_engine_name(Path(dest).name):
            raise ValueError(
                f"dest {dest} ends like the downloader's own partial files; choose another name"
            )
        job = DownloadJob(
            id=job_id,
            source=source,
            dest=Path(dest).absolute(),
            priority=priority,
            access_token=access_token,
            download_path=None if download_path is None else download_path.absolute(),
        )
        record = JobRecord.for_job(
            job, sha256=sha256, untrusted=untrusted, dest_is_dir=dest_is_dir, mirrors=mirrors or []
        )
        return job, record

    def _enqueue(
        self, queue_id: str, jobs: Sequence[DownloadJob], records: Sequence[JobRecord]
    ) -> None:
        """Reserve the explicit file paths (refusing all if another job holds one), write the
        records in batches, then queue the jobs on `queue_id`."""
        owned = [
            (job.id, path)
            for job, record in zip(jobs, records, strict=True)
            for path in (None if record.dest_is_dir else job.dest, job.download_path)
            if path is not None
        ]
        reservations = Reservations(self.app.store)
        reservations.acquire(owned, pending=True)
        self._track(jobs)
        tokens = {job.id: job.access_token for job in jobs if job.access_token}
        self.app.store.create(queue_id, records, access_tokens=tokens)
        self._created(jobs)
        reservations.confirm(owned)
        self._submit_replicated(
            queue_id,
            [job.id for job in jobs],
            owned,
            [(job.id, queue_id, job.priority) for job in jobs],
        )

    def _submit_replicated(
        self,
        queue_id: str,
        ids: Sequence[int],
        owned: Sequence[tuple[int, Path]],
        dispatches: Sequence[Dispatch],
    ) -> None:
        """Send written jobs to their workers once the replicas have them, and make sure the
        replicas have the messages too (`store.durability`): a job `download()` answered
        survives a failover. If too few replicas confirm, the jobs are taken back (records,
        reservations, live objects; a message already sent is dropped by the claim) and
        `NotReplicatedError` says so. Nothing is sent before the records are confirmed, so
        with a replica down no worker starts a job that is then taken back."""
        what = f"job {ids[0]}" if len(ids) == 1 else f"jobs {ids[0]} to {ids[-1]}"
        durability = self.app.durability
        try:
            durability.confirm(what)
            self.app.submit_many(dispatches)
            durability.confirm(what)
        except NotReplicatedError:
            self.app.store.remove(queue_id, ids)
            Reservations(self.app.store).release(owned)
            self._live.forget(ids)
            raise

    def _track(self, jobs: Sequence[Job]) -> None:
        """Hand out these jobs as live objects (see `LiveJobs.track`); only then are they
        queued, so not one of their events is missed."""
        if self._follow:
            self._live.track(jobs)

    def _created(self, jobs: Sequence[Job]) -> None:
        """Their records are written: a record that disappears now is a job that vanished."""
        if self._follow:
            self._live.created(jobs)

    # -- looking ------------------------------------------------------------------------------

    def list_jobs(self) -> list[Job]:
        """Every job of this queue in Redis, from any client, oldest first."""
        return list(self.iter_jobs())

    def iter_jobs(self, status: DownloadJobStatus | str | None = None) -> Iterator[Job]:
        """The queue's jobs (or those in one status), oldest first, read a page at a time so
        that a queue of millions is walked in bounded memory. Finished jobs older than
        `DOWNLOADER_RESULT_TTL` are swept away first."""
        store = self.app.store
        store.sweep_expired(self._queue_id, self._settings.result_ttl)
        wanted = None if status is None else DownloadJobStatus(status).value
        for record in store.iter_records(self._queue_id, wanted):
            yield self._live.live(store.to_model(record))

    def id_to_job(self, id: int) -> Job:
        record = self.app.store.record(id)
        if record is None or record.queue_id != self._queue_id:
            raise UnknownJobIDException(f"no job {id} in queue {self._queue_id!r}")
        return self._live.live(self.app.store.to_model(record))

    # -- waiting ------------------------------------------------------------------------------

    def wait_for_job(self, job: Job, timeout: float | None = None) -> Job:
        """Block until `job` ends; TimeoutError after `timeout` seconds."""
        return self._live.wait_for(job, timeout)

    def join(self) -> None:
        """Block until every job this service queued has ended."""
        self._live.join()

    # -- control ------------------------------------------------------------------------------

    def cancel_job(self, job: Job) -> None:
        """Stop `job`: at once if it waits, within a second if it runs; a parent, all its parts."""
        record = self.app.store.record(job.id)
        if record is None:
            raise UnknownJobIDException(f"no job {job.id} in queue {self._queue_id!r}")
        if record.multifile:
            parents.cancel(self.app, record)
            return
        self.app.cancel(job.id, record.queue_id)
        if record.parent_id is not None:
            parents.settle(self.app, record.parent_id)  # a cancelled part ends its parent

    def cancel_all_jobs(self) -> None:
        """Cancel every unfinished job of this queue, paging through the status indexes:
        parents first (each cancels its parts), then the rest in pipelined batches."""
        self._cancel_all_jobs(self._queue_id)

    def _cancel_all_jobs(self, queue_id: str) -> None:
        """`cancel_all_jobs` of `queue_id` (see `_multifile_download`)."""
        store = self.app.store
        unfinished = [
            record
            for status in (DownloadJobStatus.WAITING, DownloadJobStatus.RUNNING)
            for record in store.iter_records(queue_id, status.value)
        ]
        for record in unfinished:
            if record.multifile:
                parents.cancel(self.app, record)
        singles = [record.id for record in unfinished if not record.multifile]
        self.app.cancel_many(singles, queue_id)

    def prune_jobs(self) -> None:
        """Forget every finished job of this queue."""
        self._live.forget(self.app.store.prune(self._queue_id))

    # -- model hubs ---------------------------------------------------------------------------

    def repo_download(
        self,
        repo: str | hub.ResolvedRepo,
        dest: str | Path,
        *,
        revision: str = "main",
        repo_type: str = "model",
        allow_patterns: Sequence[str] | str | None = None,
        ignore_patterns: Sequence[str] | str | None = None,
        priority: int = 10,
        access_token: str | None = None,
        on_start: DownloadEventHandler | None = None,
        on_progress: DownloadEventHandler | None = None,
        on_complete: DownloadEventHandler | None = None,
        on_cancelled: DownloadEventHandler | None = None,
        on_error: DownloadEventHandler | None = None,
        untrusted: bool = False,
    ) -> MultiFileDownloadJob:
        """Queue a Hugging Face repo (`owner/name` or `hf://...`) as one multi-file job.

        The revision is pinned to the commit the hub answers now, so every part comes from
        it (kept on the job as `revision`); files land under `dest/<name>/` and LFS files are
        verified against the hub's SHA-256. A gated or private repo raises `hub.HubError`
        saying what to do, before anything is queued. A repo `hub.resolve_repo` resolved
        already (the REST API checks its paths first) is queued as it is; `untrusted` as in
        `download`.
        """
        resolved = repo
        if not isinstance(resolved, hub.ResolvedRepo):
            resolved = hub.resolve_repo(
                resolved,
                revision=revision,
                repo_type=repo_type,
                allow_patterns=allow_patterns,
                ignore_patterns=ignore_patterns,
                token=access_token,
                settings=self._settings,
                session=self._requests_session,
            )
        return self._repo_download(
            self._queue_id,
            resolved,
            dest,
            priority=priority,
            access_token=access_token,
            untrusted=untrusted,
            callbacks={
                "on_start": on_start,
                "on_progress": on_progress,
                "on_complete": on_complete,
                "on_cancelled": on_cancelled,
                "on_error": on_error,
            },
        )

    def _repo_download(
        self,
        queue_id: str,
        resolved: hub.ResolvedRepo,
        dest: str | Path,
        *,
        priority: int,
        access_token: str | None,
        untrusted: bool,
        callbacks: Mapping[str, DownloadEventHandler | None] | None = None,
    ) -> MultiFileDownloadJob:
        """`repo_download` of a resolved repo into `queue_id` (see `_multifile_download`)."""
        return self._multifile_download(
            queue_id,
            resolved.files,
            dest,
            access_token or hub.token_for(str(resolved.files[0].url), self._settings),
            priority=priority,
            untrusted=untrusted,
            revision=resolved.commit,
            callbacks=callbacks,
        )


def _names_a_directory(dest: str | Path) -> bool:
    """`dest` is a directory to name files in when it is one, or says so with a trailing
    separator (created when missing); anything else is the file's own path."""
    text = os.fspath(dest)
    try:
        return text.endswith(("/", os.sep)) or Path(text).is_dir()
    except OSError as exc:  # a name too long for the filesystem, a directory not readable
        raise ValueError(f"dest {text} cannot be used: {exc.strerror}") from None


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
