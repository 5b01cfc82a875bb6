"""The engine's one seam: what `transfer.fetch` is asked, what it answers, and what its caller
hears on the way. A worker fills a `TransferRequest` from a job; nothing else of the job, the
store or the hub crosses into the engine.

What an origin says beyond HTTP's standard (a model hub's error codes, the hash it puts on a
redirect) is the caller's knowledge: it comes in as two functions of the answer,
`explain_refusal` and `announced_digest`, which the engine calls without knowing whose
headers they read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from downloader.engine.mirrors import Mirrors
from downloader.engine.pacing import Pacing, Unpaced

AnswerReader = Callable[[requests.Response], "str | None"]
"""Reads something an origin says in an answer's headers; None when it says nothing."""


def _says_nothing(response: requests.Response) -> str | None:
    return None


@dataclass
class TransferRequest:
    """One URL into one file: where it goes, what it must be, and how to fetch it."""

    url: str
    dest: Path
    dest_is_dir: bool | None = None
    """Whether `dest` is a directory to name the file in; None: whether it is one on disk."""
    access_token: str | None = None
    """Sent as `Authorization: Bearer` to the origin of `url` only, never past a redirect away
    from it nor to a mirror elsewhere."""
    download_path: Path | None = None
    """The final path an earlier attempt chose; lets a retry resume before the first byte."""
    owner: int | None = None
    """The job id, written into the partial's state: only its own cancel may remove it."""
    sha256: str | None = None
    size: int | None = None
    """The size the caller expects; a server offering another size is refused."""
    chunk_size: int = 1 << 20
    timeout: tuple[float, float] = (10.0, 60.0)
    segments: int = 1
    """Connections for one large file from a server that accepts ranges (at the start, when
    `segments_max` lets the plan grow)."""
    segments_max: int = 0
    """The most connections a plan of segments grows to while each step of them adds
    throughput (the host's connection cap, say); at most `segments`: a fixed plan."""
    segment_threshold: int = 64 << 20
    """Files smaller than this use one connection."""
    lowest_speed: int = 0
    """Bytes per second below which, for a whole `speed_window`, the transfer is a stall."""
    speed_window: float = 60.0
    root: Path | None = None
    """The directory the job's caller chose: it is opened as named, and every directory below
    it on the way to the file is opened without following links (made when missing). None:
    the file's own directory."""
    made_directory: Callable[[Path], None] = field(default=lambda path: None)
    """Told of each directory below `root` the transfer made, so that a job that fails or is
    cancelled can remove those left empty (`destdir.remove_empty`)."""
    reserve: Callable[[Path], bool] = field(default=lambda path: True)
    """Claims a server-chosen final path for this job; False when another job holds it."""
    release: Callable[[Path], None] = field(default=lambda path: None)
    """Gives back a path `reserve` claimed but the job does not use."""
    mirrors: Mirrors | None = None
    """Other URLs of the same file and how each fared, kept across a job's attempts; None:
    `url` alone."""
    pacing: Pacing = field(default_factory=Unpaced)
    """Where each connection gets its slot and each read its bandwidth (the fleet's limits,
    see `pacing`); by default none apply."""
    explain_refusal: AnswerReader = field(default=_says_nothing)
    """What an error answer (4xx, 5xx) means to the user, read from what its origin says
    beyond the status (a hub's error code); appended to the `HTTPError`'s reason. It must
    never repeat the server's own text."""
    announced_digest: AnswerReader = field(default=_says_nothing)
    """The SHA-256 (hex) an origin vouches for beyond the standard digest headers (a hub's
    hash on the redirect it answered), read from a whole-file answer; the finished file is
    checked against it."""


@dataclass
class TransferResult:
    """What a transfer did: where the file is, how many bytes, and what the server said."""

    download_path: Path
    bytes: int = 0
    total_bytes: int = 0
    content_type: str | None = None
    etag: str | None = None
    final_url: str | None = None
    resumed_from: int = 0
    already_complete: bool = False
    """The file under the final name was current: nothing was fetched."""


def _ignore_counts(current: int, total: int) -> None:
    pass


@dataclass
class TransferHooks:
    """What the caller hears; raising from any of them stops the transfer with that exception.

    `check` runs on the watchdog every half second, so it is heard even while no byte arrives,
    and once more before the rename, so a cancel wins until the file is in place.
    """

    started: Callable[[TransferResult], None] = lambda result: None
    progress: Callable[[int, int], None] = _ignore_counts
    check: Callable[[int, int], None] = _ignore_counts
