"""The command line's options and its entry point: a bad value is one line, never a traceback."""

from __future__ import annotations

import argparse
import gc
import re
import sys
from collections.abc import Sequence
from typing import Any

from downloader.cli.common import (
    EXIT_ERROR,
    EXIT_USAGE,
    at_least,
    load_settings,
    rate,
    redis_failure,
)
from downloader.cli.get import cmd_get
from downloader.cli.jobs import (
    STATUS_WORDS,
    cmd_cancel,
    cmd_clear,
    cmd_events,
    cmd_list,
    cmd_prune,
    cmd_status,
)
from downloader.cli.limits import add_limits_command
from downloader.cli.serve import cmd_api, cmd_flower, cmd_worker
from downloader.cli.steering import add_steering_commands
from downloader.jobs.queues import check_queue_id

EVERY_QUEUE = (
    "every queue, the gets' own too (the default without --queue on the embedded default, "
    "where every queue is yours)"
)


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


def _port(text: str) -> int:
    port = at_least(1)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _queue_id(text: str) -> str:
    try:
        return check_queue_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        sub.add_argument(
            "--queue",
            type=_queue_id,
            help="queue id (default: DOWNLOADER_QUEUE_ID, else 'default')",
        )
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
        "--mirror",
        action="append",
        metavar="URL",
        help="another URL of the one URL's file, used where its size and ETag match "
        "(repeatable; the token is never sent to it)",
    )
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
        "--retries", type=at_least(0), help="retries of a failing transfer (default: 5)"
    )
    get.add_argument("--timeout", type=_seconds, help="seconds to connect and between bytes")
    get.add_argument(
        "--connections",
        type=at_least(1),
        help="connections for one large file, fixed (default: auto, from 8 up to the host's cap)",
    )
    get.add_argument(
        "--parallel", type=at_least(1), default=5, help="parallel downloads in this process"
    )
    get.add_argument(
        "--limit-rate",
        type=rate,
        metavar="RATE",
        help="bandwidth of each of these downloads (each file of a repo), within the fleet's "
        "limits: 500K, 20M, 1G, 100MiB (powers of 1024, as curl)",
    )
    partial = get.add_mutually_exclusive_group()
    partial.add_argument(
        "-c",
        "--continue",
        dest="resume",
        action="store_true",
        help="resume partial files: the default already (accepted as wget's and aria2c's -c)",
    )
    partial.add_argument(
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
        "(e.g. --max-tasks-per-child=100, --without-gossip) go to `celery worker`",
    )
    worker.add_argument("-c", "--concurrency", type=at_least(1), help="parallel downloads")
    worker.add_argument("-n", "--hostname", help="worker node name, e.g. w1@%%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--metrics-port", type=_port, help="serve Prometheus metrics on this port (/metrics)"
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics port (default: %(default)s; it has no authentication: "
        "beyond loopback, restrict it with a network policy, or scrape the API's /metrics)",
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
    listing.add_argument("--limit", type=at_least(1), help="only the newest N jobs")
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

    command("clear", "cancel and remove every job of the queue").set_defaults(run=cmd_clear)

    add_steering_commands(command)
    prune = command("prune", "remove the finished jobs of the queue (of every queue: see --all)")
    prune.add_argument("--all", action="store_true", help=EVERY_QUEUE)
    prune.set_defaults(run=cmd_prune)

    events = command("events", "print every event as one JSON line")
    events.add_argument("--all", action="store_true", help="events of every queue")
    events.set_defaults(run=cmd_events)

    add_limits_command(commands)

    api = command("api", "serve the REST API and the event stream (OpenAPI at /docs)")
    api.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    api.add_argument("--port", type=_port, default=8000, help="port (default: %(default)s)")
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
        "go to Flower; beyond loopback it needs credentials (FLOWER_BASIC_AUTH, --basic-auth "
        "or --auth)",
    )
    flower.add_argument("--address", default="127.0.0.1", help="address (default: %(default)s)")
    flower.add_argument("--port", type=_port, default=5555, help="port (default: %(default)s)")
    flower.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without credentials on a non-loopback address: anyone who reaches it sees "
        "every task and can shut workers down",
    )
    flower.set_defaults(run=cmd_flower)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if args.run in (cmd_flower, cmd_worker):  # what they do not know goes to Celery or Flower
        try:
            load_settings()  # here, or Celery's import of the app says it in a traceback
            return int(args.run(args, extra))
        except ValueError as exc:
            return _refused(exc)
        except Exception as exc:
            return _failed(exc)
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = int(args.run(args) or 0)
    except ValueError as exc:  # a setting or a value given (pydantic's errors are ValueErrors)
        return _refused(exc)
    except OSError as exc:  # a file named on the command line (--token-file, -i)
        if not exc.filename:
            return _failed(exc)
        print(f"downloader: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        return _failed(exc)
    # The process ends now: keep the interpreter's last garbage collection from walking the
    # whole heap of Celery, kombu and pydantic objects (about 0.15 s after a `get`).
    gc.freeze()
    return code


def _failed(exc: Exception) -> int:
    """Redis cannot be reached, refused us or did not replicate: one line, exit 1. Anything
    else is a bug, and its traceback is wanted."""
    line = redis_failure(exc)
    if line is None:
        raise exc
    print(f"downloader: error: {line}", file=sys.stderr)
    return EXIT_ERROR


def _refused(exc: ValueError) -> int:
    print(f"downloader: error: {_said(exc)}", file=sys.stderr)
    return EXIT_USAGE


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
    if not setting:
        return "_".join(map(str, loc))
    inner = "".join(f"[{part!r}]" for part in loc[1:])  # a key or field inside a JSON value
    return f"DOWNLOADER_{str(loc[0]).upper()}{inner}"


if __name__ == "__main__":
    sys.exit(main())
