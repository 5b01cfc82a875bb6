"""The `downloader` command: get, worker, list, cancel, events.

Every sub-command works against the configured Redis (`DOWNLOADER_REDIS_URL`) or, without
one, the embedded Redis shared by all of this user's processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from downloader.config import Settings
from downloader.events import Subscription
from downloader.models import DownloadJob, DownloadJobStatus
from downloader.progress import TqdmProgress
from downloader.service import DownloadQueueService, UnknownJobIDException


def _service(args: argparse.Namespace, start_worker: bool = False) -> DownloadQueueService:
    return DownloadQueueService(
        max_parallel_dl=getattr(args, "parallel", 5),
        queue_id=args.queue,
        start_worker=start_worker,
    )


def cmd_get(args: argparse.Namespace) -> int:
    dest = Path(args.dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    # Without a configured Redis nobody else will run the jobs: work in this process.
    start_worker = args.worker or Settings().redis_url is None
    progress = TqdmProgress(leave=True)
    with _service(args, start_worker=start_worker) as queue:
        jobs = [
            queue.download(
                url,
                dest,
                priority=args.priority,
                access_token=args.token,
                on_progress=progress.update,
                on_complete=progress.update,
            )
            for url in args.urls
        ]
        try:
            for job in jobs:
                queue.wait_for_job(job)
        except KeyboardInterrupt:
            for job in jobs:
                queue.cancel_job(job)
            progress.close()
            print("interrupted: the downloads were cancelled", file=sys.stderr)
            return 130
        progress.close()
    failed = 0
    for job in jobs:
        if job.status == DownloadJobStatus.COMPLETED:
            print(f"{job.download_path}")
        else:
            failed += 1
            print(f"error: {job.source}: {job.error_type}", file=sys.stderr)
    return 1 if failed else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from downloader.celery_app import app

    argv = [
        "worker",
        f"--concurrency={args.concurrency or app.settings.concurrency}",
        f"--queues={app.celery_queue(args.queue)}",
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
        check_exposure(configured_key(Settings()), args.host, args.no_auth)
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


def _row(job: DownloadJob) -> list[str]:
    status = job.status.value
    if job.cancelled:
        status = "cancelled"
    size = f"{job.bytes}/{job.total_bytes}" if job.total_bytes else str(job.bytes)
    where = str(job.download_path) if job.download_path else str(getattr(job, "source", job.dest))
    return [str(job.id), status, str(job.priority), size, where]


def cmd_list(args: argparse.Namespace) -> int:
    with _service(args) as queue:
        jobs = queue.list_jobs()
    if args.json:
        for job in jobs:
            print(job.model_dump_json(exclude_none=True))
        return 0
    rows = [["ID", "STATUS", "PRIORITY", "BYTES", "PATH OR SOURCE"]] + [_row(j) for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[4]
        )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    status = 0
    with _service(args) as queue:
        for job_id in args.ids:
            try:
                queue.cancel_job(queue.id_to_job(job_id))
                print(f"cancelled {job_id}")
            except UnknownJobIDException:
                print(f"error: no job {job_id} in queue {args.queue!r}", file=sys.stderr)
                status = 1
    return status


def cmd_events(args: argparse.Namespace) -> int:
    with _service(args) as queue:
        subscription = Subscription(
            queue.app.redis, queue.app.settings.namespace, None if args.all else args.queue
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


def build_parser() -> argparse.ArgumentParser:
    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="downloader",
        description="A distributed download queue on Celery and Redis. Uses DOWNLOADER_REDIS_URL,"
        " or an embedded Redis when it is unset.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--queue", default=settings.queue_id, help="queue id (default: %(default)s)"
        )
        return sub

    get = command("get", "download URLs, with a progress bar per file")
    get.add_argument("urls", nargs="+", metavar="URL")
    get.add_argument("-d", "--dest", default=".", help="directory to save into (default: .)")
    get.add_argument("--priority", type=int, default=10, help="lower runs first (default: 10)")
    get.add_argument("--token", help="bearer token, sent only to the URL's own host")
    get.add_argument("--parallel", type=int, default=5, help="parallel downloads in this process")
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
    listing.set_defaults(run=cmd_list)

    cancel = command("cancel", "cancel jobs by id")
    cancel.add_argument("ids", nargs="+", type=int, metavar="ID")
    cancel.set_defaults(run=cmd_cancel)

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
