"""The Redis job store: the only copy of a job's state, shared by clients and workers.

A job is one Redis hash whose fields hold JSON values, so a worker can update `bytes` without
rewriting the record and a Lua script can make the few decisions that must be atomic
(claiming a job, cancelling it, releasing a lease). The access token lives under a key of its
own so that reading a job never reads the token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

import redis

from downloader.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob

CANCELLED_ERROR_TYPE = "DownloadJobCancelledException"

KIND_SINGLE = "download"
KIND_MULTIFILE = "multifile"

# Fields of the models that are stored as they are; the rest of a record is bookkeeping.
_SINGLE_FIELDS = tuple(name for name in DownloadJob.model_fields if name != "access_token")
_MULTI_FIELDS = tuple(
    name for name in MultiFileDownloadJob.model_fields if name != "download_parts"
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Keys:
    """Every Redis key and channel the project uses, under one namespace."""

    namespace: str

    def job(self, job_id: int) -> str:
        return f"{self.namespace}:job:{job_id}"

    def secret(self, job_id: int) -> str:
        return f"{self.namespace}:job:{job_id}:secret"

    def lease(self, job_id: int) -> str:
        return f"{self.namespace}:job:{job_id}:lease"

    def progress_gate(self, job_id: int) -> str:
        return f"{self.namespace}:job:{job_id}:gate"

    def queue_jobs(self, queue_id: str) -> str:
        return f"{self.namespace}:queue:{queue_id}:jobs"

    def events(self, queue_id: str) -> str:
        return f"{self.namespace}:events:{queue_id}"

    def celery_queue(self, queue_id: str) -> str:
        return f"{self.namespace}.{queue_id}"

    @property
    def next_id(self) -> str:
        return f"{self.namespace}:next_id"

    @property
    def job_sequence(self) -> str:
        return f"{self.namespace}:job_sequence"

    @property
    def running(self) -> str:
        return f"{self.namespace}:running"


class ClaimResult(StrEnum):
    CLAIMED = "claimed"
    LEASED = "leased"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    MISSING = "missing"


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # it was not running: now it is over
    REQUESTED = "requested"  # its worker will stop it
    FINISHED = "finished"  # too late, it had ended
    MISSING = "missing"


_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
status = cjson.decode(status)
if status == 'completed' or status == 'error' then return 'finished' end
if redis.call('HGET', KEYS[1], 'cancel_requested') == 'true' then return 'cancelled' end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 'leased' end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local seq = redis.call('INCR', KEYS[3]) - 1
redis.call('HSET', KEYS[1], 'status', '"running"', 'job_sequence', tostring(seq),
           'worker', cjson.encode(ARGV[1]), 'updated_at', ARGV[3])
local started = redis.call('HGET', KEYS[1], 'job_started')
if not started or started == 'null' then redis.call('HSET', KEYS[1], 'job_started', ARGV[3]) end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('SADD', KEYS[4], ARGV[4])
return 'claimed'
"""

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
status = cjson.decode(status)
if status == 'completed' or status == 'error' then return 'finished' end
redis.call('HSET', KEYS[1], 'cancel_requested', 'true', 'updated_at', ARGV[1])
if status == 'running' and redis.call('EXISTS', KEYS[2]) == 1 then return 'requested' end
redis.call('HSET', KEYS[1], 'status', '"error"', 'cancelled', 'true', 'error_type', ARGV[2],
           'job_ended', ARGV[1])
redis.call('SREM', KEYS[3], ARGV[3])
return 'cancelled'
"""

_RECOVER = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' then
  redis.call('SREM', KEYS[3], ARGV[2])
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', '"waiting"', 'updated_at', ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
return 1
"""

_FINISH_ONCE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
status = cjson.decode(status)
if status == 'completed' or status == 'error' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

_START_ONCE = """
if redis.call('HGET', KEYS[1], 'status') ~= '"waiting"' then return 0 end
redis.call('HSET', KEYS[1], 'status', '"running"', 'job_started', ARGV[1], 'updated_at', ARGV[1])
return 1
"""

_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

_RETRY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1], 'updated_at', ARGV[2])
return 1
"""

_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
redis.call('HSET', KEYS[1], 'bytes', ARGV[1], 'total_bytes', ARGV[2], 'updated_at', ARGV[3])
if redis.call('HGET', KEYS[1], 'cancel_requested') == 'true' then return 1 end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _encode(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, datetime):
        value = value.isoformat()
    elif value is not None and not isinstance(value, bool | int | float | str | list | dict):
        value = str(value)
    return json.dumps(value)


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    return {key.decode(): json.loads(value) for key, value in raw.items()}


class JobStore:
    """Reads and writes jobs; knows nothing about HTTP or Celery."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.keys = Keys(namespace)
        self._claim = client.register_script(_CLAIM)
        self._cancel = client.register_script(_CANCEL)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._finish_once = client.register_script(_FINISH_ONCE)
        self._start_once = client.register_script(_START_ONCE)
        self._recover = client.register_script(_RECOVER)
        self._update = client.register_script(_UPDATE)
        self._progress = client.register_script(_PROGRESS)
        self._retry = client.register_script(_RETRY)

    # -- creating -------------------------------------------------------------------------

    def new_ids(self, count: int) -> list[int]:
        last = int(self.redis.incrby(self.keys.next_id, count))
        return list(range(last - count, last))

    def create(
        self,
        queue_id: str,
        records: Iterable[Mapping[str, Any]],
        access_token: str | None = None,
    ) -> None:
        """Write new records (each holding its `id`) in one round trip."""
        now = utcnow()
        pipe = self.redis.pipeline()
        for fields in records:
            job_id = int(fields["id"])
            record = {"queue_id": queue_id, "created_at": now, "updated_at": now, "attempts": 0}
            record.update(fields)
            pipe.hset(self.keys.job(job_id), mapping={k: _encode(v) for k, v in record.items()})
            pipe.zadd(self.keys.queue_jobs(queue_id), {str(job_id): job_id})
            if access_token:
                pipe.set(self.keys.secret(job_id), access_token)
        pipe.execute()

    # -- reading --------------------------------------------------------------------------

    def record(self, job_id: int) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return _decode(raw) if raw else None

    def records(self, job_ids: Iterable[int]) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline()
        ids = list(job_ids)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        return [_decode(raw) for raw in pipe.execute() if raw]

    def queue_ids(self, queue_id: str) -> list[int]:
        return [int(x) for x in self.redis.zrange(self.keys.queue_jobs(queue_id), 0, -1)]

    def queue_records(self, queue_id: str) -> list[dict[str, Any]]:
        return self.records(self.queue_ids(queue_id))

    def access_token(self, job_id: int) -> str | None:
        token = self.redis.get(self.keys.secret(job_id))
        return token.decode() if token is not None else None

    # -- turning records into models -------------------------------------------------------

    def to_model(self, record: Mapping[str, Any]) -> DownloadJob | MultiFileDownloadJob:
        if record.get("kind") == KIND_MULTIFILE:
            parts = [self.to_model(part) for part in self.records(record.get("part_ids", []))]
            fields = {k: record[k] for k in _MULTI_FIELDS if k in record}
            fields["bytes"] = sum(part.bytes for part in parts)
            fields["total_bytes"] = sum(part.total_bytes for part in parts)
            job: DownloadJob | MultiFileDownloadJob = MultiFileDownloadJob(
                **fields, download_parts=parts
            )
        else:
            job = DownloadJob(**{k: record[k] for k in _SINGLE_FIELDS if k in record})
        job.cancelled = bool(record.get("cancelled"))
        return job

    def get(self, job_id: int) -> DownloadJob | MultiFileDownloadJob | None:
        record = self.record(job_id)
        return self.to_model(record) if record else None

    # -- the worker's side ------------------------------------------------------------------

    def claim(self, job_id: int, owner: str, lease_seconds: float) -> ClaimResult:
        result = self._claim(
            keys=[
                self.keys.job(job_id),
                self.keys.lease(job_id),
                self.keys.job_sequence,
                self.keys.running,
            ],
            args=[owner, int(lease_seconds * 1000), _encode(utcnow()), job_id],
        )
        return ClaimResult(result.decode())

    def renew(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        return bool(
            self._renew(keys=[self.keys.lease(job_id)], args=[owner, int(lease_seconds * 1000)])
        )

    def release(self, job_id: int, owner: str) -> None:
        self._release(keys=[self.keys.lease(job_id)], args=[owner])

    def update(self, job_id: int, **fields: Any) -> None:
        """Set fields of an existing job; a job removed meanwhile (pruned, cleared) stays gone."""
        fields["updated_at"] = utcnow()
        flat = [item for key, value in fields.items() for item in (key, _encode(value))]
        self._update(keys=[self.keys.job(job_id)], args=flat)

    def cancel_requested(self, job_id: int) -> bool:
        return self.redis.hget(self.keys.job(job_id), "cancel_requested") == b"true"

    def record_retry(self, job_id: int, reason: str) -> None:
        """Count one more attempt; like `update`, a job removed meanwhile stays gone."""
        self._retry(keys=[self.keys.job(job_id)], args=[_encode(reason), _encode(utcnow())])

    def report_progress(self, job_id: int, current: int, total: int) -> bool:
        """Store the byte counts and answer whether the job should stop (cancelled, or removed
        from the queue), in one round trip."""
        stop = self._progress(
            keys=[self.keys.job(job_id)], args=[current, total, _encode(utcnow())]
        )
        return bool(stop)

    def finish(self, job_id: int, status: DownloadJobStatus, **fields: Any) -> None:
        self._set_and_leave_running(job_id, status=status, job_ended=utcnow(), **fields)

    def requeue(self, job_id: int) -> None:
        """Back to waiting, for a worker that hands its job back on shutdown."""
        self._set_and_leave_running(job_id, status=DownloadJobStatus.WAITING)

    def _set_and_leave_running(self, job_id: int, **fields: Any) -> None:
        self.update(job_id, **fields)
        self.redis.srem(self.keys.running, job_id)

    def orphans(self) -> list[int]:
        """Running jobs whose lease is gone: their worker died. Each is set back to waiting
        once, atomically, so two workers looking at the same time do not both requeue it."""
        found = []
        for raw in self.redis.smembers(self.keys.running):
            job_id = int(raw)
            recovered = self._recover(
                keys=[self.keys.job(job_id), self.keys.lease(job_id), self.keys.running],
                args=[_encode(utcnow()), job_id],
            )
            if recovered:
                found.append(job_id)
        return found

    def finish_once(self, job_id: int, status: DownloadJobStatus, **fields: Any) -> bool:
        """Finish a job unless it has finished already; True for the one caller that did."""
        now = utcnow()
        fields.update(status=status, job_ended=now, updated_at=now)
        flat = [item for key, value in fields.items() for item in (key, _encode(value))]
        return bool(self._finish_once(keys=[self.keys.job(job_id)], args=flat))

    def start_once(self, job_id: int) -> bool:
        """Mark a waiting job running; True for the one caller that did."""
        return bool(self._start_once(keys=[self.keys.job(job_id)], args=[_encode(utcnow())]))

    def gate(self, job_id: int, seconds: float) -> bool:
        """True at most once every `seconds` per job, across every worker (a shared throttle)."""
        key = self.keys.progress_gate(job_id)
        return bool(self.redis.set(key, 1, px=max(1, int(seconds * 1000)), nx=True))

    # -- the client's side ------------------------------------------------------------------

    def cancel(self, job_id: int) -> CancelResult:
        result = self._cancel(
            keys=[self.keys.job(job_id), self.keys.lease(job_id), self.keys.running],
            args=[_encode(utcnow()), _encode(CANCELLED_ERROR_TYPE), job_id],
        )
        return CancelResult(result.decode())

    def remove(self, queue_id: str, job_ids: Iterable[int]) -> None:
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.delete(self.keys.job(job_id), self.keys.secret(job_id), self.keys.lease(job_id))
            pipe.zrem(self.keys.queue_jobs(queue_id), str(job_id))
        pipe.execute()
