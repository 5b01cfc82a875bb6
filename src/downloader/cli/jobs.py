"""Looking at the queue's jobs and ending them: list, status, cancel, prune, clear, events
(pausing, resuming, retrying and reprioritising: `steering`)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from downloader.cli.common import EXIT_ERROR, open_service

if TYPE_CHECKING:
    from downloader.client.service import DownloadQueueService
    from downloader.jobs.models import DownloadJob, MultiFileDownloadJob

    Job = DownloadJob | MultiFileDownloadJob


def _row(job: Job) -> list[str]:
    status = "cancelled" if job.cancelled else job.status.value
    size = f"{job.bytes}/{job.total_bytes}" if job.total_bytes else str(job.bytes)
    where = str(job.download_path) if job.download_path else str(getattr(job, "source", job.dest))
    return [str(job.id), status, str(job.priority), size, where]


_HEADER = ["ID", "STATUS", "PRIORITY", "BYTES", "PATH OR SOURCE"]
_WIDTHS = [6, 9, 8, 15]
"""Column widths a listing starts with; a wider cell widens its column from there on, so a
listing can be printed as it is read, a page at a time."""


def _print_table(jobs: Iterable[Job]) -> None:
    widths = list(_WIDTHS)
    for row in itertools.chain([_HEADER], map(_row, jobs)):
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=False)]
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        print(cells + "  " + row[4])


STATUS_WORDS = ("waiting", "running", "paused", "completed", "error", "cancelled")


def cmd_list(args: argparse.Namespace) -> int:
    with open_service(args) as queue:
        jobs = queue.admin.listing(
            _queues(queue, args),
            args.status or (),
            newest_first=bool(args.limit),
            parts=args.parts,
        )
        if args.limit:
            jobs = iter(list(itertools.islice(jobs, args.limit))[::-1])
        if args.json:
            for job in jobs:
                print(json.dumps(json.loads(job.model_dump_json())))  # `cancelled` is in it
        else:
            _print_table(jobs)
    return 0


def _find_job(queue: DownloadQueueService, args: argparse.Namespace, job_id: int) -> Job | None:
    """Job `job_id` in whichever queue holds it (ids are unique in a namespace: `list --all`
    shows the gets' own queues too), or only in `--queue` when one is given."""
    job = queue.admin.find_job(job_id, args.queue or None)
    if job is None:
        where = f" in queue {args.queue!r}" if args.queue else ""
        print(f"error: no job {job_id}{where}", file=sys.stderr)
    return job


def cmd_status(args: argparse.Namespace) -> int:
    from downloader.client.progress import describe_error

    code = 0
    shown: list[Job] = []
    with open_service(args) as queue:
        for job_id in args.ids:
            job = _find_job(queue, args, job_id)
            if job is None:
                code = EXIT_ERROR
            elif args.json:
                print(job.model_dump_json(exclude_none=True))
            else:
                shown.append(job)
    if shown:
        _print_table(shown)  # one table, one header
        for job in shown:
            if job.errored:
                print(f"  {job.id}: {describe_error(job.error_type, job.failure)}")
    return code


def cmd_cancel(args: argparse.Namespace) -> int:
    status = 0
    with open_service(args) as queue:
        for job_id in args.ids:
            job = _find_job(queue, args, job_id)
            if job is None:
                status = EXIT_ERROR
                continue
            if job.in_terminal_state:
                said = "cancelled" if job.cancelled else job.status.value
                print(f"job {job_id} had already ended ({said}); nothing to cancel")
                continue
            queue.cancel_job(job)
            if queue.admin.embedded:
                # The embedded default is this machine's: what a stopped get left (no worker
                # of its queue will come for it) is removed here, if the cancel ended the job.
                queue.admin.tidy_cancelled(job_id)
            print(f"cancelled {job_id}")
    return status


def _queues(queue: DownloadQueueService, args: argparse.Namespace) -> list[str]:
    """The queues `list` and `prune` look at: every queue with `--all`, and on the embedded
    default unless `--queue` names one (every queue there is this user's, each `get` has
    its own); else the service's queue."""
    if args.all or (queue.admin.embedded and not args.queue):
        return queue.admin.queue_names()
    return [queue.queue_id]


def cmd_prune(args: argparse.Namespace) -> int:
    with open_service(args) as queue:
        removed = sum(len(queue.admin.prune(queue_id)) for queue_id in _queues(queue, args))
    print(f"removed {removed} finished job(s)")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    with open_service(args) as queue:
        removed = queue.admin.clear(queue.queue_id)
    print(f"cancelled and removed {removed} job(s)")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    """Print events as they come. The subscription rides out a Redis restart or failover
    (redis-py reconnects, to the new primary, and subscribes again); past its retries it is
    made anew, saying so on stderr, until Redis answers again or refuses for good."""
    with open_service(args) as queue:
        try:
            _print_events(queue, None if args.all else queue.queue_id)
        except KeyboardInterrupt:
            return 0
    return 0


def _print_events(queue: DownloadQueueService, channel: str | None) -> None:
    import redis

    from downloader.store.connection import transient

    delay = 0.2
    while True:
        try:
            subscription = queue.admin.subscribe(channel)
        except (redis.RedisError, TimeoutError) as exc:
            if isinstance(exc, redis.RedisError) and not transient(exc):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        delay = 0.2
        try:
            for payload in subscription:
                if payload is not None:
                    print(json.dumps(payload), flush=True)
        except redis.RedisError as exc:
            if not transient(exc):
                raise
            said = queue.admin.target.explain(exc)
            print(f"downloader events: {said}; subscribing again", file=sys.stderr)
        finally:
            subscription.close()
