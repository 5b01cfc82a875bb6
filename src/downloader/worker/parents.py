"""Multi-file parents: their state follows from counters their parts keep.

A parent is never downloaded itself. It starts when its first part starts, and its record
holds what its parts did, kept by the store's scripts in the same call that changes a part:
`parts_done`, `parts_failed`, `parts_cancelled` (beside `parts_total`), the summed `bytes`
and `total_bytes` of its parts, and the `culprit`, the first part that did not complete.
Deciding the parent is therefore one read, whatever the number of parts: completed when
every part has, or error (or cancelled) as soon as one part fails, which cancels the others.
`settle` is safe to call any number of times from anywhere (every part calls it when it
ends); `finish_once` makes the parent end exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from downloader.jobs import events as ev
from downloader.jobs.failure import CANCELLED_ERROR_TYPE, cancellation
from downloader.jobs.models import DownloadJobStatus
from downloader.jobs.record import JobRecord

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime


def _publish(app: Runtime, event: str, parent: JobRecord, **fields: Any) -> None:
    app.publisher.publish(event, parent.queue_id, parent.id, **fields)


def _counts(parent: JobRecord) -> dict[str, int]:
    """What a parent's events say of its parts: how many ended well, of how many."""
    return {"parts_done": parent.parts_done, "parts_total": parent.parts_total}


def part_started(app: Runtime, parent_id: int) -> None:
    if app.store.start_once(parent_id):
        parent = app.store.record(parent_id)
        if parent is not None:
            _publish(
                app,
                ev.MULTIFILE_STARTED,
                parent,
                part_ids=parent.part_ids,
                download_path=parent.download_path,
            )


def part_progressed(app: Runtime, parent_id: int) -> None:
    """Publish the summed bytes, at most once per progress interval across all workers."""
    if not app.store.gate(parent_id, app.settings.progress_interval):
        return
    parent = app.store.record(parent_id)
    if parent is not None:
        _publish(
            app,
            ev.MULTIFILE_PROGRESS,
            parent,
            download_path=parent.download_path,
            current_bytes=parent.bytes,
            total_bytes=parent.total_bytes,
            **_counts(parent),
        )


def settle(app: Runtime, parent_id: int) -> str:
    """Finish the parent if its parts' counters decide it; answers the parent's status."""
    parent = app.store.record(parent_id)
    if parent is None:
        return "missing"
    if parent.parts_failed or parent.parts_cancelled:
        _settle_failed(app, parent)
    elif parent.parts_done >= parent.parts_total:
        _settle_completed(app, parent)
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
    else:
        failure = cancellation(parent.id)
    status = DownloadJobStatus.ERROR
    if not app.store.finish_once(
        parent.id, status, cancelled=not failed, error_type=error_type, error=error, failure=failure
    ):
        return
    app.durability.settle(f"end of multi-file job {parent.id}")
    _cancel_parts(app, parent)
    if failed:
        _publish(
            app,
            ev.MULTIFILE_ERROR,
            parent,
            failed_part_id=culprit_id,
            error_type=error_type,
            error=error,
        )
    else:
        _publish(app, ev.MULTIFILE_CANCELLED, parent)


def _settle_completed(app: Runtime, parent: JobRecord) -> None:
    if not app.store.finish_once(parent.id, DownloadJobStatus.COMPLETED):
        return
    app.durability.settle(f"end of multi-file job {parent.id}")
    total = parent.total_bytes
    path = parent.download_path
    counts = _counts(parent)
    _publish(
        app,
        ev.MULTIFILE_PROGRESS,
        parent,
        download_path=path,
        current_bytes=total,
        total_bytes=total,
        **counts,
    )
    _publish(app, ev.MULTIFILE_COMPLETE, parent, download_path=path, total_bytes=total, **counts)


def cancel(app: Runtime, parent: JobRecord) -> None:
    """Cancel a parent: it ends at once, its unfinished parts stop as single jobs do."""
    if app.store.finish_once(
        parent.id,
        DownloadJobStatus.ERROR,
        cancelled=True,
        error_type=CANCELLED_ERROR_TYPE,
        failure=cancellation(parent.id),
    ):
        _publish(app, ev.MULTIFILE_CANCELLED, parent)
    _cancel_parts(app, parent)


def _cancel_parts(app: Runtime, parent: JobRecord) -> None:
    """Cancel every part in pipelined batches: O(parts) in all, one round trip a batch."""
    app.cancel_many(parent.part_ids, parent.queue_id)
