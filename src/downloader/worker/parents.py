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
from downloader.jobs.models import DownloadJobStatus
from downloader.store.jobs import CANCELLED_ERROR_TYPE

if TYPE_CHECKING:
    from downloader.worker.runtime import Runtime


def _publish(app: Runtime, event: str, parent: dict[str, Any], **fields: Any) -> None:
    app.publisher.publish(event, parent["queue_id"], parent["id"], **fields)


def _counts(parent: dict[str, Any]) -> dict[str, int]:
    """What a parent's events say of its parts: how many ended well, of how many."""
    return {
        "parts_done": int(parent.get("parts_done", 0)),
        "parts_total": int(parent.get("parts_total", len(parent.get("part_ids", [])))),
    }


def part_started(app: Runtime, parent_id: int) -> None:
    if app.store.start_once(parent_id):
        parent = app.store.record(parent_id)
        if parent is not None:
            _publish(
                app,
                ev.MULTIFILE_STARTED,
                parent,
                part_ids=parent.get("part_ids", []),
                download_path=parent["download_path"],
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
            download_path=parent["download_path"],
            current_bytes=parent.get("bytes", 0),
            total_bytes=parent.get("total_bytes", 0),
            **_counts(parent),
        )


def settle(app: Runtime, parent_id: int) -> str:
    """Finish the parent if its parts' counters decide it; answers the parent's status."""
    parent = app.store.record(parent_id)
    if parent is None:
        return "missing"
    counts = _counts(parent)
    if int(parent.get("parts_failed", 0)) or int(parent.get("parts_cancelled", 0)):
        _settle_failed(app, parent)
    elif counts["parts_done"] >= counts["parts_total"]:
        _settle_completed(app, parent)
    record = app.store.record(parent_id) or parent
    return str(record["status"])


def _settle_failed(app: Runtime, parent: dict[str, Any]) -> None:
    culprit = app.store.record(int(parent["culprit"])) or {"id": parent["culprit"]}
    failed = not culprit.get("cancelled")
    fields = {"error_type": culprit.get("error_type"), "error": culprit.get("error")}
    if failed:
        fields["error"] = (
            f"part {culprit['id']} ({culprit.get('source')}) failed:\n{fields['error']}"
        )
    status = DownloadJobStatus.ERROR
    if not app.store.finish_once(parent["id"], status, cancelled=not failed, **fields):
        return
    app.durability.settle(f"end of multi-file job {parent['id']}")
    _cancel_parts(app, parent)
    if failed:
        _publish(app, ev.MULTIFILE_ERROR, parent, failed_part_id=culprit["id"], **fields)
    else:
        _publish(app, ev.MULTIFILE_CANCELLED, parent)


def _settle_completed(app: Runtime, parent: dict[str, Any]) -> None:
    if not app.store.finish_once(parent["id"], DownloadJobStatus.COMPLETED):
        return
    app.durability.settle(f"end of multi-file job {parent['id']}")
    total = parent.get("total_bytes", 0)
    path = parent["download_path"]
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


def cancel(app: Runtime, parent: dict[str, Any]) -> None:
    """Cancel a parent: it ends at once, its unfinished parts stop as single jobs do."""
    if app.store.finish_once(
        parent["id"], DownloadJobStatus.ERROR, cancelled=True, error_type=CANCELLED_ERROR_TYPE
    ):
        _publish(app, ev.MULTIFILE_CANCELLED, parent)
    _cancel_parts(app, parent)


def _cancel_parts(app: Runtime, parent: dict[str, Any]) -> None:
    """Cancel every part in pipelined batches: O(parts) in all, one round trip a batch."""
    app.cancel_many(parent.get("part_ids", []), parent["queue_id"])
