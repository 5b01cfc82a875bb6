"""Per-job control on the service: pause, resume, retry and priority, with real Redis, the
real in-process Celery worker and the local origin.

A pause stops the transfer as a cancel does but keeps the partial file, frees the worker's
slot and answers `paused`; the resume continues with a Range request. A retry queues a failed
or cancelled job again. A new priority moves a waiting job in its queue. Each refusal is an
`InvalidTransitionError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from downloader import DownloadQueueService, InvalidTransitionError, RemoteModelFile
from downloader.config import Settings
from downloader.jobs.models import DownloadJobStatus
from tests.origin import Origin
from tests.test_queue import MiB, sha256, wait_until


class Events:
    """The events of a service's jobs, in the order its listener received them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        self.seen.append((name, payload))

    def of(self, job_id: int) -> list[str]:
        return [name for name, payload in self.seen if payload.get("job_id") == job_id]

    def started(self) -> list[int]:
        return [p["job_id"] for name, p in self.seen if name == "download_started"]


def _range_of(origin: Origin, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in origin.gets(path)]


def test_pause_a_running_download_frees_the_slot_and_resume_continues_with_range(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    events = Events()
    service = make_service(max_parallel_dl=1, event_bus=events)
    data = os.urandom(3 * MiB)
    origin.add("big.bin", data)
    origin.add("small.bin", b"s" * 1000)
    job = service.download(origin.url("/files/big.bin?rate=1000000"), tmp_path)
    wait_until(lambda: job.bytes > 0)

    paused = service.pause_job(job)
    assert paused is job and job.status is DownloadJobStatus.PAUSED and job.paused
    partial = tmp_path / "big.bin.downloading"
    assert partial.exists() and not (tmp_path / "big.bin").exists()
    kept = partial.stat().st_size
    assert kept > 0

    # The one worker slot is free: another job runs and completes while the first is paused.
    other = service.wait_for_job(service.download(origin.url("/files/small.bin"), tmp_path), 10)
    assert other.complete
    assert service.id_to_job(job.id).status is DownloadJobStatus.PAUSED

    resumed = service.resume_job(job.id)
    assert resumed is job and job.status in (DownloadJobStatus.WAITING, DownloadJobStatus.RUNNING)
    service.wait_for_job(job, timeout=30)
    assert job.complete
    assert sha256(job.download_path) == hashlib.sha256(data).hexdigest()
    ranges = _range_of(origin, "/files/big.bin")
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").split("-")[0]) >= kept
    order = events.of(job.id)
    assert order.index("download_paused") < order.index("download_resumed")
    assert order[-1] == "download_complete"
    assert "download_cancelled" not in order


def test_pause_a_waiting_job_then_resume_it(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    events = Events()
    service = make_service(max_parallel_dl=1, event_bus=events)
    origin.add("held.bin", b"h" * 1000)
    origin.add("later.bin", b"l" * 2000)
    holder = service.download(origin.url("/files/held.bin?hold=slot"), tmp_path)
    wait_until(lambda: len(origin.gets("/files/held.bin")) == 1)
    waiting = service.download(origin.url("/files/later.bin"), tmp_path)
    assert service.pause_job(waiting).status is DownloadJobStatus.PAUSED
    origin.add("probe.bin", b"p" * 10)
    probe = service.download(origin.url("/files/probe.bin"), tmp_path)  # sent after it
    origin.release("slot")
    service.wait_for_job(holder, timeout=10)
    service.wait_for_job(probe, timeout=10)
    assert origin.gets("/files/later.bin") == []  # its message was dropped: it stays paused
    assert service.id_to_job(waiting.id).status is DownloadJobStatus.PAUSED
    service.resume_job(waiting)
    assert service.wait_for_job(waiting, timeout=10).complete
    assert events.of(waiting.id)[:2] == ["download_paused", "download_resumed"]


def test_pause_and_resume_a_multifile_job(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(max_parallel_dl=2)
    one, two = os.urandom(2 * MiB), os.urandom(2 * MiB)
    origin.add("one.bin", one)
    origin.add("two.bin", two)
    parts = [
        RemoteModelFile(url=origin.url("/files/one.bin?rate=400000"), path=Path("m/one.bin")),
        RemoteModelFile(url=origin.url("/files/two.bin?rate=400000"), path=Path("m/two.bin")),
    ]
    job = service.multifile_download(parts, tmp_path)
    wait_until(lambda: all(part.bytes > 0 for part in job.download_parts))

    service.pause_job(job)
    assert job.status is DownloadJobStatus.PAUSED
    assert {part.status for part in job.download_parts} == {DownloadJobStatus.PAUSED}
    assert (tmp_path / "m" / "one.bin.downloading").exists()

    service.resume_job(job)
    service.wait_for_job(job, timeout=30)
    assert job.complete
    assert (tmp_path / "m" / "one.bin").read_bytes() == one
    assert (tmp_path / "m" / "two.bin").read_bytes() == two
    for name in ("one.bin", "two.bin"):
        ranges = _range_of(origin, f"/files/{name}")
        assert ranges[0] is None and ranges[-1] is not None


def test_retry_a_failed_job_resumes_its_partial_and_completes(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    events = Events()
    settings = Settings(max_retries=0)
    service = make_service(max_parallel_dl=1, event_bus=events, settings=settings)
    data = os.urandom(1 * MiB)
    origin.add("drop.bin", data)
    job = service.download(origin.url("/files/drop.bin?drop=400000"), tmp_path)
    service.wait_for_job(job, timeout=10)
    assert job.errored and not job.cancelled
    with pytest.raises(InvalidTransitionError, match="cannot resume"):
        service.resume_job(job)

    retried = service.retry_job(job)
    assert retried is job and not job.in_terminal_state
    service.wait_for_job(job, timeout=10)
    assert job.complete and job.error_type is None
    assert sha256(job.download_path) == hashlib.sha256(data).hexdigest()
    ranges = _range_of(origin, "/files/drop.bin")
    assert ranges[0] is None and ranges[-1] is not None  # the retry resumed the partial
    order = events.of(job.id)
    assert order.index("download_error") < order.index("download_resumed")
    assert order[-1] == "download_complete"


def test_retry_a_job_that_failed_on_an_error_answer(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("flaky.bin", b"f" * 5000)
    job = service.download(origin.url("/files/flaky.bin?fail=1&code=404"), tmp_path)
    assert service.wait_for_job(job, timeout=10).errored
    service.retry_job(job.id)
    assert service.wait_for_job(job, timeout=10).complete
    assert (tmp_path / "flaky.bin").read_bytes() == b"f" * 5000


def test_retry_a_cancelled_job_starts_over(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    origin.add("big.bin", data)
    job = service.download(origin.url("/files/big.bin?rate=500000"), tmp_path)
    wait_until(lambda: job.bytes > 0)
    service.cancel_job(job)
    service.wait_for_job(job, timeout=10)
    assert job.cancelled and not (tmp_path / "big.bin.downloading").exists()

    service.retry_job(job)
    assert not job.cancelled and job.status is not DownloadJobStatus.ERROR
    service.wait_for_job(job, timeout=30)
    assert job.complete and not job.cancelled
    assert sha256(job.download_path) == hashlib.sha256(data).hexdigest()
    assert _range_of(origin, "/files/big.bin") == [None, None]  # the cancel took the partial


def test_a_new_priority_reorders_waiting_jobs(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    events = Events()
    service = make_service(max_parallel_dl=1, event_bus=events)
    for name in ("held", "a", "b", "c"):
        origin.add(f"{name}.bin", name.encode() * 100)
    holder = service.download(origin.url("/files/held.bin?hold=slot"), tmp_path)
    wait_until(lambda: len(origin.gets("/files/held.bin")) == 1)
    a, b, c = (service.download(origin.url(f"/files/{n}.bin"), tmp_path) for n in "abc")
    assert service.set_priority(c, 0).priority == 0  # to the front
    assert service.set_priority(a, 50).priority == 50  # behind b
    service.set_priority(b, 12)  # the same level: it keeps its place
    origin.release("slot")
    for job in (holder, a, b, c):
        assert service.wait_for_job(job, timeout=15).complete
    assert events.started() == [holder.id, c.id, b.id, a.id]
    assert [len(origin.gets(f"/files/{n}.bin")) for n in "abc"] == [1, 1, 1]
    with pytest.raises(InvalidTransitionError, match="cannot priority"):
        service.set_priority(a, 1)


def test_invalid_transitions_are_refused_with_a_typed_error(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(max_parallel_dl=1)
    origin.add("done.bin", b"d" * 100)
    origin.add("slow.bin", os.urandom(MiB))
    done = service.wait_for_job(service.download(origin.url("/files/done.bin"), tmp_path), 10)
    for control in (service.pause_job, service.resume_job, service.retry_job):
        with pytest.raises(InvalidTransitionError) as refused:
            control(done)
        assert refused.value.job_id == done.id and refused.value.state == "completed"
    running = service.download(origin.url("/files/slow.bin?rate=500000"), tmp_path)
    wait_until(lambda: running.bytes > 0)
    with pytest.raises(InvalidTransitionError, match="it has not ended"):
        service.retry_job(running)
    assert service.resume_job(running).status is DownloadJobStatus.RUNNING  # nothing to do
    service.cancel_job(running)
    service.wait_for_job(running, timeout=10)
    with pytest.raises(InvalidTransitionError, match="it has ended"):
        service.pause_job(running)
    with pytest.raises(KeyError):
        service.pause_job(10**12)


def test_retry_a_failed_multifile_job_runs_only_the_parts_that_did_not_complete(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(max_parallel_dl=3)
    files = {"ok.bin": os.urandom(1000), "bad.bin": os.urandom(2000), "slow.bin": os.urandom(MiB)}
    for name, data in files.items():
        origin.add(name, data)
    routes = {"ok.bin": "", "bad.bin": "?hold=bad&fail=1&code=404", "slow.bin": "?rate=300000"}
    parts = [
        RemoteModelFile(url=origin.url(f"/files/{name}{query}"), path=Path("r") / name)
        for name, query in routes.items()
    ]
    job = service.multifile_download(parts, tmp_path)
    ok, bad, slow = job.download_parts
    wait_until(lambda: ok.complete and slow.bytes > 0)
    origin.release("bad")
    service.wait_for_job(job, timeout=20)
    service.wait_for_job(slow, timeout=20)  # its worker stops it within a second
    assert job.errored and not job.cancelled and bad.errored and slow.cancelled
    with pytest.raises(InvalidTransitionError, match=f"retry job {job.id}"):
        service.retry_job(bad)

    service.retry_job(job)
    assert job.status is not DownloadJobStatus.ERROR and ok.complete
    service.wait_for_job(job, timeout=30)
    assert job.complete and job.error_type is None
    assert {part.status for part in job.download_parts} == {DownloadJobStatus.COMPLETED}
    for name, data in files.items():
        assert (tmp_path / "r" / name).read_bytes() == data
    assert len(origin.gets("/files/ok.bin")) == 1  # the part that completed stayed as it was
    assert len(origin.gets("/files/bad.bin")) == 2


def test_a_multifile_jobs_priority_and_pause_go_to_its_parts(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    service = make_service(start_worker=False)  # nothing runs: every job stays waiting
    parts = [
        RemoteModelFile(url=origin.url(f"/files/{n}.bin"), path=Path(f"{n}.bin")) for n in "xy"
    ]
    job = service.multifile_download(parts, tmp_path)
    service.set_priority(job, 3)
    assert job.priority == 3 and [part.priority for part in job.download_parts] == [3, 3]
    assert [p.priority for p in service.id_to_job(job.id).download_parts] == [3, 3]
    service.pause_job(job)
    assert {part.status for part in job.download_parts} == {DownloadJobStatus.PAUSED}
    service.resume_job(job)
    assert job.status is DownloadJobStatus.WAITING
    assert {part.status for part in job.download_parts} == {DownloadJobStatus.WAITING}


def test_a_retry_is_refused_when_another_job_took_its_path_meanwhile(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("model.bin", b"m" * 3000)
    target = tmp_path / "model.bin"
    failed = service.download(origin.url("/files/model.bin?fail=1&code=404"), target)
    assert service.wait_for_job(failed, timeout=10).errored
    holder = service.download(origin.url("/files/model.bin?hold=taken"), target)
    wait_until(lambda: len(origin.gets("/files/model.bin")) == 2)  # it runs, holding the path
    with pytest.raises(InvalidTransitionError, match=f"job {holder.id} holds its path"):
        service.retry_job(failed)
    assert service.id_to_job(failed.id).errored and failed.errored  # still over, as it was
    service.wait_for_job(failed, timeout=1)  # `wait_for_job` still sees its end
    origin.release("taken")
    assert service.wait_for_job(holder, timeout=10).complete
    service.retry_job(failed.id)  # the holder is done: the path is free again
    assert service.wait_for_job(failed, timeout=10).complete
