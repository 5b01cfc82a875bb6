"""`DownloadQueueService`, InvokeAI's download-queue API on Celery and Redis. It never
downloads a byte itself.

The service writes jobs to the store and queues their ids; workers (in this process or
anywhere else on the same Redis) do the work and report through the store and pub/sub, which
`livejobs.LiveJobs` turns into updates of the job objects this service handed out.

The class is built from three rooms: `lifecycle.ServiceLifecycle` (connecting, the
in-process worker, closing), `control.QueueControl` (listing, waiting, pausing, resuming,
retrying, reprioritising, cancelling) and the
queueing methods here, whose work `enqueue.Enqueuer` does. `admin` is the interface for
operators and front ends that serve every queue (see `admin.QueueAdmin`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from downloader import hub
from downloader.client.control import QueueControl, UnknownJobIDException
from downloader.jobs.models import (
    DownloadEventHandler,
    DownloadJob,
    MultiFileDownloadJob,
    RemoteModelFile,
)

__all__ = ["DownloadQueueService", "UnknownJobIDException"]


class DownloadQueueService(QueueControl):
    """A download queue on Celery and Redis with InvokeAI's download-queue API.

    Args:
        max_parallel_dl: downloads the in-process worker runs at once.
        event_bus: gets every event of this service's jobs in this process, as
            `emit(event_name, payload)` (InvokeAI's event bus) or a plain callable
            `(event_name, payload)`.
        requests_session: the session the in-process worker downloads with (a session with
            mounted test adapters works with no network); workers elsewhere use their own.
        redis_url: the Redis of the broker, the jobs and the events; default
            `DOWNLOADER_REDIS_URL`, else an embedded Redis in `DOWNLOADER_STATE_DIR`.
        queue_id: the queue this service's jobs go to (letters, digits, `.`, `_`, `-`).
        start_worker: run a worker in this process; else only workers elsewhere download.
        follow: hand out live job objects, updated from the events, with callbacks; False
            queues jobs and forgets them (enqueue-only front ends such as the REST API, whose
            memory must not grow with the jobs they queue).
        own_jobs_only: with `start_worker`, the worker runs the jobs this service queues and
            no others, on threads of this process, without the broker (`downloader get` on
            the embedded default); False: it is a Celery worker that takes its share of the
            whole queue. None (the default): True on the embedded Redis (which is this
            user's alone), where the service also runs the jobs its queue holds waiting when
            it starts (left by a service closed before it ran them); False with a Redis URL.
        settings: the settings to use instead of those of the `DOWNLOADER_*` environment
            (a `downloader get --retries 2` passes its own); the in-process worker uses them
            too, workers elsewhere keep theirs.
        on_retry: called with a `RetryNotice` (the job, its URL, which retry of how many,
            the delay, the failure) for each retry of a download this process's worker
            makes; `downloader get` prints them. Without it, retries are logged.

    Raises:
        ValueError: `queue_id` is not a valid queue id.
        redis.RedisError: the Redis cannot be reached.

    The service starts at once (`start()` again does nothing) and is closed by `close()`,
    `stop()`, the end of a `with` block, or at interpreter exit.
    """

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
        bandwidth: str | int | None = None,
    ) -> DownloadJob:
        """Queue one URL; it starts as soon as a worker has a free slot.

        Args:
            source: an http(s) URL, or `hf://owner/name[@revision]/path` for a file of a
                Hugging Face repo, resolved here, once, to the file at the commit its
                revision names now and verified against the hub's SHA-256.
            dest: a directory to name the file in (one that exists, a path ending in `/`,
                or a path that does not exist and whose last component has no suffix, such
                as `/tmp/downloads`: created), or the file's own path (`/tmp/model.bin`, or
                a file that exists).
            priority: lower runs first (README: Priorities).
            access_token: sent as `Authorization: Bearer` to the source's own origin only;
                default: the origin's `DOWNLOADER_HOST_TOKENS` entry (or the hub's token).
            on_start, on_progress, on_complete, on_cancelled, on_error: called with the job,
                one at a time on this service's listener thread.
            sha256: the file is verified against it before it takes its final name.
            untrusted: a job from an untrusted caller (the REST API's): its worker refuses
                private addresses unless `DOWNLOADER_ALLOW_PRIVATE_NETWORKS` is set.
            download_path: the file's final path, named in advance (with `dest` its
                directory): a name without a suffix stays a file, and the partial file of
                an earlier job stopped there is resumed with the first request (a Range
                request, if the file still has the version the partial was begun on).
            mirrors: other URLs of the same file; they take over when the source fails or
                stalls, and share a segmented download, when their answers match the file
                (README: Mirrors). The token goes to those on the source's origin only.
            bandwidth: the job's own rate, within the fleet's limits (README: Limits):
                bytes per second, or `500K`, `20M`, `100MiB`; None or 0: none of its own.

        Returns:
            The job, a live object: its fields follow the download.

        Raises:
            ValueError: a `dest`, `mirrors` or `bandwidth` that cannot be used, or a
                malformed token.
            DestinationTakenError: another unfinished job holds the file's path.
            NotReplicatedError: too few Redis replicas confirmed the job; it was taken back.
            hub.HubError: the hub refused an `hf://` source (gated, missing, unreachable).
        """
        callbacks = {
            "on_start": on_start,
            "on_progress": on_progress,
            "on_complete": on_complete,
            "on_cancelled": on_cancelled,
            "on_error": on_error,
        }
        return self._enqueuer.download(
            self._queue_id,
            source,
            dest,
            priority,
            access_token,
            sha256=sha256,
            untrusted=untrusted,
            download_path=download_path,
            mirrors=mirrors,
            bandwidth=bandwidth,
            callbacks=callbacks,
        )

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
        bandwidth: str | int | None = None,
    ) -> MultiFileDownloadJob:
        """Queue several files under `dest` as one job that ends when its last part does.

        Each part is a plain download job (in `download_parts`); the first part to fail
        fails the job and cancels the others.

        Args:
            parts: each file's URL, path under `dest` (relative, staying inside it), and
                optionally its size, SHA-256 and mirrors.
            dest: the directory the parts' paths are relative to.
            access_token: every part's token, sent to each part's own origin only.
            on_start, on_progress, on_complete, on_cancelled, on_error: as in `download`,
                for the whole job.
            priority: every part's priority.
            untrusted: as in `download`.
            revision: the commit the parts come from, kept on the job (`repo_download`
                sets it).
            bandwidth: each part's own rate, as in `download`.

        Returns:
            The job, a live object; its parts are live too.

        Raises:
            ValueError: no parts, two parts with one path, or a malformed token.
            DestinationTakenError: another unfinished job holds one of the paths.
            NotReplicatedError: too few Redis replicas confirmed the jobs; they were taken back.
        """
        return self._enqueuer.multifile_download(
            self._queue_id,
            parts,
            dest,
            access_token,
            priority=priority,
            untrusted=untrusted,
            revision=revision,
            bandwidth=bandwidth,
            callbacks={
                "on_start": on_start,
                "on_progress": on_progress,
                "on_complete": on_complete,
                "on_cancelled": on_cancelled,
                "on_error": on_error,
            },
        )

    def download_many(self, items: Iterable[Mapping[str, Any]]) -> list[DownloadJob]:
        """Queue many URLs at once.

        The records are written in pipelined batches and the messages published over one
        producer, so queueing thousands costs a few round trips per thousand.

        Args:
            items: each holds `download`'s arguments by name: `source` and `dest` at least,
                and `priority`, `access_token`, `sha256`, `mirrors` when it has them (no
                callbacks, no `hf://` sources).

        Returns:
            Their jobs, in order.

        Raises:
            ValueError: an item that cannot be used; nothing is queued.
            DestinationTakenError: another unfinished job holds one of the paths.
            NotReplicatedError: too few Redis replicas confirmed the jobs; they were taken back.
        """
        return self._enqueuer.download_many(self._queue_id, items)

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
        bandwidth: str | int | None = None,
    ) -> MultiFileDownloadJob:
        """Queue a Hugging Face repo as one multi-file job.

        The revision is pinned to the commit the hub answers now, so every part comes from
        it (kept on the job as `revision`); files land under `dest/<name>/` and LFS files are
        verified against the hub's SHA-256.

        Args:
            repo: `owner/name` or `hf://owner/name[@revision]`, or a repo `hub.resolve_repo`
                resolved already (the REST API checks its paths first), queued as it is.
            dest: the directory the repo's folder goes in.
            revision: a branch, tag or commit.
            repo_type: `model`, `dataset` or `space`.
            allow_patterns: only the files matching one of these globs.
            ignore_patterns: not the files matching one of these globs.
            priority: every part's priority.
            access_token: the hub token; default: `HF_TOKEN` or the hub's token file.
            on_start, on_progress, on_complete, on_cancelled, on_error: as in `download`.
            untrusted: as in `download`.
            bandwidth: each file's own rate, as in `download`.

        Returns:
            The job, a live object.

        Raises:
            ValueError: a `bandwidth` that is not a rate.
            hub.HubError: the repo is gated or private, or the hub cannot answer; it says
                what to do, and nothing is queued.
            DestinationTakenError: another unfinished job holds one of the paths.
            NotReplicatedError: too few Redis replicas confirmed the jobs; they were taken back.
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
        return self._enqueuer.repo_download(
            self._queue_id,
            resolved,
            dest,
            priority=priority,
            access_token=access_token,
            untrusted=untrusted,
            bandwidth=bandwidth,
            callbacks={
                "on_start": on_start,
                "on_progress": on_progress,
                "on_complete": on_complete,
                "on_cancelled": on_cancelled,
                "on_error": on_error,
            },
        )
