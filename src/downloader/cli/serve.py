"""The long-running processes: a Celery worker, the REST API, Flower."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from downloader.cli.common import load_settings, queue_of


def cmd_worker(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    from downloader.celery_app import app

    runtime = app.runtime
    argv = [
        "worker",
        f"--concurrency={args.concurrency or runtime.settings.concurrency}",
        f"--queues={runtime.keys.celery_queue(queue_of(args))}",
        f"--loglevel={args.loglevel}",
        *extra,
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    if args.metrics_port:
        from downloader.api.metrics import serve

        serve(runtime.store, args.metrics_port)
    app.worker_main(argv)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from downloader.api import create_api
    from downloader.api.auth import ApiKeyError, check_exposure, configured_key

    logging.basicConfig(format="%(levelname)s:     %(message)s")  # warnings, as uvicorn writes them
    try:
        check_exposure(configured_key(load_settings()), args.host, args.no_auth)
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
