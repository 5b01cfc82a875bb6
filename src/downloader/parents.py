"""Multi-file parents: their state follows from their parts.

A parent is never downloaded itself. It starts when its first part starts, reports the summed
bytes of its parts, and ends exactly once: completed when every part has, or as error (or
cancelled) as soon as one part fails, which cancels the others. `settle` decides that from the
parts' records and is safe to call any number of times from anywhere: the chord body calls it
when the last part returns, and every part calls it when it ends, so a chord body that never
runs cannot leave the parent running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from downloader import events as ev
from downloader.models import DownloadJobStatus
from downloader.store import CANCELLED_ERROR_TYPE

if TYPE_CHECKING:
    from downloader.celery_app import DownloaderApp


def _parts(app: DownloaderApp, parent: dict[str, Any]) -> list[dict[str, Any]]:
    return app.store.records(parent.get("part_ids", []))


def _publish(app: DownloaderApp, event: str, parent: dict[str, Any], **fields: Any) -> None:
    app.publisher.publish(
        event, parent["queue_id"], parent["id"], part_ids=parent.get("part_ids", []), **fields
    )


def part_started(app: DownloaderApp, parent_id: int) -> None:
    if app.store.start_once(parent_id):
        parent = app.store.record(parent_id)
        if parent is not None:
            _publish(app, ev.MULTIFILE_STARTED, parent, download_path=parent["download_path"])


def part_progressed(app: DownloaderApp, parent_id: int) -> None:
    """Publish the summed bytes, at most once per progress interval across all workers."""
    if not app.store.gate(parent_id, app.settings.progress_interval):
        return
    parent = app.store.record(parent_id)
    if parent is not None:
        parts = _parts(app, parent)
        _publish(
            app, ev.MULTIFILE_PROGRESS, parent,
            download_path=parent["download_path"],
            current_bytes=sum(part.get("bytes", 0) for part in parts),
            total_bytes=sum(part.get("total_bytes", 0) for part in parts),
        )


def settle(app: DownloaderApp, parent_id: int) -> str:
    """Finish the parent if its parts decide it; answers the parent's status."""
    parent = app.store.record(parent_id)
    if parent is None:
        return "missing"
    parts = _parts(app, parent)
    failed = [p for p in parts if p["status"] == DownloadJobStatus.ERROR and not p.get("cancelled")]
    cancelled = [p for p in parts if p.get("cancelled")]
    if failed or cancelled:
        _settle_failed(app, parent, failed, cancelled)
    elif parts and all(p["status"] == DownloadJobStatus.COMPLETED for p in parts):
        _settle_completed(app, parent, parts)
    record = app.store.record(parent_id) or parent
    return str(record["status"])


def _settle_failed(
    app: DownloaderApp, parent: dict[str, Any],
    failed: list[dict[str, Any]], cancelled: list[dict[str, Any]],
) -> None:
    culprit = (failed or cancelled)[0]
    fields = {"error_type": culprit.get("error_type"), "error": culprit.get("error")}
    if failed:
        fields["error"] = f"part {culprit['id']} ({culprit['source']}) failed:\n{fields['error']}"
    status = DownloadJobStatus.ERROR
    if not app.store.finish_once(parent["id"], status, cancelled=not failed, **fields):
        return
    _cancel_parts(app, parent)
    if failed:
        _publish(app, ev.MULTIFILE_ERROR, parent, failed_part_id=culprit["id"], **fields)
    else:
        _publish(app, ev.MULTIFILE_CANCELLED, parent)


def _settle_completed(
    app: DownloaderApp, parent: dict[str, Any], parts: list[dict[str, Any]]
) -> None:
    if not app.store.finish_once(parent["id"], DownloadJobStatus.COMPLETED):
        return
    total = sum(part.get("total_bytes", 0) for part in parts)
    path = parent["download_path"]
    _publish(app, ev.MULTIFILE_PROGRESS, parent, download_path=path, current_bytes=total,
             total_bytes=total)
    _publish(app, ev.MULTIFILE_COMPLETE, parent, download_path=path, total_bytes=total)


def cancel(app: DownloaderApp, parent: dict[str, Any]) -> None:
    """Cancel a parent: it ends at once, its unfinished parts stop as single jobs do."""
    if app.store.finish_once(
        parent["id"], DownloadJobStatus.ERROR, cancelled=True, error_type=CANCELLED_ERROR_TYPE
    ):
        _publish(app, ev.MULTIFILE_CANCELLED, parent)
    _cancel_parts(app, parent)


def _cancel_parts(app: DownloaderApp, parent: dict[str, Any]) -> None:
    for part_id in parent.get("part_ids", []):
        app.cancel(part_id, parent["queue_id"])
