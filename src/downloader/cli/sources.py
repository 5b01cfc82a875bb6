"""What `downloader get` was asked for: the URLs, their tokens and this run's settings, the
combinations of options it refuses, and each source checked and (for the hub) resolved
before anything is queued."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downloader.config import Settings
    from downloader.hub import ResolvedRepo

HF_HOSTS = ("huggingface.co", "hf.co")


def read_urls(args: argparse.Namespace) -> list[str]:
    urls = list(args.urls)
    if args.input_file:
        text = sys.stdin.read() if args.input_file == "-" else Path(args.input_file).read_text()
        urls += [line.strip() for line in text.splitlines()]
    return [url for url in urls if url and not url.startswith("#")]


def bad_urls(urls: Sequence[str]) -> list[tuple[str, str]]:
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


def token_for(args: argparse.Namespace, url: str) -> str | None:
    """--token-file, else DOWNLOADER_TOKEN, else HF_TOKEN for Hugging Face hosts over https on
    port 443 (--token is still taken, but `ps` shows it to everyone on the machine). An `hf://`
    source takes only a token given on the command line; without one the hub finds HF_TOKEN
    or its token file."""
    if args.token_file:
        return Path(args.token_file).expanduser().read_text().strip() or None
    if args.token:
        return args.token
    from downloader import hub
    from downloader.engine.origins import origin

    if hub.is_hub_source(url):
        return None
    if os.environ.get("DOWNLOADER_TOKEN"):
        return os.environ["DOWNLOADER_TOKEN"]
    scheme, host, port = origin(url)
    hugging_face = any(host == hf or host.endswith("." + hf) for hf in HF_HOSTS)
    if hugging_face and (scheme, port) == ("https", 443):  # never in clear, nor to another port
        return os.environ.get("HF_TOKEN") or None
    return None


def run_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with --retries, --timeout and --connections: they apply to
    this run's hub requests and in-process worker (workers of a configured Redis keep their
    own settings)."""
    from downloader.config import Settings

    overrides: dict[str, Any] = {}
    if args.retries is not None:
        overrides["max_retries"] = args.retries
    if args.timeout is not None:
        overrides["connect_timeout"] = overrides["read_timeout"] = args.timeout
    if args.connections is not None:
        overrides["segments"] = args.connections
    return Settings(**overrides)


@dataclass
class Source:
    """One thing `get` was asked for, checked and (for the hub) resolved before any is queued:
    a URL (`url`, maybe with the hub's `sha256`) or a whole repo (`repo`)."""

    given: str
    url: str = ""
    sha256: str | None = None
    token: str | None = None
    repo: ResolvedRepo | None = None


def resolve(args: argparse.Namespace, urls: Sequence[str], settings: Settings) -> list[Source]:
    """Every source as what will be queued: `hf://` files and repos pinned to a commit with
    their hashes (HubError when the hub refuses one: then nothing is queued)."""
    from downloader import hub

    sources = []
    for url in urls:
        token = token_for(args, url)
        if not hub.is_hub_source(url):
            sources.append(Source(url, url, args.sha256, token))
        elif is_repo(url):
            repo = hub.resolve_repo(
                url.rstrip("/"),
                allow_patterns=args.include,
                ignore_patterns=args.exclude,
                token=token,
                settings=settings,
            )
            sources.append(Source(url, token=token, repo=repo))
        else:
            part = hub.resolve_file(url, token=token, settings=settings)
            url_at_commit = str(part.url)
            token = token or hub.token_for(url_at_commit, settings)
            sources.append(Source(url, url_at_commit, args.sha256 or part.sha256, token))
    return sources


def is_repo(hf_url: str) -> bool:
    """`hf://owner/name[@rev]` names a whole repo, `hf://owner/name/folder/` one folder of
    it; anything longer names one file."""
    from downloader import hub

    return hub.parse_hf_url(hf_url).path is None or hf_url.endswith("/")


def usage_error(args: argparse.Namespace, urls: Sequence[str]) -> str | None:
    """What is wrong with this combination of URLs and options, before anything runs."""
    from downloader import hub

    repos = [url for url in urls if hub.is_hub_source(url) and is_repo(url)]
    if not urls:
        return "no URL given (as arguments or with -i FILE)"
    if args.output and (len(urls) != 1 or repos):
        return "-o/--output names the file of one URL only; use -d"
    if args.sha256 and (len(urls) != 1 or repos):
        return "--sha256 checks one URL only"
    if args.mirror and (len(urls) != 1 or hub.is_hub_source(urls[0])):
        return (
            "--mirror names other URLs of one http(s) URL's file (hub files take their "
            "mirrors from DOWNLOADER_HF_MIRRORS)"
        )
    if (args.include or args.exclude) and not repos:
        return "--include and --exclude select files of an hf://owner/name repo"
    return None
