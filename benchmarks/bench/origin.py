"""The local nginx origin: one uncapped port and one capped per connection, like a CDN.

nginx serves the test files with `sendfile on`, so the origin costs little CPU and the
figures are the clients'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import requests

from .config import CAP_PER_CONNECTION, BenchError
from .processes import Processes, free_port, wait_until


@dataclass
class Origin:
    port: int
    capped_port: int
    pid: int = 0

    def url(self, name: str, capped: bool = False) -> str:
        return f"http://127.0.0.1:{self.capped_port if capped else self.port}/{name}"


def nginx_conf(prefix: Path, root: Path, port: int, capped_port: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read our 0700 dirs
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
{temps}
    server {{ listen 127.0.0.1:{port}; root {root}; }}
    server {{ listen 127.0.0.1:{capped_port}; root {root}; limit_rate {CAP_PER_CONNECTION}; }}
}}
"""


def start_origin(procs: Processes, nginx: str, work: Path, root: Path) -> Origin:
    prefix = work / "nginx"
    prefix.mkdir()
    origin = Origin(free_port(), free_port())
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, origin.port, origin.capped_port))
    args = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    process = procs.start(args, prefix / "stdout.log")
    origin.pid = process.pid

    def up() -> bool:
        if process.poll() is not None:
            raise BenchError(f"nginx exited: {(prefix / 'error.log').read_text(errors='replace')}")
        try:
            return all(requests.head(origin.url("tiny.bin", c), timeout=1).ok for c in (0, 1))
        except requests.ConnectionError:
            return False

    wait_until(up, 15, "nginx")
    return origin
