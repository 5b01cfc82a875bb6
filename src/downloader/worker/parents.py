"""Multi-file parents: their state follows from counters their parts keep.

A parent is never downloaded itself. It starts when its first part starts, and its record
holds what its parts did, kept by the store's scripts in the same call that changes a part:
`parts_done`, `parts_failed`, `parts_cancelled` (beside `parts_total`), the summed `bytes`
and `total_bytes` of its parts, and the `culprit`, the first part that did not complete.
Deciding the parent is therefore one read, whatever the number of parts: completed when
every part has; when one part fails (or the parent is cancelled), the others are cancelled
and the parent ends, as an error (or cancelled), once every part has ended. So a part never
reads `running` after its parent's end, and a part's own events come before that end.

Every event of a parent goes out from the store script that checks the parent's state: its
start with the move to running, its progress only while it has not ended, its end with the
move that ends it. So its end is the last event it publishes, whichever worker publishes
what, and in whatever order their threads run.

`settle` is safe to call any number of times from anywhere (every part calls it when it
ends); `finish_once` makes the parent end exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from downloader.jobs import events as ev
from downloader.jobs.failure import cancellation
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord
from downloader.store.bus import Announcement

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime


def _event(app: Runtime, event: str, parent: JobRecord, **fields: Any) -> Announcement:
    return app.publisher.prepare(event, parent.queue_id, parent.id, parent.follower, **fields)


def _counts(parent: JobRecord) -> dict[str, int]:
    """What a parent's events say of its parts: how many ended well, of how many."""
    return {"parts_done": parent.parts_done, "parts_total": parent.parts_total}


def part_started(app: Runtime, parent_id: int) -> None:
    """The parent starts with its first part: running, and `multifile_started`, in one call."""
    if app.store.status_of(parent_id) is not DownloadJobStatus.WAITING:
        return  # started already (the usual case: one field read), or ended, or gone
    parent = app.store.record(parent_id)
    if parent is not None:
        started = _event(
            app,
            ev.MULTIFILE_STARTED,
            parent,
            part_ids=parent.part_ids,
            download_path=parent.download_path,
        )
        app.store.start_once(parent_id, events=[started])


def part_progressed(app: Runtime, parent_id: int) -> None:
    """Publish the summed bytes, at most once per progress interval across all workers, and
    never after the parent's end."""
    if not app.store.gate(parent_id, app.settings.progress_interval):
        return
    parent = app.store.record(parent_id)
    if parent is not None and not parent.status.finished:
        progress = _event(
            app,
            ev.MULTIFILE_PROGRESS,
            parent,
            download_path=parent.download_path,
            current_bytes=parent.bytes,
            total_bytes=parent.total_bytes,
            **_counts(parent),
        )
        app.store.update(parent_id, events=[progress])


def settle(app: Runtime, parent_id: int) -> str:
    """Move the parent on as its parts' counters decide; answers the parent's status.

    A failed or cancelled part (or a cancel of the parent) stops the other parts, once; the
    parent ends when the last of them has ended.
    """
    parent = app.store.record(parent_id)
    if parent is None:
        return "missing"
    if parent.status.finished:
        return parent.status.value
    if parent.parts_done >= parent.parts_total:
        _settle_completed(app, parent)  # every part completed (a cancel came too late)
    elif parent.parts_failed or parent.parts_cancelled or parent.cancel_requested:
        if app.store.stop_parts_once(parent_id):
            _cancel_parts(app, parent)
            parent = app.store.record(parent_id) or parent
        ended = parent.parts_done + parent.parts_failed + parent.parts_cancelled
        if ended >= parent.parts_total:
            _settle_failed(app, parent)
    record = app.store.record(parent_id) or parent
    return record.status.value


def _settle_failed(app: Runtime, parent: JobRecord) -> None:
    culprit_id = parent.culprit  # set by the script that counted the first failure
    culprit = app.store.record(culprit_id) if culprit_id is not None else None
    failed = culprit is None or not culprit.cancelled
    error_type = culprit.error_type if culprit is not None else None
    error = culprit.error if culprit is not None else None
    failure = culprit.failure if culprit is not None else None
    if failed:
        source = culprit.source if culprit is not None else None
        error = f"part {culprit_id} ({source}) failed:\n{error}"
        end = _event(
            app,
            ev.MULTIFILE_ERROR,
            parent,
            failed_part_id=culprit_id,
            error_type=error_type,
            error=error,
        )
    else:
        failure = cancellation(parent.id)
        end = _event(app, ev.MULTIFILE_CANCELLED, parent)
    _end(
        app,
        parent,
        DownloadJobStatus.ERROR,
        [end],
        cancelled=not failed,
        error_type=error_type,
        error=error,
        failure=failure,
    )


def _settle_completed(app: Runtime, parent: JobRecord) -> None:
    total = parent.total_bytes
    path = parent.download_path
    counts = _counts(parent)
    events = [
        _event(
            app,
            ev.MULTIFILE_PROGRESS,
            parent,
            download_path=path,
            current_bytes=total,
            total_bytes=total,
            **counts,
        ),
        _event(app, ev.MULTIFILE_COMPLETE, parent, download_path=path, total_bytes=total, **counts),
    ]
    _end(app, parent, DownloadJobStatus.COMPLETED, events)


def _end(
    app: Runtime,
    parent: JobRecord,
    status: DownloadJobStatus,
    events: list[Announcement],
    **fields: Any,
) -> None:
    """End the parent once, its end told by the one caller that ended it: in the same script
    as the write, or, with replicas to wait for, once they have it (as `worker.ending` does
    for a single job). A progress checks the parent's state in its own script, so whichever
    way, none goes out after the end."""
    deferred = app.durability.needed() > 0
    if not app.store.finish_once(parent.id, status, events=[] if deferred else events, **fields):
        return
    app.durability.settle(f"end of multi-file job {parent.id}")
    if deferred:
        app.publisher.announce(events)


def cancel(app: Runtime, parent: JobRecord) -> None:
    """Cancel a parent: its unfinished parts stop as single jobs do (a waiting one at once, a
    running one within a second), and the parent ends, cancelled, with the last of them."""
    if app.store.stop_parts_once(parent.id):
        _cancel_parts(app, parent)
    settle(app, parent.id)


def _cancel_parts(app: Runtime, parent: JobRecord) -> None:
    """Cancel every part in pipelined batches: O(parts) in all, one round trip a batch."""
    app.cancel_many(parent.part_ids, parent.queue_id)
