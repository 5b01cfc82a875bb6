"""The `downloader` command: get, worker, list, status, cancel, pause, resume, prune, clear, events.

Every sub-command works against the configured Redis (`DOWNLOADER_REDIS_URL`) or, without
one, the embedded Redis shared by all of this user's processes. Only the standard library is
imported up front: `downloader --help` must answer at once, so Celery, requests and pydantic
are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from downloader.models import DownloadJob, MultiFileDownloadJob
    from downloader.progress import Console
    from downloader.service import DownloadQueueService

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
RESUME_KEY = "cli:resumable"
"""Under the namespace: a hash from `<dest>\\n<url>` to the job a stopped `get` left waiting."""
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


def _bad_urls(urls: Sequence[str]) -> list[str]:
    """URLs a download job would refuse, found before any job is queued."""
    from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

    check = TypeAdapter(AnyHttpUrl)
    bad = []
    for url in urls:
        try:
            check.validate_python(url)
        except ValidationError:
            bad.append(url)
    return bad


def _token(args: argparse.Namespace, url: str) -> str | None:
    """--token-file, else DOWNLOADER_TOKEN, else HF_TOKEN for Hugging Face hosts (--token is
    still taken, but `ps` shows it to everyone on the machine)."""
    if args.token_file:
        return Path(args.token_file).expanduser().read_text().strip() or None
    if args.token:
        return args.token
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
    """The workers that take this queue's jobs right now (the one place that asks)."""
    from downloader import processor

    return processor.consuming_workers(queue.app, queue.queue_id, timeout=NO_WORKER_WAIT)


def _resume_field(dest: Path, url: str) -> str:
    return f"{dest}\n{url}"


def _earlier_job(
    queue: DownloadQueueService, dest: Path, url: str, restart: bool, console: Console
) -> dict[str, Any]:
    """Take over what a stopped `get` of the same URL and destination left: its partial file
    to resume (or, with --restart, to delete). Answers keyword arguments for `download`."""
    from downloader.filestate import PartialState, discard_partial, partial_path, state_path

    redis, key = queue.app.redis, f"{queue.app.keys.namespace}:{RESUME_KEY}"
    field = _resume_field(dest, url)
    raw = redis.hget(key, field)
    if raw is None:
        return {}
    redis.hdel(key, field)
    record = queue.app.store.record(int(raw))
    if record is None or record.get("status") != "waiting" or not record.get("download_path"):
        return {}
    queue.app.store.remove(record["queue_id"], [record["id"]])
    path = Path(record["download_path"])
    partial = partial_path(path)
    if not partial.exists():
        return {}
    if restart:
        discard_partial(path, owner=None)
        console.say(f"{path.name}: starting over (--restart)")
        return {}
    state = PartialState.load(state_path(partial))
    if state is None or state.source.url != record["source"] or not state.source.if_range:
        console.say(f"{path.name}: its partial file cannot be resumed; starting over")
    elif state.segments is not None:
        done = state.segmented_done
        console.say(f"{path.name}: resuming its segmented download from {done} bytes")
    else:
        console.say(f"{path.name}: resuming from byte {partial.stat().st_size}")
    return {"download_path": path}


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
    urls = _urls(args)
    if not urls:
        print("error: no URL given (as arguments or with -i FILE)", file=sys.stderr)
        return EXIT_USAGE
    if args.output and len(urls) != 1:
        print("error: -o/--output names the file of one URL only; use -d", file=sys.stderr)
        return EXIT_USAGE
    if args.sha256 and len(urls) != 1:
        print("error: --sha256 checks one URL only", file=sys.stderr)
        return EXIT_USAGE
    bad = _bad_urls(urls)
    for url in bad:
        print(f"error: not an http(s) URL: {url!r}; nothing was queued", file=sys.stderr)
    if bad:
        return EXIT_USAGE
    _apply_run_options(args)

    from downloader.embedded import EmbeddedRedis
    from downloader.progress import Console, RetryLines

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
    retry_lines = RetryLines(console)
    logging.getLogger("downloader.runner").addHandler(retry_lines)
    logging.getLogger("downloader.runner").propagate = False
    # Held past the service's close, so that stopped jobs can be recorded for the next run.
    redis_url = settings.redis_url or EmbeddedRedis.acquire(settings)
    jobs: list[DownloadJob] = []
    try:
        with _signals_interrupt():
            queue = _service(args, start_worker=start_worker, redis_url=redis_url)
            try:
                return _run_get(args, queue, urls, dest, console, start_worker, embedded, jobs)
            except (KeyboardInterrupt, Interrupted) as stop:
                code = stop.code if isinstance(stop, Interrupted) else EXIT_SIGINT
                return _stopped(queue, jobs, dest, console, start_worker, code)
            finally:
                queue.close()
    finally:
        if embedded:
            EmbeddedRedis.release()


def _run_get(
    args: argparse.Namespace,
    queue: DownloadQueueService,
    urls: list[str],
    dest: Path,
    console: Console,
    start_worker: bool,
    embedded: bool,
    jobs: list[DownloadJob],
) -> int:
    for url in urls:
        earlier = _earlier_job(queue, dest, url, args.restart, console) if embedded else {}
        jobs.append(
            queue.download(
                url,
                dest,
                priority=args.priority,
                access_token=_token(args, url),
                on_progress=console.progress,
                on_complete=console.progress,
                on_error=console.error,
                sha256=args.sha256,
                **earlier,
            )
        )
    if not start_worker and not consuming_workers(queue):
        print(
            f"no worker takes the jobs of queue {queue.queue_id!r} on this Redis yet: start "
            "one with `downloader worker` (same DOWNLOADER_REDIS_URL), or run `get --worker` "
            "to download in this process. Waiting for a worker (Ctrl-C leaves the jobs queued).",
            file=sys.stderr,
            flush=True,
        )
    for job in jobs:
        queue.wait_for_job(job)
    console.summary(jobs)
    for job in jobs:
        if args.json:
            print(job.model_dump_json(exclude_none=True), flush=True)
        elif job.complete:
            print(job.download_path, flush=True)
    return 0 if all(job.complete for job in jobs) else EXIT_ERROR


def _stopped(
    queue: DownloadQueueService,
    jobs: list[DownloadJob],
    dest: Path,
    console: Console,
    start_worker: bool,
    code: int,
) -> int:
    """Ctrl-C or SIGTERM: stop this process's worker, which hands its running downloads back
    with their partial files kept, and remember the jobs so that the same `get` resumes them."""
    unfinished = [job for job in jobs if not job.in_terminal_state]
    if not start_worker:
        ids = " ".join(str(job.id) for job in unfinished)
        print(
            f"stopped watching; the workers go on with jobs {ids} (`downloader cancel` stops them)",
            file=sys.stderr,
        )
        return code
    if unfinished:
        key = f"{queue.app.keys.namespace}:{RESUME_KEY}"
        queue.app.redis.hset(
            key, mapping={_resume_field(dest, str(job.source)): job.id for job in unfinished}
        )
    console.say("interrupted: partial files are kept; run the same command again to resume")
    return code


# -- other commands -----------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from downloader.celery_app import app

    argv = [
        "worker",
        f"--concurrency={args.concurrency or app.settings.concurrency}",
        f"--queues={app.celery_queue(_queue_id(args))}",
        f"--loglevel={args.loglevel}",
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


def _row(job: DownloadJob | MultiFileDownloadJob) -> list[str]:
    status = "cancelled" if job.cancelled else job.status.value
    size = f"{job.bytes}/{job.total_bytes}" if job.total_bytes else str(job.bytes)
    where = str(job.download_path) if job.download_path else str(getattr(job, "source", job.dest))
    return [str(job.id), status, str(job.priority), size, where]


def _print_table(jobs: Sequence[DownloadJob | MultiFileDownloadJob]) -> None:
    rows = [["ID", "STATUS", "PRIORITY", "BYTES", "PATH OR SOURCE"]] + [_row(j) for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        print(cells + "  " + row[4])


def _queues(queue: DownloadQueueService, every: bool) -> list[str]:
    """This queue, or with --all every queue that has jobs (the gets' own ones included)."""
    if not every:
        return [queue.queue_id]
    namespace = queue.app.keys.namespace
    pattern = queue.app.keys.queue_jobs("*")
    found = {
        key.decode()[len(f"{namespace}:queue:") : -len(":jobs")]
        for key in queue.app.redis.scan_iter(match=pattern, count=1000)
    }
    return sorted(found)


def cmd_list(args: argparse.Namespace) -> int:
    from downloader.store import KIND_MULTIFILE

    with _service(args) as queue:
        records = [
            record
            for queue_id in _queues(queue, args.all)
            for record in queue.app.store.queue_records(queue_id)
        ]
        if args.status:
            records = [r for r in records if _status_word(r) in args.status]
        records.sort(key=lambda r: r["id"])
        if args.limit:
            records = records[-args.limit :]
        jobs = [
            queue.app.store.to_model(r)
            for r in records
            if r.get("kind") == KIND_MULTIFILE or r.get("parent_id") is None or args.parts
        ]
    if args.json:
        for job in jobs:
            print(json.dumps({**json.loads(job.model_dump_json()), "cancelled": job.cancelled}))
        return 0
    _print_table(jobs)
    return 0


STATUS_WORDS = ("waiting", "running", "completed", "error", "cancelled")


def _status_word(record: dict[str, Any]) -> str:
    return "cancelled" if record.get("cancelled") else str(record["status"])


def cmd_status(args: argparse.Namespace) -> int:
    from downloader.service import UnknownJobIDException

    code = 0
    with _service(args) as queue:
        for job_id in args.ids:
            try:
                job = queue.id_to_job(job_id)
            except UnknownJobIDException:
                print(f"error: no job {job_id} in queue {queue.queue_id!r}", file=sys.stderr)
                code = EXIT_ERROR
                continue
            if args.json:
                print(job.model_dump_json(exclude_none=True))
                continue
            from downloader.progress import describe_error

            _print_table([job])
            if job.errored:
                print(f"  {describe_error(job.error_type)}")
    return code


def cmd_cancel(args: argparse.Namespace) -> int:
    from downloader.service import UnknownJobIDException

    status = 0
    with _service(args) as queue:
        for job_id in args.ids:
            try:
                queue.cancel_job(queue.id_to_job(job_id))
                print(f"cancelled {job_id}")
            except UnknownJobIDException:
                print(f"error: no job {job_id} in queue {queue.queue_id!r}", file=sys.stderr)
                status = EXIT_ERROR
    return status


def cmd_pause(args: argparse.Namespace) -> int:
    from downloader import processor

    with _service(args) as queue:
        processor.pause(queue.app, queue.queue_id)
    print(f"paused queue {queue.queue_id!r}: running downloads go on, no new one starts")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from downloader import processor

    with _service(args) as queue:
        processor.resume(queue.app, queue.queue_id)
    print(f"resumed queue {queue.queue_id!r}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with _service(args) as queue:
        before = len(queue.app.store.queue_ids(queue.queue_id))
        queue.prune_jobs()
        removed = before - len(queue.app.store.queue_ids(queue.queue_id))
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
        "download URLs, with a progress bar per file; without DOWNLOADER_REDIS_URL each get "
        "runs its own jobs in this process (--queue default: a queue of its own)",
    )
    get.add_argument("urls", nargs="*", metavar="URL")
    get.add_argument("-i", "--input-file", help="read URLs from FILE, one per line ('-': stdin)")
    get.add_argument("-d", "--dest", default=".", help="directory to save into (default: .)")
    get.add_argument("-o", "--output", help="file to save the one URL as")
    get.add_argument("-q", "--quiet", action="store_true", help="no progress, only errors")
    get.add_argument("--json", action="store_true", help="print one JSON object per job")
    get.add_argument("--sha256", help="expected SHA-256 of the one URL's file")
    get.add_argument("--priority", type=int, default=10, help="lower runs first (default: 10)")
    get.add_argument("--token", help="bearer token (visible in `ps`: prefer --token-file)")
    get.add_argument(
        "--token-file",
        help="file holding the bearer token; else DOWNLOADER_TOKEN, else HF_TOKEN for "
        "huggingface.co; sent only to the URL's own host",
    )
    get.add_argument("--retries", type=int, help="retries of a failing transfer (default: 5)")
    get.add_argument("--timeout", type=float, help="seconds to connect and between bytes")
    get.add_argument("--connections", type=int, help="connections for one large file (8)")
    get.add_argument("--parallel", type=int, default=5, help="parallel downloads in this process")
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

    worker = command("worker", "run a Celery worker; its thread count is its parallel downloads")
    worker.add_argument("-c", "--concurrency", type=int, help="parallel downloads")
    worker.add_argument("-n", "--hostname", help="worker node name, e.g. w1@%%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (/metrics)"
    )
    worker.set_defaults(run=cmd_worker)

    listing = command("list", "show the jobs of the queue")
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    listing.add_argument(
        "--status", action="append", choices=STATUS_WORDS, help="only jobs in this state"
    )
    listing.add_argument("--limit", type=int, help="only the newest N jobs")
    listing.add_argument("--all", action="store_true", help="every queue, the gets' own too")
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
        ("prune", cmd_prune, "remove the queue's finished jobs"),
        ("clear", cmd_clear, "cancel and remove every job of the queue"),
    ):
        command(name, text).set_defaults(run=run)

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
    if args.run is cmd_flower:
        return cmd_flower(args, extra)
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
