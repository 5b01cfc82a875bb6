"""Queueing jobs: what a caller asks for turned into records, path reservations, live job
objects and messages, in the order that loses nothing.

For each batch: the explicit final paths are reserved (all or none: another unfinished job
holding one refuses the batch), the jobs are handed to `LiveJobs` before anything can happen
to them (their records name this client, whose channel their events go to), the records are
written in pipelined batches,
the reservations confirmed, and only then are the ids sent to a worker. Every method takes
the queue id, so that one service can queue into any queue of its Redis (the REST API does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from redis.client import Pipeline

from downloader import hub
from downloader.client.ids import JobIds
from downloader.client.livejobs import LiveJobs
from downloader.client.multifile import build_multifile, check_part_paths
from downloader.client.newjobs import JobBatch, new_job
from downloader.config import Settings
from downloader.jobs.limits import parse_rate
from downloader.jobs.models import (
    DownloadEventHandler,
    DownloadJob,
    MultiFileDownloadJob,
    RemoteModelFile,
    bearer_token,
    mirror_urls,
)
from downloader.jobs.record import JobRecord
from downloader.store.durability import NotReplicatedError
from downloader.store.reservations import Reservations
from downloader.worker.runtime import Dispatch, Runtime

Job = DownloadJob | MultiFileDownloadJob
Callbacks = Mapping[str, DownloadEventHandler | None]


class Enqueuer:
    """Writes and queues the jobs of one service, into whichever queue it is told."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        settings: Settings,
        live: LiveJobs | None,
        session: requests.Session | None,
    ) -> None:
        self._runtime = runtime  # raises once the service is closed
        self._settings = settings
        self._live = live
        """None: jobs are queued and forgotten (see the service's `follow`)."""
        self._session = session
        self._ids = JobIds(lambda: self._runtime().store)

    def download(
        self,
        queue_id: str,
        source: str,
        dest: str | Path,
        priority: int,
        access_token: str | None,
        *,
        sha256: str | None,
        untrusted: bool,
        download_path: Path | None,
        mirrors: Sequence[str] | None,
        bandwidth: str | int | None = None,
        callbacks: Callbacks | None = None,
    ) -> DownloadJob:
        """One URL (an `hf://` source resolved here, once), queued on `queue_id`."""
        source = str(source)  # InvokeAI's callers pass pydantic URLs too
        mirrors = mirror_urls(mirrors)
        rate = parse_rate(bandwidth) or None
        if hub.is_hub_source(source):
            part = hub.resolve_file(
                source, token=access_token, settings=self._settings, session=self._session
            )
            source, sha256 = str(part.url), sha256 or part.sha256
            mirrors = mirror_urls([*mirrors, *part.mirrors])
        access_token = access_token or hub.token_for(source, self._settings)
        job, record = new_job(
            self._ids.next(),
            source,
            dest,
            priority,
            access_token,
            sha256,
            untrusted,
            download_path,
            mirrors,
            bandwidth=rate,
        )
        job.set_callbacks(**(callbacks or {}))
        self._enqueue(queue_id, [job], [record])
        return job

    def download_many(self, queue_id: str, items: Iterable[Mapping[str, Any]]) -> list[DownloadJob]:
        """Many URLs, each item holding `download`'s arguments by name; in pipelined batches."""
        return [job for job, _ in self.enqueue_many(queue_id, items)]

    def enqueue_many(
        self, queue_id: str, items: Iterable[Mapping[str, Any]]
    ) -> list[tuple[DownloadJob, JobRecord]]:
        """`download_many`, answering each job with its record as written (a front end
        answers with the records rather than read them back)."""
        items = list(items)
        ids = self._runtime().store.new_ids(len(items))
        batch = JobBatch(self._settings)
        made = [batch.job(job_id, item) for job_id, item in zip(ids, items, strict=True)]
        self._enqueue(queue_id, [job for job, _ in made], [record for _, record in made])
        return made

    def multifile_download(
        self,
        queue_id: str,
        parts: Sequence[RemoteModelFile],
        dest: str | Path,
        access_token: str | None,
        *,
        priority: int,
        untrusted: bool,
        revision: str | None,
        bandwidth: str | int | None = None,
        callbacks: Callbacks | None = None,
    ) -> MultiFileDownloadJob:
        """Several files under `dest` as one job, queued on `queue_id`; `bandwidth` is each
        part's own rate."""
        access_token = bearer_token(access_token)
        dest = Path(dest).absolute()
        parts = [RemoteModelFile.model_validate(part) for part in parts]
        check_part_paths(parts)
        runtime = self._runtime()
        ids = runtime.store.new_ids(len(parts) + 1)
        job, records = build_multifile(
            ids,
            parts,
            dest,
            access_token,
            priority=priority,
            untrusted=untrusted,
            revision=revision,
            bandwidth=parse_rate(bandwidth) or None,
        )
        job.set_callbacks(**(callbacks or {}))
        owned = [(part.id, part.dest) for part in job.download_parts]
        # The parts download, with the token; the parent never does, and holds none.
        tokens = {part.id: access_token for part in job.download_parts} if access_token else {}
        self._write(queue_id, [job, *job.download_parts], records, owned, tokens)
        self._submit_replicated(
            queue_id, ids, owned, [(part_id, queue_id, priority) for part_id in ids[1:]]
        )
        return job

    def repo_download(
        self,
        queue_id: str,
        resolved: hub.ResolvedRepo,
        dest: str | Path,
        *,
        priority: int,
        access_token: str | None,
        untrusted: bool,
        bandwidth: str | int | None = None,
        callbacks: Callbacks | None = None,
    ) -> MultiFileDownloadJob:
        """A resolved hub repo as one multi-file job at its pinned commit; `bandwidth` is
        each part's own rate."""
        return self.multifile_download(
            queue_id,
            resolved.files,
            dest,
            access_token or hub.token_for(str(resolved.files[0].url), self._settings),
            priority=priority,
            untrusted=untrusted,
            revision=resolved.commit,
            bandwidth=bandwidth,
            callbacks=callbacks,
        )

    # -- the steps ----------------------------------------------------------------------------

    def _enqueue(
        self, queue_id: str, jobs: Sequence[DownloadJob], records: Sequence[JobRecord]
    ) -> None:
        """Write single jobs, holding their explicit file paths, then queue them."""
        owned = [
            (job.id, path)
            for job, record in zip(jobs, records, strict=True)
            for path in (None if record.dest_is_dir else job.dest, job.download_path)
            if path is not None
        ]
        tokens = {job.id: job.access_token for job in jobs if job.access_token}
        if not owned and self._write_with_messages(queue_id, jobs, records, tokens):
            return
        self._write(queue_id, jobs, records, owned, tokens)
        self._submit_replicated(
            queue_id,
            [job.id for job in jobs],
            owned,
            [(job.id, queue_id, job.priority) for job in jobs],
        )

    def _write(
        self,
        queue_id: str,
        jobs: Sequence[Job],
        records: Sequence[JobRecord],
        owned: list[tuple[int, Path]],
        tokens: Mapping[int, str],
    ) -> None:
        """Reserve `owned` (refusing all if another job holds one), hand the jobs out as live
        objects, write the records and confirm the reservations."""
        store = self._runtime().store
        reservations = Reservations(store)
        reservations.acquire(owned, pending=True)
        self._follow(jobs, records)
        store.create(queue_id, records, access_tokens=tokens)
        if self._live is not None:
            self._live.created(jobs)  # from now on, a record gone is a job gone
        reservations.confirm(owned)

    def _follow(self, jobs: Sequence[Job], records: Sequence[JobRecord]) -> None:
        """Hand the jobs out as live objects, their records naming this client as the one
        whose channel their events go to: the listener has followed that channel since the
        service started, so not one of their events is missed, and no job costs a
        subscription of its own."""
        if self._live is None:
            return
        for record in records:
            record.follower = self._live.client_id
        self._live.track(jobs)

    def _write_with_messages(
        self,
        queue_id: str,
        jobs: Sequence[Job],
        records: Sequence[JobRecord],
        tokens: Mapping[int, str],
    ) -> bool:
        """Write the records and their broker messages in the same script call, a batch at
        a time, when nothing has to come between them: no path to reserve first, no replica
        to confirm the records before a worker may start. Answers whether it did.

        A job then never exists without its message, nor a message without its job, and a
        batch costs one round trip: a single `download()` is one command to Redis.
        """
        runtime = self._runtime()
        dispatcher = runtime.pipelined(queue_id)
        if dispatcher is None:
            return False
        dispatcher.declare({queue_id})
        now = time.time()

        def send(pipe: Pipeline, batch: list[JobRecord]) -> None:
            dispatcher.push(pipe, [(r.id, queue_id, r.priority) for r in batch], now)

        self._follow(jobs, records)
        runtime.store.create(queue_id, records, access_tokens=tokens, then=send)
        if self._live is not None:
            self._live.created(jobs)
        return True

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
        runtime = self._runtime()
        durability = runtime.durability
        try:
            durability.confirm(what)
            runtime.submit_many(dispatches)
            durability.confirm(what)
        except NotReplicatedError:
            runtime.store.remove(queue_id, ids)
            Reservations(runtime.store).release(owned)
            if self._live is not None:
                self._live.forget(ids)
            raise
