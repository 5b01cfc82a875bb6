"""Steering jobs by id from the command line: pause, resume, retry, priority.

`downloader pause ID...` and `downloader resume ID...` steer jobs (without an id they pause
and resume the whole queue); `retry ID...` queues failed or cancelled jobs again;
`priority ID N` gives a job a new priority. Each job is found in whichever queue holds it
(or in `--queue`); each line says what became of it, and a refusal is one `error:` line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from downloader.cli.common import EXIT_ERROR, open_service
from downloader.jobs.transitions import InvalidTransitionError

if TYPE_CHECKING:
    from downloader.client.service import DownloadQueueService
    from downloader.jobs.record import JobRecord

Steer = Callable[["DownloadQueueService", int], "JobRecord | None"]


def _state(record: JobRecord) -> str:
    return "cancelled" if record.cancelled else record.status.value


def _steer_each(args: argparse.Namespace, verb: str, steer: Steer) -> int:
    """Steer each job of `args.ids`; one line per job, `error:` lines on stderr."""
    code = 0
    with open_service(args) as queue:
        for job_id in args.ids:
            record = queue.admin.record(job_id)
            if record is None or (args.queue and record.queue_id != args.queue):
                where = f" in queue {args.queue!r}" if args.queue else ""
                print(f"error: no job {job_id}{where}", file=sys.stderr)
                code = EXIT_ERROR
                continue
            try:
                after = steer(queue, job_id)
            except InvalidTransitionError as exc:
                print(f"error: {exc}", file=sys.stderr)
                code = EXIT_ERROR
                continue
            if after is None:
                print(f"error: no job {job_id}", file=sys.stderr)
                code = EXIT_ERROR
                continue
            print(f"{verb} {job_id}: {_state(after)} (priority {after.priority})")
    return code


def _pause_jobs(args: argparse.Namespace) -> int:
    """`downloader pause ID...`: paused, partial files kept, worker slots freed."""
    return _steer_each(args, "paused", lambda queue, job_id: queue.admin.pause_job(job_id))


def _resume_jobs(args: argparse.Namespace) -> int:
    """`downloader resume ID...`: queued again, to continue from their partial files."""
    return _steer_each(args, "resumed", lambda queue, job_id: queue.admin.resume_job(job_id))


def cmd_pause(args: argparse.Namespace) -> int:
    """`pause ID...` pauses those jobs; `pause` alone, the whole queue."""
    if args.ids:
        return _pause_jobs(args)
    with open_service(args) as queue:
        queue.admin.pause(queue.queue_id)
        embedded = queue.admin.embedded
    print(f"paused queue {queue.queue_id!r}: running downloads go on, no new one starts")
    if embedded and not args.queue:
        print(
            "(on the embedded default each `get` runs its own jobs in its own process: Ctrl-C "
            "stops one, and running it again resumes)"
        )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """`resume ID...` resumes those jobs; `resume` alone, the whole queue."""
    if args.ids:
        return _resume_jobs(args)
    with open_service(args) as queue:
        queue.admin.resume(queue.queue_id)
    print(f"resumed queue {queue.queue_id!r}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """`downloader retry ID...`: failed or cancelled jobs queued again."""
    return _steer_each(args, "retried", lambda queue, job_id: queue.admin.retry_job(job_id))


def cmd_priority(args: argparse.Namespace) -> int:
    """`downloader priority ID N`: a new priority; a waiting job moves in its queue."""
    args.ids = [args.id]
    priority = args.priority
    return _steer_each(
        args, "priority of", lambda queue, job_id: queue.admin.set_job_priority(job_id, priority)
    )


def add_steering_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`pause`, `resume`, `retry` and `priority`, each made by `command` (the parser's maker
    of a subcommand with `--queue`)."""
    for name, run, text, with_ids in (
        (
            "pause",
            cmd_pause,
            "pause jobs by id (their partial files kept, their workers freed); with no id, "
            "workers stop taking the queue's jobs and running ones go on",
            "the jobs to pause",
        ),
        (
            "resume",
            cmd_resume,
            "resume paused jobs by id (they continue where they stopped); with no id, workers "
            "take the queue's jobs again",
            "the jobs to resume",
        ),
    ):
        steer = command(name, text)
        steer.add_argument("ids", nargs="*", type=int, metavar="ID", help=with_ids)
        steer.set_defaults(run=run)
    retry = command(
        "retry", "queue failed or cancelled jobs again (a failed one resumes its partial file)"
    )
    retry.add_argument("ids", nargs="+", type=int, metavar="ID")
    retry.set_defaults(run=cmd_retry)
    priority = command("priority", "give a job a new priority; a waiting job moves in its queue")
    priority.add_argument("id", type=int, metavar="ID")
    priority.add_argument("priority", type=int, metavar="N", help="lower runs first")
    priority.set_defaults(run=cmd_priority)
