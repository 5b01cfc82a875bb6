"""Who can reach a server a command starts: this machine only, or every machine that can route
to it.

Beyond loopback, `downloader api` needs its key and `downloader flower` its credentials (or
an explicit `--no-auth`), and the worker's metrics port binds to loopback unless told
otherwise. The question they share is answered here, with the standard library only, so that
the CLI asks it before importing what it starts.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether listening on `host` serves this machine only. Every interface (`0.0.0.0`,
    `::`, and Flower's empty address) is not; neither is a name other than `localhost`."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
