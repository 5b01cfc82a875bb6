"""The job models users of the InvokeAI download queue already know.

The models are plain pydantic data: the service keeps them up to date from the job store and
the event stream, and the callbacks live in private attributes so that serialising a job never
drags a function (or the access token) along.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    computed_field,
    field_validator,
)

from downloader.engine.errors import DownloadJobCancelledException
from downloader.engine.naming import ENGINE_SUFFIXES, is_engine_name
from downloader.jobs.failure import Failure

__all__ = [
    "DownloadJob",
    "DownloadJobCancelledException",
    "DownloadJobStatus",
    "MultiFileDownloadJob",
    "RemoteModelFile",
    "bearer_token",
    "mirror_urls",
]

_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
"""Printable ASCII and the space: what an `Authorization` header value may carry as is."""


def bearer_token(token: str | None) -> str | None:
    """A token as it may go into `Authorization: Bearer ...`, or None for no token.

    Tokens are read from secret files and pasted from terminals: surrounding whitespace (a
    final newline) is dropped. Anything else a header cannot carry (a control character, a
    line break inside) is refused, because requests would otherwise quote the whole header,
    token included, in its error. The message never repeats the token.
    """
    if token is None:
        return None
    token = token.strip()
    if not _HEADER_SAFE.fullmatch(token):
        raise ValueError(
            "the access token holds a control character or a character outside printable "
            "ASCII, which an HTTP header cannot carry; check how it was read or pasted"
        )
    return token or None


_MIRROR_URLS = TypeAdapter(list[AnyHttpUrl])


def mirror_urls(mirrors: Iterable[object] | None) -> list[str]:
    """Mirror URLs checked as sources are (http or https, well formed), as text, in order,
    without repeats; a `ValueError` names the bad one. A single string is refused: it would
    otherwise be read as a list of characters."""
    if mirrors is None:
        return []
    if isinstance(mirrors, str | bytes):
        raise ValueError("mirrors is a list of URLs, not one string")
    return list(dict.fromkeys(str(url) for url in _MIRROR_URLS.validate_python(list(mirrors))))


class DownloadJobStatus(StrEnum):
    """Where a job is in its life; `ERROR` covers cancellation too, as in InvokeAI's queue.
    `PAUSED` is InvokeAI's too (its `pause_job`): stopped by a caller, its partial file kept,
    no worker slot taken, until `resume_job` queues it again."""

    WAITING = "waiting"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self in (DownloadJobStatus.COMPLETED, DownloadJobStatus.ERROR)


class JobVanishedError(Exception):
    """A job's record is no longer in Redis while the job was unfinished.

    Either Redis lost its data (`redis_lost`: restarted without persistence, flushed, failed
    over to an empty replica, evicting keys), and with it every job, or someone removed the
    job (`downloader clear`). Its client ends the job as `error` with this text, which says
    what to check, since no worker will ever report on it again.
    """

    def __init__(self, job_id: int, redis_lost: bool) -> None:
        if redis_lost:
            text = (
                f"Redis lost job {job_id}: its data is gone (a restart without persistence, "
                "a flush, a failover to an empty replica or eviction); give Redis persistence "
                "(appendonly yes, or RDB snapshots) and maxmemory-policy noeviction"
            )
        else:
            text = (
                f"job {job_id} is no longer in Redis: it was removed (downloader clear) or "
                "evicted; if nobody removed it, set Redis's maxmemory-policy to noeviction"
            )
        super().__init__(text)
        self.job_id = job_id
        self.redis_lost = redis_lost

    @property
    def error_type(self) -> str:
        """The job's `error_type`, in InvokeAI's `Class(message)` form."""
        return f"{type(self).__name__}({self})"


DownloadEventHandler = Callable[[Any], None]

_CALLBACK_NAMES = ("on_start", "on_progress", "on_complete", "on_cancelled", "on_error")


class _CallbackMixin(BaseModel):
    """Callbacks are private so that `model_dump_json` only ever shows data."""

    _callbacks: dict[str, DownloadEventHandler] = PrivateAttr(default_factory=dict)
    _cancelled: bool = PrivateAttr(default=False)
    _failure: Failure | None = PrivateAttr(default=None)
    _waiting_for: str | None = PrivateAttr(default=None)

    def set_callbacks(self, **handlers: DownloadEventHandler | None) -> None:
        for name, handler in handlers.items():
            if name not in _CALLBACK_NAMES:
                raise TypeError(f"unknown callback {name!r}")
            if handler is not None:
                self._callbacks[name] = handler

    def callback(self, name: str) -> DownloadEventHandler | None:
        return self._callbacks.get(name)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cancelled(self) -> bool:
        """True when the job was cancelled by a caller (its status is then `error`, as in
        InvokeAI's queue). In the job's JSON too, beside `status`, which only says `error`."""
        return self._cancelled

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        self._cancelled = bool(value)

    @property
    def failure(self) -> Failure | None:
        """Why the job failed, as data (see `jobs.failure`); not part of its dumps, which
        keep InvokeAI's fields."""
        return self._failure

    @failure.setter
    def failure(self, value: Failure | None) -> None:
        self._failure = value

    @property
    def waiting_for(self) -> str | None:
        """Why the running job waits now ("waiting for a connection to huggingface.co (8 of
        8 in use)"), None while it downloads; not part of its dumps."""
        return self._waiting_for

    @waiting_for.setter
    def waiting_for(self, value: str | None) -> None:
        self._waiting_for = value

    @property
    def in_terminal_state(self) -> bool:
        return self.status.finished  # type: ignore[attr-defined]

    @property
    def complete(self) -> bool:
        return self.status == DownloadJobStatus.COMPLETED  # type: ignore[attr-defined]

    @property
    def waiting(self) -> bool:
        return self.status == DownloadJobStatus.WAITING  # type: ignore[attr-defined]

    @property
    def running(self) -> bool:
        return self.status == DownloadJobStatus.RUNNING  # type: ignore[attr-defined]

    @property
    def paused(self) -> bool:
        return self.status == DownloadJobStatus.PAUSED  # type: ignore[attr-defined]

    @property
    def errored(self) -> bool:
        return self.status == DownloadJobStatus.ERROR  # type: ignore[attr-defined]


class _JobFields(_CallbackMixin):
    """The fields both job models hold, declared once.

    Each model lists its dump order in `_field_order` (InvokeAI's, which callers' JSON follows):
    pydantic puts a base's fields first, and a single job's `source` comes before them.
    """

    dest: Path
    id: int = -1
    priority: int = 10
    status: DownloadJobStatus = DownloadJobStatus.WAITING
    download_path: Path | None = None
    job_started: datetime | None = None
    job_ended: datetime | None = None
    bytes: int = 0
    total_bytes: int = 0
    error_type: str | None = None
    error: str | None = None

    _field_order: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Put the fields in the model's `_field_order` (a check that it names every field)."""
        super().__pydantic_init_subclass__(**kwargs)
        order = cls.__dict__.get("_field_order")
        if not order:
            return
        fields = cls.__pydantic_fields__
        if sorted(order) != sorted(fields):
            raise TypeError(f"{cls.__name__}._field_order must name each field once")
        cls.__pydantic_fields__ = {name: fields[name] for name in order}
        cls.model_rebuild(force=True)


class DownloadJob(_JobFields):
    """One URL to one file, as `DownloadQueueService.download` hands it out.

    The object is live: the service updates it from the job's events, so its fields follow
    the download wherever a worker runs it. Field order follows InvokeAI's, so dumps read the
    same; the token is never dumped.

    Attributes:
        source: the URL (an `hf://` source is queued as the hub URL it resolved to).
        dest: the directory the file is named in, or the file's own path.
        id: unique in the Redis namespace, whatever the queue.
        priority: lower runs first.
        status: `waiting`, `running`, `paused`, `completed` or `error` (a cancelled job is
            `error` with `cancelled` true).
        download_path: the file's final path, once known.
        job_started, job_ended: when the first attempt started and when the job ended.
        job_sequence: the order in which jobs started.
        bytes, total_bytes: downloaded so far, and the size (0 while unknown).
        content_type, etag, final_url: what the server answered.
        error_type: the failure as `Class(message)` (`HTTPError(Not Found)`).
        error: the failure's traceback or explanation.
        attempts: how many times a worker tried: one per claim plus one per retry.
        access_token: sent as `Authorization: Bearer` to the source's origin only.
    """

    _field_order = (
        "source",
        "dest",
        "id",
        "priority",
        "status",
        "download_path",
        "job_started",
        "job_ended",
        "job_sequence",
        "bytes",
        "total_bytes",
        "content_type",
        "etag",
        "final_url",
        "error_type",
        "error",
        "attempts",
        "access_token",
    )

    source: AnyHttpUrl
    job_sequence: int | None = None
    content_type: str | None = None
    etag: str | None = None
    final_url: str | None = None
    attempts: int = 0
    """How many times a worker tried: one per claim plus one per retry."""
    access_token: str | None = Field(default=None, exclude=True, repr=False)

    model_config = ConfigDict(hide_input_in_errors=True)
    """A validation error must not quote the token it refused."""

    @field_validator("access_token")
    @classmethod
    def _header_safe_token(cls, token: str | None) -> str | None:
        return bearer_token(token)

    def sibling(self, job_id: int, source: AnyHttpUrl, dest: Path) -> DownloadJob:
        """A new job like this one (which must be new itself) with its own id, source and
        dest, and callbacks and state of its own: how a batch makes the jobs that share
        every other field, at a sixth of the cost of validating each.

        Args:
            job_id: the new job's id.
            source: its URL, validated as this model's `source` is (not checked again).
            dest: its absolute dest.
        """
        job = DownloadJob.__new__(DownloadJob)
        values = self.__dict__.copy()
        values["id"], values["source"], values["dest"] = job_id, source, dest
        object.__setattr__(job, "__dict__", values)
        object.__setattr__(job, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        object.__setattr__(job, "__pydantic_extra__", None)
        object.__setattr__(job, "__pydantic_private__", {**_NEW_PRIVATE, "_callbacks": {}})
        return job


_NEW_PRIVATE: dict[str, Any] = {
    name: attribute.get_default()
    for name, attribute in DownloadJob.__private_attributes__.items()
    if name != "_callbacks"  # a factory's: one dict per job
}
"""A new job's private attributes (`sibling` gives each its own `_callbacks`)."""


class RemoteModelFile(BaseModel):
    """One part of a multi-file job: where it comes from and where under `dest` it goes.

    Attributes:
        url: the part's http(s) URL.
        path: relative to the job's `dest`, staying inside it (no `..`, not absolute, not
            one of the downloader's own partial-file names).
        size: the expected size in bytes, when known (counted in the job's total).
        sha256: the expected SHA-256; the file is verified before it takes its name.
        mirrors: other URLs of the same file.
    """

    url: AnyHttpUrl
    path: Path
    size: int | None = None
    sha256: str | None = None
    mirrors: list[AnyHttpUrl] = Field(default_factory=list)
    """Other URLs of the same file (a hub mirror's, say); used when they match it."""

    @field_validator("path")
    @classmethod
    def _relative_inside_dest(cls, path: Path) -> Path:
        posix = PurePosixPath(path.as_posix())
        if str(path) in ("", ".") or not posix.parts:
            raise ValueError("a part's path must not be empty")
        if path.is_absolute() or posix.is_absolute():
            raise ValueError(f"a part's path must be relative, got {path}")
        if ".." in posix.parts:
            raise ValueError(f"a part's path must stay inside dest, got {path}")
        if is_engine_name(posix.name):
            raise ValueError(
                f"a part's path must not end in {', '.join(ENGINE_SUFFIXES)}: those names are "
                f"the downloader's own partial files, got {path}"
            )
        return path


class MultiFileDownloadJob(_JobFields):
    """Several files under one root, as `multifile_download` and `repo_download` hand it
    out; it ends when its last part does, or fails at its first failing part.

    Attributes:
        dest: the directory the parts' paths are relative to.
        id, priority, status, job_started, job_ended, error_type, error: as a
            `DownloadJob`'s; the first part that fails gives its error to the job.
        download_path: `dest/<first component>` when every part lies under one
            directory, else `dest`.
        bytes, total_bytes: the sums over the parts.
        download_parts: the parts, each a live `DownloadJob`.
        revision: for a hub repo, the commit every part comes from.
    """

    download_parts: list[DownloadJob] = Field(default_factory=list)
    revision: str | None = None
    """For a hub repo: the commit every part comes from."""
