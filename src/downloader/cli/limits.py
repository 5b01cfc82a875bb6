"""`downloader limits`: the limits the fleet shares, and what it does with each host; `limits
set` and `limits unset` change them for every worker and client of the Redis within 2 s."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from downloader.cli.common import at_least, open_service, rate

if TYPE_CHECKING:
    from downloader.client.limits import LimitsReport


def cmd_limits(args: argparse.Namespace) -> int:
    with open_service(args, follow=False) as service:
        if args.action == "set":
            service.limits.set(
                host=args.host,
                connections=args.connections,
                bandwidth=args.bandwidth,
                requests_per_second=args.requests_per_second,
            )
        elif args.action == "unset":
            service.limits.unset(args.host)
        report = service.limits.report()
    if getattr(args, "json", False):
        print(json.dumps(_as_json(report)))
    else:
        _print(report)
    return 0


def _as_json(report: LimitsReport) -> dict[str, object]:
    return {
        "limits": report.limits.model_dump(),
        "usage": [dataclasses.asdict(usage) for usage in report.usage],
    }


def _print(report: LimitsReport) -> None:
    from downloader.jobs.limits import format_rate

    limits = report.limits
    print(f"fleet bandwidth: {format_rate(limits.bandwidth)}")
    print(f"connections per host not named: {limits.host_connections}")
    rows = [
        ["HOST", "CONNECTIONS", "BANDWIDTH", "REQUESTS/S", "IN USE", "WAITING", "RATE", "PAUSED"]
    ]
    for usage in report.usage:
        own = limits.for_host(usage.host)
        rows.append(
            [
                usage.host,
                str(own.connections),
                format_rate(own.bandwidth),
                f"{own.requests_per_second:g}" if own.requests_per_second else "any",
                str(usage.connections),
                str(usage.waiting),
                format_rate(usage.rate) if usage.rate else "-",
                f"{usage.paused_for:.1f} s more" if usage.paused_for else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _host(text: str) -> str:
    from downloader.jobs.limits import check_host

    try:
        return check_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _per_second(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number per second: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_limits_command(commands: Any) -> None:
    """`limits`, `limits set`, `limits unset` on `commands` (the parser's subparsers)."""
    text = (
        "show the limits every worker and client of this Redis share, and each host's use "
        "(connections held, waiting, recent rate, pause); `set` and `unset` change them"
    )
    limits = commands.add_parser("limits", help=text, description=text)
    limits.add_argument("--json", action="store_true", help="one JSON object")
    limits.set_defaults(run=cmd_limits, action=None, host=None, queue=None)
    actions = limits.add_subparsers(dest="action")
    change = actions.add_parser(
        "set",
        help="set limits (of --host, else the fleet's), over DOWNLOADER_BANDWIDTH, "
        "DOWNLOADER_HOST_LIMITS and DOWNLOADER_HOST_CONNECTIONS until unset",
    )
    change.add_argument("--host", type=_host, help="a host name, e.g. huggingface.co")
    change.add_argument(
        "--connections",
        type=at_least(1),
        help="concurrent connections to --host (without it: to every host not named)",
    )
    change.add_argument(
        "--bandwidth",
        type=rate,
        help="bytes per second of --host (without it: of the whole fleet): 500K, 20M, 1G, "
        "100MiB; 0 is unlimited",
    )
    change.add_argument(
        "--requests-per-second",
        type=_per_second,
        help="requests the fleet starts per second to --host; 0 is any",
    )
    change.add_argument("--json", action="store_true", help="one JSON object")
    drop = actions.add_parser(
        "unset", help="drop the limits set of --host (else the fleet's): the settings' apply"
    )
    drop.add_argument("--host", type=_host, help="a host name")
    drop.add_argument("--json", action="store_true", help="one JSON object")
