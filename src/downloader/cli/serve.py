"""The long-running processes: a Celery worker, the REST API, Flower."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from downloader.api.exposure import is_loopback
from downloader.cli.common import EXIT_ERROR, EXIT_USAGE, load_settings, queue_of, redis_failure

_BAD_BASIC_AUTH = (
    "FLOWER_BASIC_AUTH (or --basic-auth) is blank or holds an entry that is not user:password "
    "with both set (entries are separated by commas)"
)


def cmd_worker(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """A Celery worker; it exits non-zero, with one line, when its broker fails for good (a
    supervisor must restart it rather than take it for a clean stop)."""
    from downloader.celery_app import app
    from downloader.celery_app.logs import quiet_task_lines

    runtime = app.runtime
    # Reach Redis first: a refused login, a certificate that does not verify or a forbidden
    # command fails here at once (a Redis still starting is waited for, for
    # `DOWNLOADER_REDIS_RIDE_OUT`), rather than in Celery's consumer, which retries a refused
    # login for ever.
    runtime.remember_redis()
    argv = [
        "worker",
        f"--concurrency={args.concurrency or runtime.settings.concurrency}",
        f"--queues={runtime.keys.celery_queue(queue_of(args))}",
        f"--loglevel={args.loglevel}",
        # No mingle: at start a Celery worker waits a second for its neighbours' revoked task
        # ids and clocks; this queue cancels through its store, never through Celery revokes,
        # so a worker (and every scale-out step) starts a second sooner.
        "--without-mingle",
        *extra,
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    quiet_task_lines(args.loglevel)
    if args.metrics_port:
        from downloader.api.metrics import serve
        from downloader.client.limits import FleetLimits
        from downloader.store.admin import StoreAdmin

        where = f"{args.metrics_host}:{args.metrics_port}"
        if not is_loopback(args.metrics_host):
            _say(
                "worker",
                f"warning: metrics on {where} with no authentication: whoever reaches it reads "
                "queue names and job counts; restrict it (a network policy, a firewall) or "
                "scrape the API's /metrics, which needs the key",
            )
        try:
            hosts = FleetLimits(lambda: runtime)
            known = runtime.settings.metrics_known_queues
            serve(StoreAdmin(runtime.store), args.metrics_port, args.metrics_host, hosts, known)
        except OSError as exc:  # a port in use, an address not on this machine
            _say("worker", f"cannot serve metrics on {where}: {exc.strerror or exc}")
            return EXIT_USAGE
    code = int(app.start(argv) or 0)
    if app.fatal_error is not None:
        _say("worker", f"error: {redis_failure(app.fatal_error) or app.fatal_error}")
        return code or EXIT_ERROR
    return code


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
    """Flower, once it is known to have credentials or to serve this machine only: it shows
    every task and can revoke them and shut workers down."""
    flower_argv = [f"--address={args.address}", f"--port={args.port}", *extra]
    refusal = _flower_refusal(flower_argv, args.no_auth)
    if refusal is not None:
        _say("flower", refusal)
        return EXIT_USAGE
    from downloader.celery_app import app

    app.start(["flower", *flower_argv])
    return 0


def _flower_refusal(flower_argv: Sequence[str], no_auth: bool) -> str | None:
    """Why Flower must not start with these options, or None. Flower's own reading of its
    environment, command line and config file says what is configured (it reads them again
    the same way when it starts)."""
    from flower.command import apply_env_options, apply_options
    from tornado.options import options

    apply_env_options()
    apply_options("flower", list(flower_argv))
    entries = list(options.basic_auth or [])
    if not all(user and password for user, _, password in (e.partition(":") for e in entries)):
        return _BAD_BASIC_AUTH  # FLOWER_BASIC_AUTH="" is [""]: a lock nobody can open
    if entries or options.auth:
        return None
    address = options.address or "every interface"
    if options.unix_socket:
        _say("flower", f"warning: authentication is off (unix socket {options.unix_socket})")
    elif is_loopback(options.address):
        _say("flower", f"warning: authentication is off (loopback {address} only)")
    elif no_auth:
        _say(
            "flower",
            f"warning: authentication is OFF on {address} (--no-auth): whoever reaches this "
            "address sees every task and can revoke tasks and shut workers down",
        )
    else:
        return (
            f"Flower has no credentials and --address {address} is not a loopback address: "
            "set FLOWER_BASIC_AUTH=user:password (or --basic-auth=user:password, or --auth "
            "with an OAuth provider), or pass --no-auth to serve it without authentication"
        )
    return None


def _say(command: str, line: str) -> None:
    print(f"downloader {command}: {line}", file=sys.stderr)
