"""`downloader get`: check every source, queue them, show progress, and on Ctrl-C or SIGTERM
leave the jobs resumable by the same `get`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from downloader.cli.common import EXIT_ERROR, EXIT_USAGE, load_settings, open_service

if TYPE_CHECKING:
    from downloader.client.progress import Console
    from downloader.client.service import DownloadQueueService
    from downloader.hub import ResolvedRepo
    from downloader.jobs.models import DownloadJob, MultiFileDownloadJob
    from downloader.jobs.record import JobRecord

    Job = DownloadJob | MultiFileDownloadJob


EXIT_SIGINT = 130
EXIT_SIGTERM = 143
HF_HOSTS = ("huggingface.co", "hf.co")
NO_WORKER_WAIT = 1.5
"""Seconds to wait for workers to answer before saying that none consumes the queue."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM reached `get`: its exit status is 128 + the signal's number."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _urls(args: argparse.Namespace) -> list[str]:
    urls = list(args.urls)
    if args.input_file:
        text = sys.stdin.read() if args.input_file == "-" else Path(args.input_file).read_text()
        urls += [line.strip() for line in text.splitlines()]
    return [url for url in urls if url and not url.startswith("#")]


def _bad_urls(urls: Sequence[str]) -> list[tuple[str, str]]:
    """URLs a download job would refuse, with why, found before any job is queued."""
    from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

    from downloader import hub

    check = TypeAdapter(AnyHttpUrl)
    bad = []
    for url in urls:
        if hub.is_hub_source(url):
            try:
                hub.parse_hf_url(url)
            except ValueError as exc:
                bad.append((url, f"not a hub source ({exc})"))
            continue
        try:
            check.validate_python(url)
        except ValidationError:
            bad.append((url, "not an http(s) URL"))
    return bad


def _token(args: argparse.Namespace, url: str) -> str | None:
    """--token-file, else DOWNLOADER_TOKEN, else HF_TOKEN for Hugging Face hosts over https on
    port 443 (--token is still taken, but `ps` shows it to everyone on the machine). An `hf://`
    source takes only a token given on the command line; without one the hub finds HF_TOKEN
    or its token file."""
    if args.token_file:
        return Path(args.token_file).expanduser().read_text().strip() or None
    if args.token:
        return args.token
    from downloader import hub
    from downloader.engine.origins import origin

    if hub.is_hub_source(url):
        return None
    if os.environ.get("DOWNLOADER_TOKEN"):
        return os.environ["DOWNLOADER_TOKEN"]
    scheme, host, port = origin(url)
    hugging_face = any(host == hf or host.endswith("." + hf) for hf in HF_HOSTS)
    if hugging_face and (scheme, port) == ("https", 443):  # never in clear, nor to another port
        return os.environ.get("HF_TOKEN") or None
    return None


def _apply_run_options(args: argparse.Namespace) -> None:
    """--retries, --timeout and --connections, for this run's in-process worker (workers of
    a configured Redis keep their own settings)."""
    if args.retries is not None:
        os.environ["DOWNLOADER_MAX_RETRIES"] = str(args.retries)
    if args.timeout is not None:
        os.environ["DOWNLOADER_CONNECT_TIMEOUT"] = str(args.timeout)
        os.environ["DOWNLOADER_READ_TIMEOUT"] = str(args.timeout)
    if args.connections is not None:
        os.environ["DOWNLOADER_SEGMENTS"] = str(args.connections)


def consuming_workers(queue: DownloadQueueService) -> list[str]:
    """The workers that take this queue's jobs right now (the one place that asks).

    The heartbeats answer at once when no worker is alive, the usual reason to ask; live
    workers are asked which queues they consume, and the answer comes as soon as each of
    them replied (a worker that died without a word makes it wait `NO_WORKER_WAIT`).
    """
    live = queue.app.live_workers()
    if not live:
        return []
    from downloader.celery_app import control

    return control.consuming_workers(
        queue.celery, queue.queue_id, timeout=NO_WORKER_WAIT, limit=len(live)
    )


def _say_when_nothing_takes_the_jobs(queue: DownloadQueueService) -> None:
    """A get that only watches would wait in silence for workers that are not coming."""
    from downloader.celery_app import control

    if control.is_paused(queue.app, queue.queue_id):
        why = (
            f"queue {queue.queue_id!r} is paused: `downloader resume` lets its workers take "
            "jobs again"
        )
    elif not consuming_workers(queue):
        why = (
            f"no worker takes the jobs of queue {queue.queue_id!r} on this Redis yet: start "
            "one with `downloader worker` (same DOWNLOADER_REDIS_URL), or run `get --worker` "
            "to download in this process"
        )
    else:
        return
    print(f"{why}. Waiting (Ctrl-C leaves the jobs queued).", file=sys.stderr, flush=True)


@dataclass
class _Source:
    """One thing `get` was asked for, checked and (for the hub) resolved before any is queued:
    a URL (`url`, maybe with the hub's `sha256`) or a whole repo (`repo`)."""

    given: str
    url: str = ""
    sha256: str | None = None
    token: str | None = None
    repo: ResolvedRepo | None = None


def _resolve(args: argparse.Namespace, urls: Sequence[str]) -> list[_Source]:
    """Every source as what will be queued: `hf://` files and repos pinned to a commit with
    their hashes (HubError when the hub refuses one: then nothing is queued)."""
    from downloader import hub

    sources = []
    for url in urls:
        token = _token(args, url)
        if not hub.is_hub_source(url):
            sources.append(_Source(url, url, args.sha256, token))
        elif _is_repo(url):
            repo = hub.resolve_repo(
                url.rstrip("/"),
                allow_patterns=args.include,
                ignore_patterns=args.exclude,
                token=token,
            )
            sources.append(_Source(url, token=token, repo=repo))
        else:
            part = hub.resolve_file(url, token=token)
            url_at_commit = str(part.url)
            token = token or hub.token_for(url_at_commit)
            sources.append(_Source(url, url_at_commit, args.sha256 or part.sha256, token))
    return sources


def _is_repo(hf_url: str) -> bool:
    """`hf://owner/name[@rev]` names a whole repo, `hf://owner/name/folder/` one folder of
    it; anything longer names one file."""
    from downloader import hub

    return hub.parse_hf_url(hf_url).path is None or hf_url.endswith("/")


def _resume_field(dest: Path, name: str) -> str:
    return f"{dest}\n{name}"


def _earlier_jobs(
    queue: DownloadQueueService,
    dest: Path,
    wanted: Mapping[str, str],
    restart: bool,
    console: Console,
) -> dict[str, Path]:
    """Take over what a stopped `get` of the same sources and destination left: their partial
    files to resume (or, with --restart, to delete). `wanted` maps how each file is remembered
    (a URL; a repo's file by its final path, as its next resolution may pin another commit) to
    the URL its new job fetches. Answers the final path to resume for each one found; costs a
    few round trips whatever the number of files."""
    from downloader.engine.filestate import PartialState, discard_partial, partial_path, state_path

    redis, key = queue.app.redis, queue.app.keys.resumable
    fields = [_resume_field(dest, name) for name in wanted]
    if not fields:
        return {}
    found = {
        name: int(raw) for name, raw in zip(wanted, redis.hmget(key, fields), strict=True) if raw
    }
    if not found:
        return {}
    redis.hdel(key, *(_resume_field(dest, name) for name in found))
    from downloader.jobs.models import DownloadJobStatus

    records = {record.id: record for record in queue.app.store.records(found.values())}
    _forget(queue, records.values())
    resumed = {}
    for name, job_id in found.items():
        record = records.get(job_id)
        if record is None or record.status is not DownloadJobStatus.WAITING:
            continue
        path = record.download_path
        if path is None:
            continue
        partial = partial_path(path)
        if not partial.exists():
            continue
        is_part = record.parent_id is not None
        label = path.relative_to(dest).as_posix() if is_part else path.name
        if restart:
            discard_partial(path, owner=None)
            console.say(f"{label}: starting over (--restart)")
            continue
        state = PartialState.load(state_path(partial))
        if state is None or state.source.url != wanted[name] or not state.source.if_range:
            console.say(f"{label}: its partial file cannot be resumed; starting over")
        elif state.segments is not None:
            done = state.segmented_done
            console.say(f"{label}: resuming its segmented download from {done} bytes")
        else:
            console.say(f"{label}: resuming from byte {partial.stat().st_size}")
        if state is not None:
            state.owner = None  # its job is gone: whichever job resumes it owns it now
            state.save(state_path(partial))
        resumed[name] = path
    return resumed


def _forget(queue: DownloadQueueService, records: Iterable[JobRecord]) -> None:
    """Remove the stopped `get`'s jobs being taken over, a repo's whole job with them (its
    parent and every part, finished ones too): nothing of it is left unfinished for ever,
    holding its files' paths."""
    store = queue.app.store
    by_queue: dict[str, set[int]] = {}
    records = list(records)
    parents = {record.parent_id for record in records if record.parent_id is not None}
    for record in [*records, *store.records(parents)]:
        ids = by_queue.setdefault(record.queue_id, set())
        ids.update([record.id, *record.part_ids])
    for queue_id, ids in by_queue.items():
        store.remove(queue_id, ids)


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


def _usage_error(args: argparse.Namespace, urls: Sequence[str]) -> str | None:
    """What is wrong with this combination of URLs and options, before anything runs."""
    from downloader import hub

    repos = [url for url in urls if hub.is_hub_source(url) and _is_repo(url)]
    if not urls:
        return "no URL given (as arguments or with -i FILE)"
    if args.output and (len(urls) != 1 or repos):
        return "-o/--output names the file of one URL only; use -d"
    if args.sha256 and (len(urls) != 1 or repos):
        return "--sha256 checks one URL only"
    if args.mirror and (len(urls) != 1 or hub.is_hub_source(urls[0])):
        return (
            "--mirror names other URLs of one http(s) URL's file (hub files take their "
            "mirrors from DOWNLOADER_HF_MIRRORS)"
        )
    if (args.include or args.exclude) and not repos:
        return "--include and --exclude select files of an hf://owner/name repo"
    return None


def cmd_get(args: argparse.Namespace) -> int:
    urls = _urls(args)
    bad = _bad_urls([*urls, *(args.mirror or ())])
    for url, why in bad:
        print(f"error: {why}: {url!r}; nothing was queued", file=sys.stderr)
    if bad:
        return EXIT_USAGE
    problem = _usage_error(args, urls)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    _apply_run_options(args)

    from downloader.hub import HubError

    try:
        sources = _resolve(args, urls)
    except HubError as exc:
        print(f"error: {exc}; nothing was queued", file=sys.stderr)
        return EXIT_ERROR

    from downloader.client.progress import Console, RetryLines
    from downloader.store.embedded import EmbeddedRedis
    from downloader.store.reservations import DestinationTakenError

    settings = load_settings()
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
    retry_lines = RetryLines(console)
    logging.getLogger("downloader.worker.runner").addHandler(retry_lines)
    logging.getLogger("downloader.worker.runner").propagate = False
    # Held past the service's close, so that stopped jobs can be recorded for the next run.
    redis_url = settings.redis_url or EmbeddedRedis.acquire(settings)
    jobs: list[Job] = []
    try:
        with _signals_interrupt():
            queue = open_service(
                args, start_worker=start_worker, redis_url=redis_url, own_jobs_only=embedded
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


def _enqueue(
    args: argparse.Namespace,
    queue: DownloadQueueService,
    sources: Sequence[_Source],
    dest: Path,
    console: Console,
    resumed: dict[str, Path],
) -> list[Job]:
    """Queue every source, in order: plain URLs in one `download_many` batch, repos as one
    multi-file job each, partial files of a stopped get one by one to resume them. Every
    file's job reports to the console (a bar per file). A destination another unfinished job
    holds refuses the whole get: what was queued before is cancelled."""
    from downloader.store.reservations import DestinationTakenError

    target = Path(args.output).expanduser().resolve() if args.output else dest
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
    sources: Sequence[_Source],
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
    sources: list[_Source],
    dest: Path,
    console: Console,
    start_worker: bool,
    embedded: bool,
    jobs: list[Job],
) -> int:
    wanted = {s.url: s.url for s in sources if s.repo is None}
    wanted |= {str(dest / f.path): str(f.url) for s in sources if s.repo for f in s.repo.files}
    resumed = _earlier_jobs(queue, dest, wanted, args.restart, console) if embedded else {}
    jobs.extend(_enqueue(args, queue, sources, dest, console, resumed))
    if not start_worker:
        _say_when_nothing_takes_the_jobs(queue)
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
        print(went, file=sys.stderr)
        return code
    from downloader.jobs.models import DownloadJob

    resumable: dict[str, int] = {}
    for job in unfinished:
        if isinstance(job, DownloadJob):
            resumable[_resume_field(dest, str(job.source))] = job.id
            continue
        for part in job.download_parts:  # a repo's files: by path, see `_earlier_jobs`
            if not part.in_terminal_state:
                resumable[_resume_field(dest, str(part.download_path))] = part.id
    if resumable:
        queue.app.redis.hset(queue.app.keys.resumable, mapping=resumable)
    console.say("interrupted: partial files are kept; run the same command again to resume")
    return code
