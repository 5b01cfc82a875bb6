"""A job's life in the store: claimed with a lease, updated while it runs, ended, cancelled.

A small job must cost a worker few round trips, so each call here is one script (see
`lua/`) that does all that one moment of a job needs at once: the claim takes the lease,
marks the job running and answers its record and token; an update or the end of a job
publishes its events (`Announcement`s, prepared by `bus.EventPublisher.prepare`) in the same
script, after its writes, so a subscriber that hears an event and reads the record sees what
the event says; the end also releases the lease and the job's path reservations. Each of
them moves the job's index entries, its parent's counters and the stats with its status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from redis.commands.core import Script

from downloader.jobs.failure import CANCELLED_ERROR_TYPE, cancellation
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord, encode_value, utcnow
from downloader.store.base import BATCH, StoreBase, flat_fields
from downloader.store.bus import Announcement
from downloader.store.pacing import Held, SlotAnswer, SlotAsk
from downloader.store.scripts import load


class ClaimResult(StrEnum):
    CLAIMED = "claimed"
    LEASED = "leased"  # another live attempt holds it: this message is a duplicate
    FINISHED = "finished"
    CANCELLED = "cancelled"  # cancelled before it started: the claimer ends it
    PAUSED = "paused"  # paused while it waited: the resume queues it again
    STALE = "stale"  # its priority moved it to another level, where a newer message waits
    MISSING = "missing"


@dataclass(frozen=True)
class Claim:
    """What a claim decided, with the job's record and token as they were then (None: none)."""

    result: ClaimResult
    record: JobRecord | None
    token: str | None
    slot: tuple[Held, SlotAnswer] | None = None
    """The slot asked for with the claim (`SlotAsk`), of the host the script read in the
    job's source, and how the try went (None: none was tried)."""


class Standing(StrEnum):
    """What a running attempt hears when it looks at its job."""

    GO_ON = "go on"
    CANCELLED = "cancelled"
    GONE = "gone"  # the record is no longer in Redis: removed, or lost with Redis's data
    PAUSED = "paused"  # a caller paused it: stop, keep the partial file


class Renewal(StrEnum):
    """What became of a lease its worker renewed."""

    HELD = "held"
    TAKEN = "taken"  # another attempt holds it, or it ran out: that attempt owns the job now
    GONE = "gone"  # the job's record is no longer in Redis


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # it was not running: now it is over
    REQUESTED = "requested"  # its worker will stop it
    FINISHED = "finished"  # too late, it had ended
    MISSING = "missing"


_RENEWALS = {1: Renewal.HELD, 0: Renewal.TAKEN, 2: Renewal.GONE}
_STANDINGS = {0: Standing.GO_ON, 1: Standing.CANCELLED, 2: Standing.GONE, 3: Standing.PAUSED}


class JobLifecycle(StoreBase):
    """Claims, leases, updates, ends and cancels jobs; every change in one script call."""

    @cached_property
    def _scripts(self) -> dict[str, Script]:
        names = (
            "claim",
            "cancel",
            "recover",
            "transition",
            "update",
            "progress",
            "retry",
            "stop_parts",
        )
        scripts = {name: load(self.redis, name, library=True) for name in names}
        scripts.update({name: load(self.redis, name) for name in ("renew", "release")})
        return scripts

    # -- a worker's attempt -----------------------------------------------------------------

    def claim(
        self,
        job_id: int,
        owner: str,
        lease_seconds: float,
        sent_level: int | None = None,
        slot: SlotAsk | None = None,
    ) -> Claim:
        """Take job `job_id` for one attempt, in one round trip.

        A finished job, a cancelled one, a paused one, one leased to another live attempt
        and one whose message is stale (sent at a level its new priority left) are refused;
        otherwise the lease is taken, the job marked running (`attempts`, `worker`,
        `job_sequence`, `job_started`) and its dispatch note dropped.

        Args:
            job_id: the job.
            owner: the attempt, unique per attempt (`<worker node>#<random>`).
            lease_seconds: how long the lease lasts unless renewed.
            sent_level: the broker priority level the message came at (None: unknown, as
                for a local worker's queue, which is never stale).
            slot: a connection slot to try for the job's first connection (only for a job
                claimed, of an http(s) source, never waiting in the host's line).

        Returns:
            The decision, with the record and token as they were then (both None for a
            missing job); the lease is taken only for `ClaimResult.CLAIMED`.
        """
        level = "" if sent_level is None else str(sent_level)
        asked = slot.args() if slot is not None else []
        args = self._args(job_id, owner, int(lease_seconds * 1000), level, *asked)
        result, flat, token, tried = self._scripts["claim"](args=args)
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        record = JobRecord.from_hash(pairs) if pairs else None
        taken = None
        if slot is not None and tried:
            taken = Held(tried[0].decode(), slot.holder), SlotAnswer.of(tried[1:])
        return Claim(ClaimResult(result.decode()), record, token.decode() if token else None, taken)

    def renew_many(self, leases: Iterable[tuple[int, str]], lease_seconds: float) -> list[Renewal]:
        """Renew several (job id, owner) leases in one round trip; answers what became of each."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, owner in leases:
            self._scripts["renew"](
                keys=[self.keys.lease(job_id), self.keys.job(job_id)],
                args=[owner, int(lease_seconds * 1000)],
                client=pipe,
            )
        return [_RENEWALS[int(answer)] for answer in pipe.execute()]

    def release(self, job_id: int, owner: str) -> None:
        """Give up the lease `owner` holds on the job (nothing if another holds it now)."""
        self._scripts["release"](keys=[self.keys.lease(job_id)], args=[owner])

    def update(self, job_id: int, events: Iterable[Announcement] = (), **fields: Any) -> bool:
        """Set fields of an unfinished job, then publish `events` (all to the same channels);
        a job removed meanwhile (pruned, cleared) stays gone, and one that has ended takes
        nothing more: nothing is published after a job's end.

        Returns:
            Whether the job took the fields and its events went out.

        Raises:
            ValueError: a field the record lacks, or events bound for different channels.
        """
        channels, texts = _announced(events)
        args = self._args(job_id, len(texts), *texts, *flat_fields(fields))
        return bool(self._scripts["update"](keys=channels, args=args))

    def stop_parts_once(self, parent_id: int) -> bool:
        """Mark an unfinished multi-file parent as stopping its parts (`cancel_requested`);
        True for the one caller that did, which then cancels them."""
        return bool(self._scripts["stop_parts"](args=self._args(parent_id)))

    def standing(self, job_id: int) -> Standing:
        """Whether a running attempt goes on, is cancelled or paused, or lost its record."""
        cancel, pause, status = self.redis.hmget(
            self.keys.job(job_id), "cancel_requested", "pause_requested", "status"
        )
        if status is None:
            return Standing.GONE
        if cancel == b"true":
            return Standing.CANCELLED
        return Standing.PAUSED if pause == b"true" else Standing.GO_ON

    def record_retry(self, job_id: int, reason: str) -> None:
        """Count one more attempt, whose failure was `reason` (an `error_type`); like
        `update`, a job removed meanwhile stays gone."""
        self._scripts["retry"](args=self._args(job_id, encode_value(reason)))

    def report_progress(self, job_id: int, current: int, total: int) -> Standing:
        """Store the byte counts and answer whether the job goes on, in one round trip."""
        answer = self._scripts["progress"](args=self._args(job_id, current, total))
        return _STANDINGS[int(answer)]

    # -- ending and moving a job ------------------------------------------------------------

    def finish(
        self,
        job_id: int,
        status: DownloadJobStatus,
        owner: str = "",
        paths: Iterable[str] = (),
        events: Iterable[Announcement] = (),
        slots: Iterable[Held] = (),
        **fields: Any,
    ) -> bool:
        """End a job in one round trip.

        Args:
            job_id: the job.
            status: its final status.
            owner: the attempt whose lease is released (if it still holds it).
            paths: path reservation keys released if the job holds them.
            events: published after the writes, to their (shared) channels.
            slots: connection slots its transfer left for the end to give back.
            fields: record fields to set (`bytes`, `error_type`, `failure`, ...;
                `job_ended`: now, unless given).

        Returns:
            False, and nothing done, when the job's record is gone.
        """
        fields.setdefault("job_ended", utcnow())
        return self._move(job_id, status, "any", owner, paths, events, slots, **fields)

    def pause_stopped(
        self, job_id: int, owner: str, events: Iterable[Announcement] = (), **fields: Any
    ) -> bool:
        """A paused job's worker stopped it: paused, its lease released (its paths stay its
        own), then `events` published. False, and nothing done, when the pause was withdrawn
        meanwhile (a resume came first): the attempt hands the job back instead."""
        return self._move(
            job_id,
            DownloadJobStatus.PAUSED,
            "pausing",
            owner,
            (),
            events,
            pause_requested=False,
            **fields,
        )

    def requeue(self, job_id: int) -> None:
        """Back to waiting, for a worker that hands its job back on shutdown."""
        self._move(job_id, DownloadJobStatus.WAITING, "any")

    def finish_once(
        self,
        job_id: int,
        status: DownloadJobStatus,
        events: Iterable[Announcement] = (),
        **fields: Any,
    ) -> bool:
        """Finish a job unless it has finished already, publishing `events` with the change;
        True for the one caller that did (only its events go out)."""
        return self._move(job_id, status, "once", events=events, job_ended=utcnow(), **fields)

    def start_once(self, job_id: int, events: Iterable[Announcement] = ()) -> bool:
        """Mark a waiting job running, publishing `events` with the change; True for the one
        caller that did (only its events go out)."""
        return self._move(
            job_id, DownloadJobStatus.RUNNING, "waiting", events=events, job_started=utcnow()
        )

    def _move(
        self,
        job_id: int,
        status: DownloadJobStatus,
        mode: str,
        owner: str = "",
        paths: Iterable[str] = (),
        events: Iterable[Announcement] = (),
        slots: Iterable[Held] = (),
        **fields: Any,
    ) -> bool:
        """`lua/transition.lua`: `mode` 'any', 'once' (unless finished), 'waiting' or
        'pausing' (a running job whose pause is still asked for)."""
        fields["updated_at"] = utcnow()
        keys = list(paths)
        given_back = [
            part for slot in slots for part in (self.keys.host_slots(slot.host), slot.holder)
        ]
        channels, texts = _announced(events)
        args = self._args(
            job_id,
            status.value,
            mode,
            owner,
            len(keys),
            *keys,
            len(given_back) // 2,
            *given_back,
            len(texts),
            *texts,
            *flat_fields(fields),
        )
        return bool(self._scripts["transition"](keys=channels, args=args))

    def orphans(self) -> list[int]:
        """Running jobs whose lease is gone: their worker died. Each is set back to waiting
        once, atomically, so two workers looking at the same time do not both requeue it."""
        found = []
        for raw in self.redis.smembers(self.keys.running):
            job_id = int(raw)
            if self._scripts["recover"](args=self._args(job_id)):
                found.append(job_id)
        return found

    # -- a client's cancel ------------------------------------------------------------------

    def cancel(self, job_id: int) -> CancelResult:
        """Cancel one job (see `cancel_many`)."""
        return self.cancel_many([job_id])[0]

    def cancel_many(self, job_ids: Iterable[int]) -> list[CancelResult]:
        """Cancel several jobs in pipelined batches.

        A waiting job, or a running one whose lease ran out (its worker is gone), ends at
        once as a cancelled error; a running one is flagged, and its worker stops it within a
        progress interval.

        Returns:
            What became of each job, in order.
        """
        ids = list(job_ids)
        results: list[CancelResult] = []
        for start in range(0, len(ids), BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids[start : start + BATCH]:
                failure = encode_value(cancellation(job_id))
                args = self._args(job_id, encode_value(CANCELLED_ERROR_TYPE), failure)
                self._scripts["cancel"](args=args, client=pipe)
            results.extend(CancelResult(raw.decode()) for raw in pipe.execute())
        return results


def _announced(events: Iterable[Announcement]) -> tuple[list[str], list[str]]:
    """The channels and texts of events for one script call: they share their channels."""
    events = list(events)
    channels = {events[0].channels} if events else set()
    if any(event.channels not in channels for event in events):
        raise ValueError("events published in one call go to the same channels")
    return (list(events[0].channels) if events else []), [event.data for event in events]
