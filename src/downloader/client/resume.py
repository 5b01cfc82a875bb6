"""What a stopped `downloader get` leaves for the same `get` to take over.

On the embedded default every `get` runs its own jobs on a queue of its own, so a `get`
stopped by Ctrl-C or SIGTERM leaves waiting jobs that no worker will ever come for. It notes
them (`remember`) under what it was asked for: `<dest>\\n<url>`, for `-o` (the job's
final path is `dest` itself) `<dest>\\n-o` (the next `get -o` of that path may bring a fresh
signed URL), or for a repo's file `<dest>\\n<its final path>` (its next resolution may pin
another commit, hence another URL).
The next `get` of the same sources and destination takes them over (`take_over`): it removes
those jobs (a repo's whole job with them, so nothing of it is left unfinished for ever,
holding its files' paths) and resumes their partial files in jobs of its own, or, with
`--restart`, deletes them. The partial file of a `-o` begun from another URL is resumed only
when it has a strong ETag: the first request then carries it in `If-Range`, so the server
sends the rest only if the file is still that version (and the engine checks the size and
ETag again), else the whole file, which starts it over. A repo's file whose commit moved
starts over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from downloader.engine.filestate import PartialState, discard_partial, partial_path, state_path
from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob
from downloader.jobs.record import JobRecord
from downloader.store.admin import StoreAdmin

Job = DownloadJob | MultiFileDownloadJob


class Takeover(StrEnum):
    """What becomes of a stopped job's partial file."""

    RESTARTED = "restarted"
    """Deleted (`--restart`): the new job starts from nothing."""
    UNUSABLE = "unusable"
    """It cannot be resumed (another URL, no validator, no state): the new job starts over."""
    SEGMENTED = "segmented"
    """A segmented download, resumed from the segments it holds."""
    RESUMED = "resumed"
    """Resumed with a Range request from its size."""


@dataclass(frozen=True)
class TakenOver:
    """A stopped job's file, taken over by a new `get`."""

    name: str
    """How it was remembered: its URL, or a repo file's final path."""
    path: Path
    """Its final path, which the new job resumes at (unless `how` is `RESTARTED`)."""
    is_part: bool
    """A file of a repo (a multi-file job's part)."""
    how: Takeover
    done: int
    """Bytes already on disk that the new job keeps."""


OUTPUT = "-o"
"""The name a job whose final path is its `get`'s destination (`-o`) is remembered under:
no URL is ever this, and no repo file's final path."""


def entry(dest: Path, name: str) -> str:
    return f"{dest}\n{name}"


def remember(admin: StoreAdmin, dest: Path, jobs: Iterable[Job]) -> None:
    """Note the unfinished jobs of a stopped `get` into `dest`, for the same `get` to take
    over: a URL's job under its URL, a repo's files each under its final path."""
    stopped: dict[str, int] = {}
    for job in jobs:
        if job.in_terminal_state:
            continue
        if isinstance(job, DownloadJob):
            named = job.download_path is not None and job.download_path == dest
            stopped[entry(dest, OUTPUT if named else str(job.source))] = job.id
            continue
        for part in job.download_parts:
            if not part.in_terminal_state:
                stopped[entry(dest, str(part.download_path))] = part.id
    admin.remember_stopped(stopped)


def take_over(
    admin: StoreAdmin, dest: Path, wanted: Mapping[str, str], restart: bool
) -> list[TakenOver]:
    """Take over what a stopped `get` into `dest` left for the files in `wanted` (how each is
    remembered, to the URL its new job fetches): its jobs are removed, and each partial file
    found is made the new job's to resume or, with `restart`, deleted. Costs a few round
    trips whatever the number of files."""
    found = admin.take_stopped([entry(dest, name) for name in wanted])
    if not found:
        return []
    names = {entry(dest, name): name for name in wanted}
    store = admin.store
    records = {r.id: r for r in store.records(found.values())}
    _remove_jobs(admin, records.values())
    taken = []
    for field, job_id in found.items():
        record = records.get(job_id)
        if record is None or record.status is not DownloadJobStatus.WAITING:
            continue
        path = record.download_path
        if path is None:
            continue
        if partial_path(path).exists():
            name = names[field]
            is_part = record.parent_id is not None
            taken.append(_take(name, path, is_part, wanted[name], restart))
    return taken


def _take(name: str, path: Path, is_part: bool, url: str, restart: bool) -> TakenOver:
    """Delete the partial file at `path` or make it resumable by whichever job comes next."""
    partial = partial_path(path)
    if restart:
        discard_partial(path, owner=None)
        return TakenOver(name, path, is_part, Takeover.RESTARTED, 0)
    state = PartialState.load(state_path(partial))
    moved = state is not None and state.source.url != url
    # Only the file `-o` names may come from a new URL (a fresh signed link of that file); a
    # repo's file at another commit starts over, whatever its ETag (README: Command line).
    movable = name == OUTPUT and state is not None and state.source.etag
    if state is None or not state.source.if_range or (moved and not movable):
        how, done = Takeover.UNUSABLE, 0
    elif state.segments is not None:
        how, done = Takeover.SEGMENTED, state.segmented_done
    else:
        how, done = Takeover.RESUMED, partial.stat().st_size
    if state is not None:
        state.owner = None  # its job is gone: whichever job resumes it owns it now
        if how is not Takeover.UNUSABLE:
            state.source.url = url  # the new URL's answer must still match its ETag
        state.save(state_path(partial))
    return TakenOver(name, path, is_part, how, done)


def _remove_jobs(admin: StoreAdmin, records: Iterable[JobRecord]) -> None:
    """Remove the stopped jobs taken over, a repo's whole job with them (its parent and every
    part, finished ones too)."""
    store = admin.store
    records = list(records)
    parents = {record.parent_id for record in records if record.parent_id is not None}
    by_queue: dict[str, set[int]] = {}
    for record in [*records, *store.records(parents)]:
        ids = by_queue.setdefault(record.queue_id, set())
        ids.update([record.id, *record.part_ids])
    for queue_id, ids in by_queue.items():
        store.remove(queue_id, ids)
