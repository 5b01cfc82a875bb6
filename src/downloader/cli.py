"""The `downloader` command: get, worker, list, status, cancel, pause, resume, prune, clear, events.

Every sub-command works against the configured Redis (`DOWNLOADER_REDIS_URL`) or, without
one, the embedded Redis shared by all of this user's processes. Only the standard library is
imported up front: `downloader --help` must answer at once, so Celery, requests and pydantic
are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import json
import logging
import os
import re
import signal
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from downloader.hub import ResolvedRepo
    from downloader.models import DownloadJob, MultiFileDownloadJob
    from downloader.progress import Console
    from downloader.service import DownloadQueueService

    Job = DownloadJob | MultiFileDownloadJob

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
RESUME_KEY = "cli:resumable"
"""Under the namespace: a hash from `<dest>\\n<url>` (a repo's file: `<dest>\\n<its final path>`)
to the job a stopped `get` left waiting."""
EVERY_QUEUE = (
    "every queue, the gets' own too (the default without --queue on the embedded default, "
    "where every queue is yours)"
)
HF_HOSTS = ("huggingface.co", "hf.co")
NO_WORKER_WAIT = 1.5
"""Seconds to wait for workers to answer before saying that none consumes the queue."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM reached `get`: its exit status is 128 + the signal's number."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _settings() -> Any:
    from downloader.config import Settings

    return Settings()


def _queue_id(args: argparse.Namespace) -> str:
    return args.queue or _settings().queue_id


def _service(
    args: argparse.Namespace, start_worker: bool = False, **kwargs: Any
) -> DownloadQueueService:
    from downloader.service import DownloadQueueService

    return DownloadQueueService(
        max_parallel_dl=getattr(args, "parallel", 5),
        queue_id=_queue_id(args),
        start_worker=start_worker,
        **kwargs,
    )


# -- get ----------------------------------------------------------------------------------


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
    """--token-file, else DOWNLOADER_TOKEN, else HF_TOKEN for Hugging Face hosts (--token is
    still taken, but `ps` shows it to everyone on the machine). An `hf://` source takes only
    a token given on the command line; without one the hub finds HF_TOKEN or its token file."""
    if args.token_file:
        return Path(args.token_file).expanduser().read_text().strip() or None
    if args.token:
        return args.token
    from downloader import hub

    if hub.is_hub_source(url):
        return None
    if os.environ.get("DOWNLOADER_TOKEN"):
        return os.environ["DOWNLOADER_TOKEN"]
    host = (urlsplit(url).hostname or "").lower()
    if any(host == hf or host.endswith("." + hf) for hf in HF_HOSTS):
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
    from downloader import processor

    return processor.consuming_workers(
        queue.celery, queue.queue_id, timeout=NO_WORKER_WAIT, limit=len(live)
    )


def _say_when_nothing_takes_the_jobs(queue: DownloadQueueService) -> None:
    """A get that only watches would wait in silence for workers that are not coming."""
    from downloader import processor

    if processor.is_paused(queue.app, queue.queue_id):
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
    from downloader.filestate import PartialState, discard_partial, partial_path, state_path

    redis, key = queue.app.redis, f"{queue.app.keys.namespace}:{RESUME_KEY}"
    fields = [_resume_field(dest, name) for name in wanted]
    if not fields:
        return {}
    found = {
        name: int(raw) for name, raw in zip(wanted, redis.hmget(key, fields), strict=True) if raw
    }
    if not found:
        return {}
    redis.hdel(key, *(_resume_field(dest, name) for name in found))
    records = {record["id"]: record for record in queue.app.store.records(found.values())}
    _forget(queue, records.values())
    resumed = {}
    for name, job_id in found.items():
        record = records.get(job_id)
        if record is None or record.get("status") != "waiting":
            continue
        if not record.get("download_path"):
            continue
        path = Path(record["download_path"])
        partial = partial_path(path)
        if not partial.exists():
            continue
        is_part = record.get("parent_id") is not None
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


def _forget(queue: DownloadQueueService, records: Iterable[dict[str, Any]]) -> None:
    """Remove the stopped `get`'s jobs being taken over, a repo's whole job with them (its
    parent and every part, finished ones too): nothing of it is left unfinished for ever,
    holding its files' paths."""
    store = queue.app.store
    by_queue: dict[str, set[int]] = {}
    records = list(records)
    parents = {record["parent_id"] for record in records if record.get("parent_id") is not None}
    for record in [*records, *store.records(parents)]:
        ids = by_queue.setdefault(record["queue_id"], set())
        ids.update([record["id"], *record.get("part_ids", ())])
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
    if (args.include or args.exclude) and not repos:
        return "--include and --exclude select files of an hf://owner/name repo"
    return None


def cmd_get(args: argparse.Namespace) -> int:
    urls = _urls(args)
    bad = _bad_urls(urls)
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

    from downloader.embedded import EmbeddedRedis
    from downloader.progress import Console, RetryLines
    from downloader.reservations import DestinationTakenError

    settings = _settings()
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
    logging.getLogger("downloader.runner").addHandler(retry_lines)
    logging.getLogger("downloader.runner").propagate = False
    # Held past the service's close, so that stopped jobs can be recorded for the next run.
    redis_url = settings.redis_url or EmbeddedRedis.acquire(settings)
    jobs: list[Job] = []
    try:
        with _signals_interrupt():
            queue = _service(
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
    from downloader.reservations import DestinationTakenError

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
    from downloader.models import DownloadJob

    resumable: dict[str, int] = {}
    for job in unfinished:
        if isinstance(job, DownloadJob):
            resumable[_resume_field(dest, str(job.source))] = job.id
            continue
        for part in job.download_parts:  # a repo's files: by path, see `_earlier_jobs`
            if not part.in_terminal_state:
                resumable[_resume_field(dest, str(part.download_path))] = part.id
    if resumable:
        queue.app.redis.hset(f"{queue.app.keys.namespace}:{RESUME_KEY}", mapping=resumable)
    console.say("interrupted: partial files are kept; run the same command again to resume")
    return code


# -- other commands -----------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    from downloader.celery_app import app

    argv = [
        "worker",
        f"--concurrency={args.concurrency or app.settings.concurrency}",
        f"--queues={app.celery_queue(_queue_id(args))}",
        f"--loglevel={args.loglevel}",
        *extra,
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    if args.metrics_port:
        from downloader.metrics import serve

        serve(app.store, args.metrics_port)
    app.worker_main(argv)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from downloader.api import create_api
    from downloader.api.auth import ApiKeyError, check_exposure, configured_key

    logging.basicConfig(format="%(levelname)s:     %(message)s")  # warnings, as uvicorn writes them
    try:
        check_exposure(configured_key(_settings()), args.host, args.no_auth)
        app = create_api()
    except ApiKeyError as exc:
        print(f"downloader api: {exc}", file=sys.stderr)
        return 2
    # An open event stream must not keep Ctrl-C waiting for ever.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


def cmd_flower(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    from downloader.celery_app import app

    app.start(["flower", f"--address={args.address}", f"--port={args.port}", *extra])
    return 0


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


STATUS_WORDS = ("waiting", "running", "completed", "error", "cancelled")


def _status_word(record: dict[str, Any]) -> str:
    return "cancelled" if record.get("cancelled") else str(record["status"])


def _index_ids(redis: Any, key: str, newest_first: bool) -> Iterator[int]:
    """The job ids of one index (scored by id), a page at a time."""
    from downloader.store import BATCH

    bound: str | None = None
    while True:
        if newest_first:
            page = redis.zrevrangebyscore(key, bound or "+inf", "-inf", start=0, num=BATCH)
        else:
            page = redis.zrangebyscore(key, bound or "-inf", "+inf", start=0, num=BATCH)
        ids = [int(x) for x in page]
        yield from ids
        if len(ids) < BATCH:
            return
        bound = f"({ids[-1]}"


def _listed_records(
    queue: DownloadQueueService, args: argparse.Namespace, newest_first: bool
) -> Iterator[dict[str, Any]]:
    """The records `list` shows, read a page at a time from the per-queue (and per-status)
    indexes, in id order; memory and round trips follow the page, not the queue."""
    from downloader.store import BATCH

    store = queue.app.store
    keys = store.keys
    queue_ids = _queues(queue, args)
    indexes = []
    for queue_id in queue_ids:
        store.sweep_expired(queue_id, queue.app.settings.result_ttl)
        if args.status:
            indexes += [keys.queue_status(queue_id, word) for word in args.status]
        else:
            indexes.append(keys.queue_jobs(queue_id))
    walks = [_index_ids(store.redis, key, newest_first) for key in indexes]
    ids = (job_id for job_id, _ in itertools.groupby(heapq.merge(*walks, reverse=newest_first)))
    while page := list(itertools.islice(ids, BATCH)):
        for record in store.records(page):
            if args.status and _status_word(record) not in args.status:
                continue  # a cancelled job is in the error index too
            if record.get("parent_id") is not None and not args.parts:
                continue
            yield record


def cmd_list(args: argparse.Namespace) -> int:
    with _service(args) as queue:
        records = _listed_records(queue, args, newest_first=bool(args.limit))
        if args.limit:
            records = iter(list(itertools.islice(records, args.limit))[::-1])
        jobs = map(queue.app.store.to_model, records)
        if args.json:
            for job in jobs:
                row = {**json.loads(job.model_dump_json()), "cancelled": job.cancelled}
                print(json.dumps(row))
        else:
            _print_table(jobs)
    return 0


def _find_job(queue: DownloadQueueService, args: argparse.Namespace, job_id: int) -> Job | None:
    """Job `job_id` in whichever queue holds it (ids are unique in a namespace: `list --all`
    shows the gets' own queues too), or only in `--queue` when one is given."""
    record = queue.app.store.record(job_id)
    if record is None or (args.queue and record.get("queue_id") != args.queue):
        where = f" in queue {args.queue!r}" if args.queue else ""
        print(f"error: no job {job_id}{where}", file=sys.stderr)
        return None
    return queue.app.store.to_model(record)


def cmd_status(args: argparse.Namespace) -> int:
    from downloader.progress import describe_error

    code = 0
    shown: list[Job] = []
    with _service(args) as queue:
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
                print(f"  {job.id}: {describe_error(job.error_type)}")
    return code


def cmd_cancel(args: argparse.Namespace) -> int:
    from downloader.runner import tidy_cancelled

    status = 0
    with _service(args) as queue:
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
            if queue.app.settings.redis_url is None:
                # The embedded default is this machine's: what a stopped get left (no worker
                # of its queue will come for it) is removed here, if the cancel ended the job.
                tidy_cancelled(queue.app, job_id, "cli")
            print(f"cancelled {job_id}")
    return status


def cmd_pause(args: argparse.Namespace) -> int:
    from downloader import processor

    with _service(args) as queue:
        processor.pause(queue.celery, queue.queue_id)
        embedded = queue.app.settings.redis_url is None
    print(f"paused queue {queue.queue_id!r}: running downloads go on, no new one starts")
    if embedded and not args.queue:
        print(
            "(on the embedded default each `get` runs its own jobs in its own process: Ctrl-C "
            "stops one, and running it again resumes)"
        )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from downloader import processor

    with _service(args) as queue:
        processor.resume(queue.celery, queue.queue_id)
    print(f"resumed queue {queue.queue_id!r}")
    return 0


def _queues(queue: DownloadQueueService, args: argparse.Namespace) -> list[str]:
    """The queues `list` and `prune` look at: every queue with `--all`, and on the embedded
    default unless `--queue` names one (every queue there is this user's, each `get` has
    its own); else the service's queue."""
    embedded = queue.app.settings.redis_url is None
    if args.all or (embedded and not args.queue):
        return queue.app.store.queue_names()
    return [queue.queue_id]


def cmd_prune(args: argparse.Namespace) -> int:
    with _service(args) as queue:
        removed = sum(len(queue.app.store.prune(queue_id)) for queue_id in _queues(queue, args))
    print(f"removed {removed} finished job(s)")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    with _service(args) as queue:
        queue.cancel_all_jobs()
        ids = queue.app.store.queue_ids(queue.queue_id)
        queue.app.store.remove(queue.queue_id, ids)
    print(f"cancelled and removed {len(ids)} job(s)")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from downloader.events import Subscription

    with _service(args) as queue:
        subscription = Subscription(
            queue.app.redis, queue.app.settings.namespace, None if args.all else queue.queue_id
        )
        try:
            for payload in subscription:
                if payload is not None:
                    print(json.dumps(payload), flush=True)
        except KeyboardInterrupt:
            return 0
        finally:
            subscription.close()
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("downloader")
    except PackageNotFoundError:
        return "unknown"


class _Version(argparse.Action):
    """--version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"downloader {_version()}")
        parser.exit()


def _at_least(minimum: int) -> Any:
    """An argparse type: a whole number from `minimum` on, or a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _sha256(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError("a SHA-256 is 64 hexadecimal digits")
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="downloader",
        description="A distributed download queue on Celery and Redis. Uses DOWNLOADER_REDIS_URL,"
        " or an embedded Redis when it is unset.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--queue", help="queue id (default: DOWNLOADER_QUEUE_ID, else 'default')")
        return sub

    get = command(
        "get",
        "download URLs and hf://owner/name[@rev][/path] sources (a repo as one job), with a "
        "progress bar per file; without DOWNLOADER_REDIS_URL each get runs its own jobs in "
        "this process (--queue default: a queue of its own)",
    )
    get.add_argument("urls", nargs="*", metavar="URL")
    get.add_argument("-i", "--input-file", help="read URLs from FILE, one per line ('-': stdin)")
    get.add_argument("-d", "--dest", default=".", help="directory to save into (default: .)")
    get.add_argument("-o", "--output", help="file to save the one URL as")
    get.add_argument(
        "-q", "--quiet", action="store_true", help="no progress: only errors and saved paths"
    )
    get.add_argument("--json", action="store_true", help="print one JSON object per job")
    get.add_argument("--sha256", type=_sha256, help="expected SHA-256 of the one URL's file")
    get.add_argument("--priority", type=int, default=10, help="lower runs first (default: 10)")
    get.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="of an hf:// repo, only the files matching this glob (repeatable)",
    )
    get.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="of an hf:// repo, not the files matching this glob (repeatable)",
    )
    get.add_argument("--token", help="bearer token (visible in `ps`: prefer --token-file)")
    get.add_argument(
        "--token-file",
        help="file holding the bearer token; else DOWNLOADER_TOKEN, else HF_TOKEN for "
        "huggingface.co; sent only to the URL's own host",
    )
    get.add_argument(
        "--retries", type=_at_least(0), help="retries of a failing transfer (default: 5)"
    )
    get.add_argument("--timeout", type=_seconds, help="seconds to connect and between bytes")
    get.add_argument("--connections", type=_at_least(1), help="connections for one large file (8)")
    get.add_argument(
        "--parallel", type=_at_least(1), default=5, help="parallel downloads in this process"
    )
    get.add_argument(
        "--restart", action="store_true", help="start over instead of resuming partial files"
    )
    get.add_argument(
        "--worker",
        action="store_true",
        help="also download in this process when a Redis URL is configured (the default "
        "with the embedded Redis)",
    )
    get.set_defaults(run=cmd_get)

    worker = command(
        "worker",
        "run a Celery worker; its thread count is its parallel downloads; other options "
        "(e.g. --without-mingle, --max-tasks-per-child=100) go to `celery worker`",
    )
    worker.add_argument("-c", "--concurrency", type=_at_least(1), help="parallel downloads")
    worker.add_argument("-n", "--hostname", help="worker node name, e.g. w1@%%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (/metrics)"
    )
    worker.set_defaults(run=cmd_worker)

    listing = command("list", "show the jobs of the queue")
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    listing.add_argument(
        "--status",
        action="append",
        choices=STATUS_WORDS,
        help="only jobs in this state (repeatable)",
    )
    listing.add_argument("--limit", type=_at_least(1), help="only the newest N jobs")
    listing.add_argument("--all", action="store_true", help=EVERY_QUEUE)
    listing.add_argument("--parts", action="store_true", help="list multi-file parts too")
    listing.set_defaults(run=cmd_list)

    status = command("status", "show jobs by id")
    status.add_argument("ids", nargs="+", type=int, metavar="ID")
    status.add_argument("--json", action="store_true", help="one JSON object per job")
    status.set_defaults(run=cmd_status)

    cancel = command("cancel", "cancel jobs by id")
    cancel.add_argument("ids", nargs="+", type=int, metavar="ID")
    cancel.set_defaults(run=cmd_cancel)

    for name, run, text in (
        ("pause", cmd_pause, "workers stop taking the queue's jobs; running ones go on"),
        ("resume", cmd_resume, "workers take the queue's jobs again"),
        ("clear", cmd_clear, "cancel and remove every job of the queue"),
    ):
        command(name, text).set_defaults(run=run)
    prune = command("prune", "remove the finished jobs of the queue (of every queue: see --all)")
    prune.add_argument("--all", action="store_true", help=EVERY_QUEUE)
    prune.set_defaults(run=cmd_prune)

    events = command("events", "print every event as one JSON line")
    events.add_argument("--all", action="store_true", help="events of every queue")
    events.set_defaults(run=cmd_events)

    api = command("api", "serve the REST API and the event stream (OpenAPI at /docs)")
    api.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    api.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    api.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without DOWNLOADER_API_KEY on a non-loopback address: anyone who reaches "
        "it can use the API (without a key on loopback, or with a key, it is not needed)",
    )
    api.set_defaults(run=cmd_api)

    flower = command(
        "flower",
        "run Flower on the download workers; other options (e.g. --basic-auth=user:pass) "
        "go to Flower",
    )
    flower.add_argument("--address", default="127.0.0.1", help="address (default: %(default)s)")
    flower.add_argument("--port", type=int, default=5555, help="port (default: %(default)s)")
    flower.set_defaults(run=cmd_flower)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if args.run in (cmd_flower, cmd_worker):
        return int(args.run(args, extra))
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = int(args.run(args) or 0)
    except ValueError as exc:  # a setting or a value given (pydantic's errors are ValueErrors)
        print(f"downloader: error: {_said(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file named on the command line (--token-file, -i)
        if not exc.filename:
            raise
        print(f"downloader: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    # The process ends now: keep the interpreter's last garbage collection from walking the
    # whole heap of Celery, kombu and pydantic objects (about 0.15 s after a `get`).
    gc.freeze()
    return code


def _said(exc: ValueError) -> str:
    """A refused value as one line: a setting by its variable's name, never its value (it
    may be a token)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's: a setting, or a field of a job
        settings = getattr(exc, "title", None) == "Settings"
        return "; ".join(
            f"{_field_name(e['loc'], settings)}: {e['msg'].removeprefix('Value error, ')}"
            for e in errors(include_input=False)
        )
    field = re.search(r'field "(\w+)"', str(exc))
    if type(exc).__name__ == "SettingsError" and field:
        return f"DOWNLOADER_{field.group(1).upper()} is not valid JSON"
    return str(exc).splitlines()[0]


def _field_name(loc: Sequence[object], setting: bool) -> str:
    name = "_".join(map(str, loc))
    return f"DOWNLOADER_{name.upper()}" if setting else name


if __name__ == "__main__":
    sys.exit(main())
