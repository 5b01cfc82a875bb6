"""The downloaders compared: curl, aria2c, plain requests, and `downloader get` as a user
runs it, each as a `Fetcher` that downloads one URL into a directory and says how long it took.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import requests

from .config import INSTALL_HINT, MiB
from .context import Context, clean_env


@dataclass
class Sample:
    seconds: float
    engine_seconds: float | None = None
    peak_rss: int | None = None
    sha256_ok: bool | None = None


Fetcher = Callable[[str, Path], Sample]


def find_tools() -> dict[str, str | None]:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    return {"nginx": nginx, "curl": shutil.which("curl"), "aria2c": shutil.which("aria2c")}


def tool_version(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    done = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else None


def warn_missing(tools: dict[str, str | None]) -> list[str]:
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        print(f"missing: {', '.join(missing)}; install with: {INSTALL_HINT}", file=sys.stderr)
        print("the cases that need them are skipped", file=sys.stderr)
    return missing


def downloader_command(*args: str) -> list[str]:
    """`python -m downloader ARGS` with this interpreter, so the venv's package is measured."""
    return [sys.executable, "-m", "downloader", *args]


@cache
def get_help() -> str:
    """`downloader get --help`, to see which options this build's `get` has."""
    done = subprocess.run(
        downloader_command("get", "--help"), capture_output=True, text=True, timeout=60
    )
    return done.stdout


def get_has(option: str) -> bool:
    return any(word.strip(",[]") == option for word in get_help().split())


def embedded_env(ctx: Context, **settings: str | int | None) -> dict[str, str]:
    """`downloader get` on the embedded default: no Redis URL, the run's own state directory."""
    return clean_env(state_dir=ctx.work / "state", **settings)


def cli_get(ctx: Context, segments: int | None) -> Fetcher:
    """`downloader get URL -d DIR` on the embedded default (no DOWNLOADER_REDIS_URL)."""
    env = embedded_env(ctx, segments=segments)

    def fetch(url: str, dest: Path) -> Sample:
        args = downloader_command("get", url, "-d", str(dest))
        return Sample(ctx.procs.run(args, ctx.log(f"get-{segments}"), env))

    return fetch


def saved_as(url: str, dest: Path) -> Path:
    """Where a peer tool's fetch of `url` into `dest` puts the file: its URL's last name."""
    return dest / url.rsplit("/", 1)[1]


def requests_fetch(url: str, dest: Path) -> Sample:
    """Plain requests, streaming 1 MiB chunks to a file, in this process."""
    started = time.perf_counter()
    with requests.get(url, stream=True, timeout=60) as response:
        response.raise_for_status()
        with saved_as(url, dest).open("wb") as out:
            for chunk in response.iter_content(MiB):
                out.write(chunk)
    return Sample(time.perf_counter() - started)


def curl_fetch(ctx: Context) -> Fetcher:
    def fetch(url: str, dest: Path) -> Sample:
        args = [str(ctx.tools["curl"]), "-s", "-f", "-o", str(saved_as(url, dest)), url]
        return Sample(ctx.procs.run(args, ctx.log("curl")))

    return fetch


def curl_synced_fetch(ctx: Context) -> Fetcher:
    """curl, then an `fsync` of its file, timed together: the durability a `get` has (its file
    is on disk before it gets its name), which plain curl does not wait for."""
    curl = curl_fetch(ctx)

    def fetch(url: str, dest: Path) -> Sample:
        started = time.perf_counter()
        curl(url, dest)
        fd = os.open(saved_as(url, dest), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Sample(time.perf_counter() - started)

    return fetch


def aria2_args(ctx: Context, dest: Path) -> list[str]:
    return [
        str(ctx.tools["aria2c"]),
        "-d",
        str(dest),
        "-q",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--file-allocation=falloc",
        "--summary-interval=0",
    ]


def aria2_fetch(ctx: Context, connections: int) -> Fetcher:
    def fetch(url: str, dest: Path) -> Sample:
        args = [
            *aria2_args(ctx, dest),
            "-x",
            str(connections),
            "-s",
            str(connections),
            "-k",
            "1M",
            url,
        ]
        return Sample(ctx.procs.run(args, ctx.log("aria2c")))

    return fetch


def tool_variants(ctx: Context, aria_connections: int) -> dict[str, Fetcher]:
    variants: dict[str, Fetcher] = {}
    if ctx.tools["curl"]:
        variants["curl"] = curl_fetch(ctx)
    if ctx.tools["aria2c"]:
        variants[f"aria2c x{aria_connections}"] = aria2_fetch(ctx, aria_connections)
    return variants
