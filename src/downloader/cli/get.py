"""`downloader get`: check every source, queue them, show progress, and on Ctrl-C or SIGTERM
leave the jobs resumable by the same `get`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from downloader.cli.common import EXIT_ERROR, EXIT_USAGE, open_service
from downloader.cli.sources import (
    Source,
    bad_urls,
    read_urls,
    resolve,
    run_settings,
    usage_error,
)

if TYPE_CHECKING:
    from downloader.client.progress import Console
    from downloader.client.service import DownloadQueueService
    from downloader.jobs.models import DownloadJob, MultiFileDownloadJob

    Job = DownloadJob | MultiFileDownloadJob


EXIT_SIGINT = 130
EXIT_SIGTERM = 143
NO_WORKER_WAIT = 1.5
"""Seconds to wait for workers to answer before saying that none consumes the queue."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM reached `get`: its exit status is 128 + the signal's number."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _say_when_nothing_takes_the_jobs(queue: DownloadQueueService, runs_here: bool) -> None:
    """A get would otherwise wait in silence: on a paused queue (its own threads obey the
    pause too), or, when it only watches (`runs_here` false), for workers that are not
    coming."""
    if queue.admin.is_paused(queue.queue_id):
        why = (
            f"queue {queue.queue_id!r} is paused: `downloader resume` lets its workers take "
            "jobs again"
        )
    elif runs_here:
        return
    elif not queue.admin.consuming_workers(queue.queue_id, NO_WORKER_WAIT):
        why = (
            f"no worker takes the jobs of queue {queue.queue_id!r} on this Redis yet: start "
            "one with `downloader worker` (same DOWNLOADER_REDIS_URL), or run `get --worker` "
            "to download in this process"
        )
    else:
        return
    print(f"{why}. Waiting (Ctrl-C leaves the jobs queued).", file=sys.stderr, flush=True)


def _earlier_jobs(
    queue: DownloadQueueService,
    dest: Path,
    wanted: Mapping[str, str],
    restart: bool,
    console: Console,
) -> dict[str, Path]:
    """Take over what a stopped `get` of the same sources and destination left (see
    `client.resume`): `wanted` maps how each file is remembered (a URL; a repo's file by its
    final path) to the URL its new job fetches. Says what becomes of each partial file, and
    answers the final path to resume for each one kept, by the URL its new job fetches."""
    from downloader.client.resume import Takeover

    resumed = {}
    for taken in queue.admin.take_over_stopped(dest, wanted, restart):
        label = taken.path.relative_to(dest).as_posix() if taken.is_part else taken.path.name
        if taken.how is Takeover.RESTARTED:
            console.say(f"{label}: starting over (--restart)")
            continue
        if taken.how is Takeover.UNUSABLE:
            console.say(f"{label}: its partial file cannot be resumed; starting over")
        elif taken.how is Takeover.SEGMENTED:
            console.say(f"{label}: resuming its segmented download from {taken.done} bytes")
        else:
            console.say(f"{label}: resuming from byte {taken.done}")
        resumed[wanted[taken.name]] = taken.path
    return resumed


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM stops `get` as Ctrl-C does, with its own exit status."""

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_get(args: argparse.Namespace) -> int:
    urls = read_urls(args)
    bad = bad_urls([*urls, *(args.mirror or ())])
    for url, why in bad:
        print(f"error: {why}: {url!r}; nothing was queued", file=sys.stderr)
    if bad:
        return EXIT_USAGE
    problem = usage_error(args, urls)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    settings = run_settings(args)

    from downloader.hub import HubError

    try:
        sources = resolve(args, urls, settings)
    except HubError as exc:
        print(f"error: {exc}; nothing was queued", file=sys.stderr)
        return EXIT_ERROR

    from downloader.client.progress import Console, WarningLines
    from downloader.store.embedded import EmbeddedRedis
    from downloader.store.reservations import DestinationTakenError

    embedded = settings.redis_url is None
    # The embedded default is this user's alone: each get runs its own jobs, on a queue of its
    # own, so it never waits behind another get's downloads nor runs what others left.
    queue_id = args.queue or (f"get-{uuid.uuid4().hex[:12]}" if embedded else settings.queue_id)
    args.queue = queue_id
    start_worker = args.worker or embedded
    dest = Path(args.output or args.dest).expanduser().resolve()
    (dest.parent if args.output else dest).mkdir(parents=True, exist_ok=True)
    console = Console(quiet=args.quiet or args.json)
    given = [
        f"--{name}"
        for name in ("retries", "timeout", "connections")
        if getattr(args, name) is not None
    ]
    if given and not start_worker:
        console.say(
            f"note: {', '.join(given)} apply to downloads in this process; the workers of "
            "DOWNLOADER_REDIS_URL use their own settings (add --worker to download here too)"
        )
    logging.getLogger("downloader.worker.runner").addHandler(WarningLines(console))
    logging.getLogger("downloader.worker.runner").propagate = False
    # Held past the service's close, so that stopped jobs can be recorded for the next run.
    redis_url = settings.redis_url or EmbeddedRedis.acquire(settings)
    jobs: list[Job] = []
    try:
        with _signals_interrupt():
            queue = open_service(
                args,
                start_worker=start_worker,
                redis_url=redis_url,
                own_jobs_only=embedded,
                settings=settings,
                on_retry=console.retry,
            )
            try:
                return _run_get(args, queue, sources, dest, console, start_worker, embedded, jobs)
            except DestinationTakenError as exc:
                print(f"error: {exc}; nothing was queued", file=sys.stderr)
                return EXIT_ERROR
            except (KeyboardInterrupt, Interrupted) as stop:
                code = stop.code if isinstance(stop, Interrupted) else EXIT_SIGINT
                return _stopped(queue, jobs, dest, console, start_worker, embedded, code)
            finally:
                queue.close()
    finally:
        if embedded:
            EmbeddedRedis.release()


def _named_file(args: argparse.Namespace) -> Path | None:
    """The file `-o` names, given in advance with its directory as the job's `dest`, so that
    a name without a suffix stays a file (see `DownloadQueueService.download`); None without
    `-o`, or when it names a directory that exists (the file is then named in it)."""
    if not args.output:
        return None
    named = Path(args.output).expanduser().resolve()
    return None if named.is_dir() else named


def _enqueue(
    args: argparse.Namespace,
    queue: DownloadQueueService,
    sources: Sequence[Source],
    dest: Path,
    console: Console,
    resumed: dict[str, Path],
) -> list[Job]:
    """Queue every source, in order: plain URLs in one `download_many` batch, repos as one
    multi-file job each, partial files of a stopped get one by one to resume them. Every
    file's job reports to the console (a bar per file). A destination another unfinished job
    holds refuses the whole get: what was queued before is cancelled."""
    from downloader.store.reservations import DestinationTakenError

    named = _named_file(args)
    target = dest if named is None else named.parent
    batch = [s for s in sources if s.repo is None and s.url not in resumed]
    made = (
        queue.download_many(
            {
                "source": s.url,
                "dest": target,
                "priority": args.priority,
                "sha256": s.sha256,
                "access_token": s.token,
                "mirrors": args.mirror,
                "bandwidth": args.limit_rate,
                "download_path": named,
            }
            for s in batch
        )
        if batch
        else []
    )
    by_source: dict[int, Job] = {id(s): job for s, job in zip(batch, made, strict=True)}
    jobs: list[Job] = []
    try:
        _enqueue_in_order(args, queue, sources, dest, target, console, resumed, by_source, jobs)
    except DestinationTakenError:
        for job in {job.id: job for job in [*made, *jobs]}.values():
            queue.cancel_job(job)  # queued before the refusal: the get leaves nothing behind
        raise
    for file_job in _files(jobs):
        file_job.set_callbacks(
            on_progress=console.progress, on_complete=console.progress, on_error=console.error
        )
    return jobs


def _enqueue_in_order(
    args: argparse.Namespace,
    queue: DownloadQueueService,
    sources: Sequence[Source],
    dest: Path,
    target: Path,
    console: Console,
    resumed: dict[str, Path],
    by_source: dict[int, Job],
    jobs: list[Job],
) -> None:
    """Append each source's job to `jobs`, in order, queueing the repos and the resumed
    files (the plain URLs are in `by_source`, queued as one batch)."""
    for source in sources:
        if source.repo is not None:
            from downloader import hub

            repo = source.repo
            job: Job = queue.multifile_download(
                repo.files,
                dest,
                source.token or hub.token_for(str(repo.files[0].url)),
                priority=args.priority,
                revision=repo.commit,
                bandwidth=args.limit_rate,
            )
            for part in job.download_parts:
                console.name(part, part.dest.relative_to(dest).as_posix())
        elif source.url in resumed:
            job = queue.download(
                source.url,
                target,
                args.priority,
                source.token,
                sha256=source.sha256,
                download_path=resumed[source.url],
                mirrors=args.mirror,
                bandwidth=args.limit_rate,
            )
        else:
            job = by_source[id(source)]
        jobs.append(job)


def _files(jobs: Sequence[Job]) -> list[DownloadJob]:
    """The single-file jobs of a run: the jobs themselves, or the parts of a multi-file one."""
    return [part for job in jobs for part in getattr(job, "download_parts", None) or [job]]


def _run_get(
    args: argparse.Namespace,
    queue: DownloadQueueService,
    sources: list[Source],
    dest: Path,
    console: Console,
    start_worker: bool,
    embedded: bool,
    jobs: list[Job],
) -> int:
    from downloader.client.resume import OUTPUT

    # With -o the path is what the user names again, maybe with a fresh signed URL.
    named = _named_file(args) is not None
    wanted = {OUTPUT if named else s.url: s.url for s in sources if s.repo is None}
    wanted |= {str(dest / f.path): str(f.url) for s in sources if s.repo for f in s.repo.files}
    resumed = _earlier_jobs(queue, dest, wanted, args.restart, console) if embedded else {}
    jobs.extend(_enqueue(args, queue, sources, dest, console, resumed))
    _say_when_nothing_takes_the_jobs(queue, runs_here=start_worker)
    for job in jobs:
        queue.wait_for_job(job)
    console.finish(_files(jobs))
    for job in jobs:
        if args.json:
            print(job.model_dump_json(exclude_none=True), flush=True)
        elif job.complete:
            print(job.download_path, flush=True)
    return 0 if all(job.complete for job in jobs) else EXIT_ERROR


def _stopped(
    queue: DownloadQueueService,
    jobs: list[Job],
    dest: Path,
    console: Console,
    start_worker: bool,
    embedded: bool,
    code: int,
) -> int:
    """Ctrl-C or SIGTERM: stop this process's worker, which hands its running downloads back
    with their partial files kept. On the embedded default the jobs are this get's alone:
    remember them, so that the same `get` resumes them. On a shared queue they stay queued
    for its workers, which resume them."""
    unfinished = [job for job in jobs if not job.in_terminal_state]
    if not embedded:
        went = "stopped" if start_worker else "stopped watching"
        if unfinished:
            ids = ", ".join(str(job.id) for job in unfinished)
            many = len(unfinished) > 1
            went += (
                f"; job{'s' if many else ''} {ids} stay{'' if many else 's'} queued on "
                f"{queue.queue_id!r} for its workers, which resume from the partial files "
                "(`downloader cancel ID` stops one)"
            )
        console.stop(went, always=True)
        return code
    queue.admin.remember_stopped(dest, unfinished)
    console.stop("interrupted: partial files are kept; run the same command again to resume")
    return code
