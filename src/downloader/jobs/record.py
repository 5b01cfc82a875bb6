"""`JobRecord`: a job as the store holds it, the one typed shape every layer reads.

The public models (`DownloadJob`, `MultiFileDownloadJob`) show what InvokeAI's callers know;
the record holds that and the bookkeeping beside it (the queue, the lease holder, a part's
parent, a parent's counters, the structured failure). The store writes it as one Redis hash
whose fields hold JSON values, so that a worker can update `bytes` without rewriting the
record and a Lua script can read the few fields it decides on: `to_hash` and `from_hash` are
that conversion, and nothing else spells a field name as a string.

A record is read per job on the worker's path (the claim answers it), so it is a slotted
dataclass converted by hand rather than a validated model. A field at its default value is
not stored: a missing field reads as its default, here and in the scripts alike.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum, StrEnum
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from downloader.jobs.failure import Failure
from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob

__all__ = ["FIELD_NAMES", "JobKind", "JobRecord", "encode_value", "utcnow"]


def utcnow() -> datetime:
    """Now, in UTC without a zone: how every timestamp of a record is kept."""
    return datetime.now(UTC).replace(tzinfo=None)


class JobKind(StrEnum):
    SINGLE = "download"
    """One URL to one file: a plain job, or a part of a multi-file job."""
    MULTIFILE = "multifile"
    """A multi-file parent: it downloads nothing, its parts do."""


@dataclass(slots=True)
class JobRecord:
    """Every field of a job's record in the store."""

    id: int
    dest: Path
    queue_id: str = ""
    kind: JobKind = JobKind.SINGLE
    status: DownloadJobStatus = DownloadJobStatus.WAITING
    priority: int = 10
    """The caller's priority: lower runs first (see `store.keys.celery_priority`)."""
    level: int | None = None
    """The broker's priority level its messages go to, written with the job so that the
    scripts need not know how priorities map onto levels (None: a parent, never sent)."""

    # What a single job (or a part) fetches, and how.
    source: str | None = None
    dest_is_dir: bool | None = None
    """Whether `dest` is a directory to name the file in; None: whatever it is on disk."""
    download_path: Path | None = None
    root: Path | None = None
    """A part's: its multi-file job's `dest`, below which no link is followed."""
    sha256: str | None = None
    size: int | None = None
    mirrors: list[str] = field(default_factory=list)
    untrusted: bool = False
    """Queued by an untrusted caller (the REST API): public addresses only."""
    follower: str | None = None
    """The id of the client that queued the job and follows it: the job's own events go to
    that client's channel (`Keys.job_channel`). None: nobody follows it (`follow=False`)."""
    bandwidth: int | None = None
    """The job's own bandwidth, bytes per second, within the fleet's (None: no limit of its
    own; see `jobs.limits`)."""
    waiting_for: str | None = None
    """Why the running job waits now (a host's connections all in use, a host's pause);
    None while it downloads."""

    # Multi-file jobs: a part's parent, a parent's parts and what they did.
    parent_id: int | None = None
    part_ids: list[int] = field(default_factory=list)
    parts_total: int = 0
    parts_done: int = 0
    parts_failed: int = 0
    parts_cancelled: int = 0
    culprit: int | None = None
    """The first part that did not complete (its error becomes the parent's)."""
    revision: str | None = None

    # What the transfer found.
    bytes: int = 0
    total_bytes: int = 0
    content_type: str | None = None
    etag: str | None = None
    final_url: str | None = None

    # Attempts.
    attempts: int = 0
    worker: str | None = None
    """The lease owner of the latest claim: `<worker node>#<attempt>`."""
    job_sequence: int | None = None
    started_epoch: float | None = None
    cancel_requested: bool = False
    pause_requested: bool = False
    """A caller paused the job while it ran: its worker stops and marks it paused."""
    cancelled: bool = False

    # How it ended.
    error_type: str | None = None
    error: str | None = None
    last_error: str | None = None
    """The `error_type` of the latest retried failure."""
    failure: Failure | None = None
    """Why it failed, as data, beside `error_type` (see `jobs.failure`)."""

    created_at: datetime | None = None
    updated_at: datetime | None = None
    job_started: datetime | None = None
    job_ended: datetime | None = None

    @property
    def multifile(self) -> bool:
        return self.kind is JobKind.MULTIFILE

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes]) -> JobRecord:
        """The record of a Redis hash as `HGETALL` answers it. Fields this version does not
        know (a newer version's) are left out, and so are JSON nulls (the default holds)."""
        values: dict[str, Any] = {}
        for key, text in raw.items():
            name = key.decode()
            if name not in FIELD_NAMES:
                continue
            value = json.loads(text)
            if value is None:
                continue
            convert = _READ.get(name)
            values[name] = value if convert is None else convert(value)
        return cls(**values)

    def to_hash(self) -> dict[str, str]:
        """The hash fields that differ from their defaults, as JSON (see `encode_value`);
        the fields the scripts look up a job by are always written."""
        return {
            name: encode_value(value)
            for (name, default, always), value in zip(_SHAPE, _VALUES(self), strict=True)
            if always or (value is not default and value != default)
        }

    def to_row(self) -> list[str]:
        """The record as `store/lua/create.lua` takes it: its id, its status, then the
        field, value pairs of `to_hash`, flat."""
        return _to_row(self)

    @classmethod
    def for_job(cls, job: DownloadJob | MultiFileDownloadJob, **extra: Any) -> JobRecord:
        """The record of a new job: the model's fields, then the bookkeeping in `extra`
        (which wins where both name a field)."""
        values = {name: getattr(job, name) for name in _MODEL_FIELDS[type(job)]}
        values["cancelled"] = job.cancelled  # in the model's JSON too (a new job's is False)
        if isinstance(job, DownloadJob):
            values["source"] = str(job.source)
        else:
            values["kind"] = JobKind.MULTIFILE
        return cls(**{**values, **extra})

    def to_model(self, parts: Iterable[JobRecord] = ()) -> DownloadJob | MultiFileDownloadJob:
        """The public model of this record (the one place that builds one); a multi-file
        job's `parts` are its parts' records, in order."""
        model = MultiFileDownloadJob if self.multifile else DownloadJob
        values = {name: getattr(self, name) for name in _MODEL_FIELDS[model]}
        if self.multifile:
            job: DownloadJob | MultiFileDownloadJob = MultiFileDownloadJob(
                **values, download_parts=[part.to_model() for part in parts]
            )
        else:
            job = DownloadJob(source=self.source, **values)
        job.cancelled = self.cancelled
        job.failure = self.failure
        job.waiting_for = self.waiting_for
        return job


def encode_value(value: Any) -> str:
    """A field's value as the JSON text a hash field holds."""
    kind = type(value)
    if kind is str:  # the common cases first, as json.dumps writes them: enqueueing many
        return encode_basestring_ascii(value)  # jobs writes a few dozen fields each
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, Failure):
        value = value.to_json()
    elif isinstance(value, datetime):
        return _encode_time(value)
    elif not isinstance(value, bool | int | float | str | list | dict):
        value = str(value)
    if type(value) is str:  # an enum's, a time's, a path's: as json.dumps writes it
        return encode_basestring_ascii(value)
    return json.dumps(value)


_last_time: tuple[datetime | None, str] = (None, "")
"""The last time `_encode_time` wrote: a batch's records share one `created_at`."""


def _encode_time(value: datetime) -> str:
    global _last_time
    last, text = _last_time
    if value is not last:
        text = encode_basestring_ascii(value.isoformat())
        _last_time = (value, text)  # one assignment: another thread sees either pair whole
    return text


def _path(value: str) -> Path:
    return Path(value)


_READ: dict[str, Callable[[Any], Any]] = {
    "dest": _path,
    "download_path": _path,
    "root": _path,
    "kind": JobKind,
    "status": DownloadJobStatus,
    "created_at": datetime.fromisoformat,
    "updated_at": datetime.fromisoformat,
    "job_started": datetime.fromisoformat,
    "job_ended": datetime.fromisoformat,
    "failure": Failure.from_json,
}
"""How a JSON value becomes a field's type, for the fields JSON does not give as they are."""

_FIELDS = fields(JobRecord)
FIELD_NAMES = frozenset(spec.name for spec in _FIELDS)
_ALWAYS = frozenset({"id", "queue_id", "dest", "status"})
_DEFAULTS: dict[str, Any] = {
    spec.name: [] if spec.name in ("mirrors", "part_ids") else spec.default for spec in _FIELDS
}
_SHAPE = tuple((spec.name, _DEFAULTS[spec.name], spec.name in _ALWAYS) for spec in _FIELDS)
"""(name, default, always written) of every field, in order, for `to_hash`."""
_VALUES = operator.attrgetter(*(spec.name for spec in _FIELDS))
"""Every field's value, in that order, in one call."""


def _row_writer() -> Callable[[JobRecord], list[str]]:
    """`to_row` written out field by field, as `dataclasses` writes `__init__`: a batch
    enqueue writes a row per job, and a loop over the record's forty-odd fields (most at
    their defaults) took as long as the rest of the row."""
    lines = ["def to_row(self):", "    row = [int.__repr__(self.id), self.status.value]"]
    scope: dict[str, Any] = {"encode": encode_value}
    for index, (name, default, always) in enumerate(_SHAPE):
        if always:
            lines.append(f"    row += ({name!r}, encode(self.{name}))")
            continue
        scope[f"default{index}"] = default
        lines.append(f"    value = self.{name}")
        lines.append(f"    if value is not default{index} and value != default{index}:")
        lines.append(f"        row += ({name!r}, encode(value))")
    lines.append("    return row")
    exec("\n".join(lines), scope)  # our own field names, from `fields`
    return scope["to_row"]  # type: ignore[no-any-return]


_to_row = _row_writer()
_MODEL_FIELDS: dict[type, tuple[str, ...]] = {
    model: tuple(
        name
        for name in model.model_fields
        if name not in ("source", "access_token", "download_parts")
    )
    for model in (DownloadJob, MultiFileDownloadJob)
}
"""The fields a model shares with the record (a single job's `source` is a URL there)."""
