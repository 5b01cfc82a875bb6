"""A multi-file job as the store keeps it: the parent, which never downloads and holds no
token, and one plain download job per part, each knowing its parent, its hash and the root
(`dest`) below which the engine follows no link.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from downloader.jobs.models import DownloadJob, MultiFileDownloadJob, RemoteModelFile, mirror_urls
from downloader.jobs.record import JobRecord


def build_multifile(
    ids: Sequence[int],
    parts: Sequence[RemoteModelFile],
    dest: Path,
    access_token: str | None,
    *,
    priority: int,
    untrusted: bool,
    revision: str | None,
    bandwidth: int | None = None,
) -> tuple[MultiFileDownloadJob, list[JobRecord]]:
    """The job (its parts as `download_parts`) and its records, parent first.

    `ids` holds the parent's id, then one per part; `dest` is absolute; `parts` were checked
    by `check_part_paths`; `bandwidth` is each part's own rate (bytes/s; None: none).
    """
    job = MultiFileDownloadJob(
        id=ids[0],
        dest=dest,
        priority=priority,
        download_path=_common_root(dest, parts),
        revision=revision,
    )
    for part_id, part in zip(ids[1:], parts, strict=True):
        job.download_parts.append(
            DownloadJob(
                id=part_id,
                source=part.url,
                dest=dest / part.path,
                priority=priority,
                download_path=dest / part.path,
                total_bytes=part.size or 0,
                access_token=access_token,
            )
        )
    parent_record = JobRecord.for_job(
        job,
        part_ids=list(ids[1:]),
        parts_total=len(parts),
        total_bytes=sum(part.size or 0 for part in parts),
    )
    part_records = [
        JobRecord.for_job(
            part_job,
            parent_id=job.id,
            sha256=part.sha256,
            size=part.size,
            untrusted=untrusted,
            dest_is_dir=False,
            mirrors=mirror_urls(part.mirrors),
            root=dest,
            bandwidth=bandwidth,
        )
        for part_job, part in zip(job.download_parts, parts, strict=True)
    ]
    return job, [parent_record, *part_records]


def check_part_paths(parts: Sequence[RemoteModelFile]) -> None:
    """Refuse a part list that would collide or be empty, before anything is written."""
    if not parts:
        raise ValueError("a multi-file download needs at least one part")
    seen: set[str] = set()
    for part in parts:
        key = part.path.as_posix()
        if key in seen:
            raise ValueError(f"two parts have the same path {key!r}")
        seen.add(key)


def _common_root(dest: Path, parts: Sequence[RemoteModelFile]) -> Path:
    """`dest/<first component>` when every part lies under that same directory, else `dest`."""
    firsts = {part.path.parts[0] for part in parts if len(part.path.parts) > 1}
    if len(firsts) == 1 and all(len(part.path.parts) > 1 for part in parts):
        return dest / firsts.pop()
    return dest
