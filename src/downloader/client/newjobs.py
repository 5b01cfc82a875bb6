"""New single jobs and their records, from what a caller asks for: one at a time
(`new_job`), or a batch's many at the cost of what differs between them (`JobBatch`).

Every job is checked as strictly either way: its source is an http(s) URL, its token fit for
a header, its dest and file path usable; a batch only avoids checking again, for each item,
what an earlier item of the same call already checked in the same values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

from downloader import hub
from downloader.config import Settings
from downloader.engine.naming import is_engine_name
from downloader.engine.origins import Origin
from downloader.jobs.limits import parse_rate
from downloader.jobs.models import DownloadJob, mirror_urls
from downloader.jobs.record import JobRecord

_SOURCE: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
"""A source checked as `DownloadJob.source` checks it."""


def new_job(
    job_id: int,
    source: str,
    dest: str | Path,
    priority: int,
    access_token: str | None,
    sha256: str | None,
    untrusted: bool,
    download_path: Path | None = None,
    mirrors: list[str] | None = None,
    *,
    directories: dict[str, bool] | None = None,
    bandwidth: int | None = None,
) -> tuple[DownloadJob, JobRecord]:
    """A single job and its record, with `dest` read as a directory or a file path
    (`directories`: what earlier jobs of the same call found, by dest)."""
    dest_is_dir = _checked_dest(dest, download_path, {} if directories is None else directories)
    job = DownloadJob(
        id=job_id,
        source=source,
        dest=Path(dest).absolute(),
        priority=priority,
        access_token=access_token,
        download_path=None if download_path is None else download_path.absolute(),
    )
    record = JobRecord.for_job(
        job,
        sha256=sha256,
        untrusted=untrusted,
        dest_is_dir=dest_is_dir,
        mirrors=mirrors or [],
        bandwidth=bandwidth,
    )
    return job, record


class JobBatch:
    """The jobs of one `download_many` call, built from its items.

    The items of a batch mostly share their priority, token and download path. The first
    item of each such combination is built as `new_job` builds one (every field validated);
    each later one is a copy of it (`DownloadJob.sibling`) with its own id, source and dest,
    the source validated as the model's field is and the dest looked at as `new_job` looks
    (once per dest of the call). The token an item does not give is the one its source's
    origin gets (`hub.token_for`), found once per origin. Validating each model whole cost
    three times the rest of a job's enqueue.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._directories: dict[str, bool] = {}  # many items share a dest: one stat each
        self._absolute: dict[str, Path] = {}
        self._firsts: dict[tuple[Any, ...], DownloadJob] = {}
        self._tokens: dict[Origin, str | None] = {}

    def job(self, job_id: int, item: Mapping[str, Any]) -> tuple[DownloadJob, JobRecord]:
        """Item `item` (`download`'s arguments by name) as job `job_id` and its record.

        Raises:
            ValueError: the item cannot be used (pydantic's `ValidationError` is one).
        """
        source, dest = item["source"], item["dest"]
        priority = item.get("priority", 10)
        download_path = item.get("download_path")
        sha256 = item.get("sha256")
        untrusted = bool(item.get("untrusted"))
        mirrors = mirror_urls(item.get("mirrors"))
        bandwidth = parse_rate(item.get("bandwidth")) or None
        try:
            url = _SOURCE.validate_python(source)
        except ValidationError:  # refused by the model below, with its own message
            url = None
        token = item.get("access_token")
        if url is not None:
            token = token or self._token(url)
        key: tuple[Any, ...] | None = (priority, token, download_path)
        try:
            first = self._firsts.get(key) if url is not None else None
        except TypeError:  # an unhashable value: validated whole, and refused there
            first = key = None
        if first is None:
            job, record = new_job(
                job_id,
                source if url is None else str(url),
                dest,
                priority,
                token,
                sha256,
                untrusted,
                download_path=download_path,
                mirrors=mirrors,
                directories=self._directories,
                bandwidth=bandwidth,
            )
            if key is not None:
                self._firsts[key] = job
            return job, record
        dest_is_dir = _checked_dest(dest, download_path, self._directories)
        text = os.fspath(dest)
        if (absolute := self._absolute.get(text)) is None:
            absolute = self._absolute[text] = Path(text).absolute()
        job = first.sibling(job_id, url, absolute)
        return job, JobRecord(
            id=job_id,
            dest=absolute,
            priority=job.priority,
            source=str(url),
            dest_is_dir=dest_is_dir,
            download_path=job.download_path,
            sha256=sha256,
            mirrors=mirrors,
            untrusted=untrusted,
            bandwidth=bandwidth,
        )

    def _token(self, url: AnyHttpUrl) -> str | None:
        """The token `url`'s origin gets when the item gives none, looked up once per
        origin of the batch."""
        where = (url.scheme, url.host or "", url.port)
        if where not in self._tokens:
            self._tokens[where] = hub.token_for(str(url), self._settings)
        return self._tokens[where]


def _checked_dest(
    dest: str | Path, download_path: Path | None, directories: dict[str, bool]
) -> bool:
    """Whether `dest` names a directory (`directories`: what earlier jobs of the same call
    found, by dest), once the file's own path, if the job names one, is checked."""
    text = os.fspath(dest)
    if (dest_is_dir := directories.get(text)) is None:
        dest_is_dir = directories[text] = _names_a_directory(text)
    named = download_path if download_path is not None else None if dest_is_dir else dest
    if named is not None:
        _check_file_path(Path(named))
    return dest_is_dir


def _check_file_path(path: Path) -> None:
    """Refuse a file's own path (a `dest` that names the file, or a `download_path`) that
    is one of the engine's partial-file names, a directory, or more than the filesystem
    holds (a name too long), before anything is queued."""
    if is_engine_name(path.name):
        raise ValueError(
            f"{path} ends like the downloader's own partial files; choose another name"
        )
    try:
        if path.is_dir():
            raise ValueError(f"{path} is a directory: name the file in it, or pass it as dest")
    except OSError as exc:  # a name too long for the filesystem, a directory not readable
        raise ValueError(f"{path} cannot be used: {exc.strerror}") from None


def _names_a_directory(dest: str | Path) -> bool:
    """`dest` is a directory to name files in when it is one, says so with a trailing
    separator, or does not exist and its last component has no suffix (`/tmp/downloads`,
    created when missing: the seed's example queues several URLs into it); anything else is
    the file's own path (`model.safetensors`, or an existing file)."""
    text = os.fspath(dest)
    path = Path(text)
    try:
        if text.endswith(("/", os.sep)) or path.is_dir():
            return True
        return not os.path.lexists(path) and not path.suffix
    except OSError as exc:  # a name too long for the filesystem, a directory not readable
        raise ValueError(f"dest {text} cannot be used: {exc.strerror}") from None
