"""The right bytes under the right name: destinations, partial files and versions owned by
their job. Each test is one way main used to save a file that was not the one its job asked for.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from downloader import DownloadJobStatus, DownloadQueueService, RemoteModelFile
from downloader.engine.filestate import PartialState, discard_partial, partial_path, state_path
from downloader.engine.naming import ENGINE_SUFFIXES, safe_filename
from downloader.engine.transfer import (
    ChecksumMismatchError,
    IncompleteDownloadError,
    SizeMismatchError,
    TransferHooks,
    TransferRequest,
    fetch,
)
from downloader.store.reservations import DestinationTakenError
from tests.origin import Origin
from tests.test_queue import sha256, wait_until

MiB = 1 << 20
KiB = 1 << 10


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWNLOADER_RETRY_BACKOFF", "0.05")
    monkeypatch.setenv("DOWNLOADER_MAX_RETRIES", "2")


def engine_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.downloading*"))


# 1. A server-chosen name that is an engine file --------------------------------------------


def test_a_hostile_name_cannot_write_into_another_jobs_partial_file(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    victim = os.urandom(2 * MiB)
    digest = origin.add("model.bin", victim)
    attacker = origin.add("evil", os.urandom(300 * KiB))
    job = service.download(origin.url("/files/model.bin?rate=2000000"), tmp_path, sha256=digest)
    wait_until(lambda: job.bytes > 0)
    hostile = service.download(origin.url("/cd/evil?filename=model.bin.downloading"), tmp_path)
    service.wait_for_job(hostile, timeout=20)
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED
    assert sha256(tmp_path / "model.bin") == digest
    assert hostile.status == DownloadJobStatus.COMPLETED
    assert hostile.download_path == tmp_path / "model.bin.downloading_"
    assert sha256(hostile.download_path) == attacker
    assert engine_leftovers(tmp_path) == ["model.bin.downloading_"]


@pytest.mark.parametrize(
    "path", ["m/a.downloading", "m/a.bin.downloading.state", "a.DOWNLOADING.state.tmp"]
)
def test_a_part_path_that_is_an_engine_file_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="partial files"):
        RemoteModelFile(url="http://example.com/a", path=path)


# 2. The seed's loop into a directory that does not exist yet --------------------------------


def test_the_seed_loop_into_a_missing_directory_gives_one_file_per_url(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    digests = {name: origin.add(name, os.urandom(10 * KiB)) for name in ("a.bin", "b.bin")}
    downloads = tmp_path / "downloads"
    jobs = [
        service.download(source=origin.url(f"/files/{name}"), dest=f"{downloads}/")
        for name in digests
    ]
    for job in jobs:
        service.wait_for_job(job, timeout=20)
    assert {job.status for job in jobs} == {DownloadJobStatus.COMPLETED}
    assert {p.name: sha256(p) for p in downloads.iterdir()} == digests


def test_two_jobs_for_one_missing_file_path_the_second_is_refused_at_enqueue(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    client = make_service(start_worker=False)  # nothing runs: both are unfinished
    origin.add("a.bin", os.urandom(KiB))
    origin.add("b.bin", os.urandom(KiB))
    first = client.download(origin.url("/files/a.bin"), tmp_path / "downloads.bin")
    with pytest.raises(DestinationTakenError, match=f"job {first.id} is already downloading"):
        client.download(origin.url("/files/b.bin"), tmp_path / "downloads.bin")
    with pytest.raises(ValueError, match="end dest with a path separator"):
        client.download(origin.url("/files/b.bin"), str(tmp_path / "downloads.bin"))
    with pytest.raises(DestinationTakenError):  # a part may not take it either
        client.multifile_download(
            [RemoteModelFile(url=origin.url("/files/b.bin"), path="downloads.bin")], tmp_path
        )
    client.cancel_job(first)  # once it ends, the path is free again
    again = client.download(origin.url("/files/b.bin"), tmp_path / "downloads.bin")
    assert again.id != first.id
    assert len(client.list_jobs()) == 2  # the refused ones left nothing behind


def test_a_relative_dest_is_the_callers_and_is_owned_under_its_absolute_path(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker runs in another directory, or on another machine: a relative `dest` means the
    caller's directory, and so does its reservation, whichever way the path is spelt."""
    client = make_service(start_worker=False)
    origin.add("a.bin", os.urandom(KiB))
    monkeypatch.chdir(tmp_path)
    first = client.download(origin.url("/files/a.bin"), "models/a.bin")
    assert first.dest == tmp_path / "models" / "a.bin"
    assert client.app.store.record(first.id).dest == tmp_path / "models" / "a.bin"
    with pytest.raises(DestinationTakenError, match=f"job {first.id}"):
        client.download(origin.url("/files/a.bin"), tmp_path / "models" / "a.bin")
    parts = client.multifile_download(
        [RemoteModelFile(url=origin.url("/files/a.bin"), path="b")], "m"
    )
    assert parts.dest == tmp_path / "m" and parts.download_parts[0].dest == tmp_path / "m" / "b"


# 3. Two URLs with one name --------------------------------------------------------------------


def test_two_urls_with_one_name_get_two_files_at_once_and_one_after_the_other(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    a = origin.add("a", os.urandom(MiB))
    b = origin.add("b", os.urandom(MiB))
    c = origin.add("c", os.urandom(KiB))
    slow = "rate=2000000&filename=model.bin"
    together = [service.download(origin.url(f"/cd/{name}?{slow}"), tmp_path) for name in ("a", "b")]
    for job in together:
        service.wait_for_job(job, timeout=20)
    later = service.download(origin.url("/cd/c?filename=model.bin"), tmp_path)
    service.wait_for_job(later, timeout=20)
    paths = [job.download_path for job in (*together, later)]
    assert len(set(paths)) == 3
    assert {p.name for p in paths} == {"model.bin", "model (1).bin", "model (2).bin"}
    assert [sha256(p) for p in paths] == [a, b, c]


# 4. A stale final file of the same size --------------------------------------------------------


def test_a_final_file_is_reused_only_while_the_server_vouches_for_it(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("m.bin", os.urandom(MiB))
    first = service.download(origin.url("/files/m.bin"), tmp_path / "m.bin")
    service.wait_for_job(first, timeout=20)
    same = service.download(origin.url("/files/m.bin"), tmp_path / "m.bin")
    service.wait_for_job(same, timeout=20)
    assert same.status == DownloadJobStatus.COMPLETED and same.bytes == MiB
    asked = origin.gets("/files/m.bin")[-1].headers
    assert asked.get("If-None-Match")  # a conditional request answered 304

    new = origin.add("m.bin", os.urandom(MiB))  # a new upload of the same size
    updated = service.download(origin.url("/files/m.bin"), tmp_path / "m.bin")
    service.wait_for_job(updated, timeout=20)
    assert updated.status == DownloadJobStatus.COMPLETED
    assert sha256(tmp_path / "m.bin") == new
    assert engine_leftovers(tmp_path) == []


def test_a_file_of_the_right_size_but_unknown_origin_is_fetched_again_unless_its_hash_matches(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    data = os.urandom(64 * KiB)
    digest = origin.add("u.bin", data)
    (tmp_path / "u.bin").write_bytes(os.urandom(64 * KiB))  # not what the URL serves
    job = service.download(origin.url("/files/u.bin"), tmp_path / "u.bin")
    service.wait_for_job(job, timeout=20)
    assert sha256(tmp_path / "u.bin") == digest
    (tmp_path / "v.bin").write_bytes(data)  # exactly the bytes asked for, said by the hash
    before = len(origin.gets("/files/u.bin"))
    kept = service.download(origin.url("/files/u.bin"), tmp_path / "v.bin", sha256=digest)
    service.wait_for_job(kept, timeout=20)
    assert kept.status == DownloadJobStatus.COMPLETED and sha256(tmp_path / "v.bin") == digest
    assert len(origin.gets("/files/u.bin")) == before + 1  # one answer read for its headers


def test_a_current_file_is_not_reused_for_a_caller_who_asked_for_other_bytes(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    """The server's 304 vouches for its version; only the caller's hash says which file the
    caller wants."""
    digest = origin.add("h.bin", os.urandom(64 * KiB))
    first = service.download(origin.url("/files/h.bin"), tmp_path / "h.bin", sha256=digest)
    service.wait_for_job(first, timeout=20)
    assert first.status == DownloadJobStatus.COMPLETED, first.error
    wrong = "0" * 64
    again = service.download(origin.url("/files/h.bin"), tmp_path / "h.bin", sha256=wrong)
    service.wait_for_job(again, timeout=20)
    assert again.status == DownloadJobStatus.ERROR
    assert again.error_type is not None and again.error_type.startswith("ChecksumMismatchError")
    assert "If-None-Match" not in origin.gets("/files/h.bin")[-1].headers
    assert sha256(tmp_path / "h.bin") == digest  # the good file stays
    assert engine_leftovers(tmp_path) == []


# 5. A stale partial file of another URL ---------------------------------------------------------


def test_a_partial_file_of_another_url_is_not_resumed(
    quick_retries: None, service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("x.bin", os.urandom(MiB))
    other = origin.add("other", os.urandom(MiB))
    failed = service.download(origin.url("/files/x.bin?drop=500000&failafter=1"), tmp_path)
    service.wait_for_job(failed, timeout=20)
    assert failed.status == DownloadJobStatus.ERROR
    kept = partial_path(tmp_path / "x.bin")
    assert kept.stat().st_size == 500000  # kept for a resume of its own URL
    job = service.download(origin.url("/cd/other?filename=x.bin"), tmp_path)
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED
    assert sha256(job.download_path) == other
    assert origin.gets("/cd/other")[-1].headers.get("Range") is None


def test_a_partial_file_with_no_recorded_source_starts_over(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    digest = origin.add("r.bin", data)
    (tmp_path / "r.bin.downloading").write_bytes(os.urandom(MiB))  # someone else's bytes
    job = service.download(origin.url("/files/r.bin"), tmp_path / "r.bin")
    service.wait_for_job(job, timeout=20)
    assert sha256(job.download_path) == digest
    assert origin.gets("/files/r.bin")[-1].headers.get("Range") is None


def test_a_job_that_resumes_another_jobs_partial_file_owns_it_from_then_on(
    origin: Origin, tmp_path: Path
) -> None:
    """A stopped `get` run again resumes the partial its earlier job began: the resuming job
    must own it, or its own cancel could not remove it (`discard_partial` checks the owner)."""
    origin.add("o.bin", os.urandom(MiB))
    url, path = origin.url("/files/o.bin?drop=300000"), tmp_path / "o.bin"
    with pytest.raises(requests.RequestException):  # the connection drops: the partial stays
        fetch(TransferRequest(url=url, dest=path, owner=3))
    state = PartialState.load(state_path(partial_path(path)))
    assert state is not None and state.owner == 3

    def stop(current: int, total: int) -> None:
        raise RuntimeError("stopped after the first resumed bytes")

    with pytest.raises(RuntimeError):
        fetch(TransferRequest(url=url, dest=path, owner=7), hooks=TransferHooks(progress=stop))
    assert origin.gets("/files/o.bin")[-1].headers.get("Range") == "bytes=300000-"
    state = PartialState.load(state_path(partial_path(path)))
    assert state is not None and state.owner == 7
    assert not discard_partial(path, 3) and discard_partial(path, 7)
    assert engine_leftovers(tmp_path) == []


# 6. A version that changes between a dropped connection and its resume -------------------------


def test_a_resume_answered_with_another_version_starts_over_one_connection(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB)
    origin.add("v.bin", old)
    origin.versions["v.bin"] = [old, new]
    job = service.download(origin.url("/files/v.bin?drop=700000&ignoreifrange=1"), tmp_path)
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED
    assert sha256(job.download_path) == sha256_of(new)
    gets = origin.gets("/files/v.bin")
    assert gets[1].headers.get("Range") == "bytes=700000-" and gets[1].headers.get("If-Range")
    assert gets[2].headers.get("Range") is None  # started over instead of splicing


def test_segments_answered_with_other_versions_never_share_a_file(
    origin: Origin, tmp_path: Path
) -> None:
    versions = [os.urandom(4 * MiB) for _ in range(5)]
    origin.add("s.bin", versions[0])
    origin.versions["s.bin"] = versions  # the probe, then one version per segment
    request = TransferRequest(
        url=origin.url("/files/s.bin?ignoreifrange=1"),
        dest=tmp_path,
        segments=4,
        segment_threshold=MiB,
    )
    with pytest.raises(IncompleteDownloadError, match="changed"):
        fetch(request)
    assert not (tmp_path / "s.bin").exists()
    assert PartialState.load(state_path(partial_path(tmp_path / "s.bin"))) is None
    # The server settles on its last version (how many versions the failed attempt used up
    # depends on how many segments had asked before the mismatch stopped the others).
    origin.versions["s.bin"] = [versions[-1]]
    result = fetch(request)
    assert sha256(result.download_path) == sha256_of(versions[-1])


# 7. Content-Encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["", "&nolength=1"])
def test_a_gzip_answer_is_saved_as_sent(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, length: str
) -> None:
    data = b"A" * (4 * MiB)  # compresses to a few KiB: decoding it would blow up on disk
    origin.add("z.txt", data)
    job = service.download(origin.url(f"/gzip/z.txt?{length}"), tmp_path)
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED
    saved = job.download_path.read_bytes()
    assert saved == gzip.compress(data, mtime=0) and len(saved) < 64 * KiB
    assert job.total_bytes == len(saved)


# 8. A body longer than announced ---------------------------------------------------------------


def test_a_body_longer_than_its_content_length_is_an_error(
    quick_retries: None, service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("long.bin", os.urandom(100 * KiB))
    job = service.download(origin.url("/files/long.bin?extra=100"), tmp_path)
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.ERROR
    assert job.error_type is not None and job.error_type.startswith("OverlongBodyError(")
    assert "more than the 102400 bytes" in job.error_type
    assert job.attempts == 3  # retried as the others, then given up
    assert not (tmp_path / "long.bin").exists()
    assert not partial_path(tmp_path / "long.bin").exists() or (
        partial_path(tmp_path / "long.bin").stat().st_size == 0
    )


@pytest.mark.parametrize("size", [50 * KiB, 150 * KiB])
def test_a_body_of_unknown_length_that_is_not_the_size_asked_for_keeps_nothing(
    origin: Origin, tmp_path: Path, size: int
) -> None:
    """No Content-Length: the caller's `size` bounds the body, and bytes of a body of
    another size are not kept to be resumed."""
    origin.add("sized.bin", os.urandom(100 * KiB))
    request = TransferRequest(
        url=origin.url("/files/sized.bin?nolength=1"), dest=tmp_path / "sized.bin", size=size
    )
    with pytest.raises(SizeMismatchError):
        fetch(request)
    partial = partial_path(tmp_path / "sized.bin")
    assert not (tmp_path / "sized.bin").exists() and not state_path(partial).exists()
    assert not partial.exists() or partial.stat().st_size == 0


# 9. Cancellation leaves no partial file ----------------------------------------------------------


def test_cancel_during_a_retry_backoff_removes_the_partial_file(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("b.bin", os.urandom(MiB))
    job = service.download(
        origin.url("/files/b.bin?drop=300000&failafter=1&retryafter=60"), tmp_path
    )
    wait_until(lambda: job.attempts >= 1 and len(origin.gets("/files/b.bin")) >= 2, timeout=20)
    wait_until(lambda: service.id_to_job(job.id).attempts >= 2, timeout=20)  # in its backoff
    assert partial_path(tmp_path / "b.bin").exists()
    service.cancel_job(job)
    service.wait_for_job(job, timeout=10)
    assert job.cancelled
    assert engine_leftovers(tmp_path) == []


def test_cancel_of_a_job_whose_worker_died_removes_its_partial_file(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., object],
    origin: Origin,
    tmp_path: Path,
    redis_url: str,
    namespace: str,
) -> None:
    import signal

    origin.add("d.bin", os.urandom(8 * MiB))
    doomed = spawn_worker("doomed", concurrency=1, env={"DOWNLOADER_LEASE_SECONDS": "2"})
    client = make_service(start_worker=False)
    job = client.download(origin.url("/files/d.bin?rate=1000000"), tmp_path)
    wait_until(lambda: client.id_to_job(job.id).bytes > 0, timeout=20)
    doomed.process.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    doomed.process.wait()  # type: ignore[attr-defined]
    lease = f"{namespace}:job:{job.id}:lease"
    store = redis.Redis.from_url(redis_url)
    wait_until(lambda: not store.exists(lease), timeout=20)  # its lease ran out
    assert partial_path(tmp_path / "d.bin").exists()
    client.cancel_job(job)  # ended by the cancel script: no worker of its own to clean up
    assert client.id_to_job(job.id).cancelled
    spawn_worker("tidier", concurrency=1)
    wait_until(lambda: engine_leftovers(tmp_path) == [], timeout=30)
    assert not (tmp_path / "d.bin").exists()


# 10. Names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("COM1:", "_COM1:"),
        ("CON .txt", "_CON .txt"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("LPT¹", "_LPT¹"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("a\u200bb.bin", "ab.bin"),
    ],
)
def test_device_names_and_invisible_characters(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@pytest.mark.parametrize("length", [244, 250, 255, 300])
def test_long_names_leave_room_for_the_engine_suffixes(
    origin: Origin, tmp_path: Path, length: int
) -> None:
    data = os.urandom(KiB)
    origin.add("long", data)
    name = "n" * (length - len(".safetensors")) + ".safetensors"
    result = fetch(TransferRequest(url=origin.url(f"/cd/long?filename={name}"), dest=tmp_path))
    assert result.download_path.name.endswith(".safetensors")
    assert result.download_path.read_bytes() == data
    longest = result.download_path.name + ".downloading.state.tmp (9999)"
    assert len(longest.encode()) <= 255


@pytest.mark.parametrize("suffix", [".downloading", ".downloading.state", ".Downloading.STATE"])
def test_a_name_shortened_to_fit_never_ends_like_an_engine_file(suffix: str) -> None:
    """An overlong last extension is dropped when a name is shortened: what remains must not
    be a partial file's name (or its state's), which another job would then write into."""
    for stem in range(150, 240):
        name = safe_filename("y" * stem + suffix + "." + "z" * 40)
        assert name is not None and not name.lower().endswith(ENGINE_SUFFIXES), name
        assert len((name + ".downloading.state.tmp (9999)").encode()) <= 255


# The property: whatever mix of jobs shares a directory ----------------------------------------

NAMES = st.sampled_from(
    [
        "model.bin",
        "model.bin.downloading",
        "CON",
        "a b.txt",
        "x",
        "y" * 215 + ".downloading." + "z" * 40,  # an engine name once shortened to fit
    ]
)
JOB = st.tuples(NAMES, st.booleans(), st.integers(1, 64 * KiB))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(jobs=st.lists(JOB, min_size=2, max_size=6), running=st.booleans())
@example(
    jobs=[("model.bin", True, 1), ("model.bin", True, 2), ("model.bin", False, 3)], running=True
)
def test_any_mix_of_jobs_in_one_directory_leaves_each_its_own_bytes(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path_factory: pytest.TempPathFactory,
    jobs: list[tuple[str, bool, int]],
    running: bool,
) -> None:
    """`running`: jobs arrive while the worker runs the earlier ones (slowed, so they
    overlap); otherwise every job is queued before any runs, all contending at once."""
    dest = tmp_path_factory.mktemp("mix")
    with ExitStack() as services:  # closed with each example, not with the whole test
        client = services.enter_context(make_service(start_worker=False))
        if running:
            services.enter_context(make_service(max_parallel_dl=4))
        queued = []
        for index, (name, explicit, size) in enumerate(jobs):
            source = f"j{index}-{os.urandom(4).hex()}"
            digest = origin.add(source, os.urandom(size))
            url = origin.url(f"/cd/{source}?filename={name}&rate=1000000")
            try:
                # An explicit name is given in advance: a missing `dest / "x"` alone would
                # name a directory (no suffix), as the seed's `dest='/tmp/downloads'` does.
                named = dest / name if explicit else None
                job = client.download(url, dest, download_path=named)
            except ValueError:  # refused at enqueue (taken, an engine or too long a name)
                continue
            queued.append((job, digest, explicit))
        if not running:
            services.enter_context(make_service(max_parallel_dl=4))
        for job, _, _ in queued:
            client.wait_for_job(job, timeout=30)
    failed = [(job.download_path, job.error_type) for job, _, _ in queued if not job.complete]
    assert failed == []
    by_path: dict[Path, list[tuple[int, str, bool]]] = {}
    for job, digest, explicit in queued:
        by_path.setdefault(job.download_path, []).append((job.id, digest, explicit))
    for path, owners in by_path.items():
        # A path is one unfinished job's at a time: jobs share it only one after the other (so
        # the last queued wrote last), and only a later job that names the path itself may
        # replace a finished file; a name the server chooses never does.
        assert len(owners) == 1 or (running and all(e for _, _, e in owners[1:])), owners
        assert sha256(path) == max(owners)[1], owners
    assert all(name.endswith("_") for name in engine_leftovers(dest))


def sha256_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_progress_hooks_and_checks_hear_a_stalled_origin(origin: Origin, tmp_path: Path) -> None:
    """The watchdog stops a transfer that nothing arrives on, within its window."""
    origin.add("stall.bin", os.urandom(MiB))
    checks: list[int] = []

    def check(current: int, total: int) -> None:
        checks.append(current)

    request = TransferRequest(
        url=origin.url("/files/stall.bin?stall=1000"),
        dest=tmp_path,
        lowest_speed=1000,
        speed_window=1.0,
    )
    with pytest.raises(Exception, match="below 1000 bytes/s"):
        fetch(request, hooks=TransferHooks(check=check))
    assert checks


# A digest the server announces is checked like the caller's ------------------------------------


@pytest.mark.parametrize("kind", ["repr", "legacy", "amz"])
def test_a_digest_the_server_announces_is_verified(
    origin: Origin, tmp_path: Path, kind: str
) -> None:
    data = os.urandom(300 * KiB)
    origin.add("d.bin", data)
    good = fetch(TransferRequest(url=origin.url(f"/files/d.bin?digest={kind}"), dest=tmp_path))
    assert good.download_path.read_bytes() == data
    with pytest.raises(ChecksumMismatchError, match="the server announced"):
        fetch(
            TransferRequest(
                url=origin.url(f"/files/d.bin?digest={kind}&bad=1"), dest=tmp_path / "x"
            )
        )
    assert not (tmp_path / "x").exists() and not partial_path(tmp_path / "x").exists()


def test_an_announced_digest_is_checked_across_a_resume(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("r.bin", os.urandom(2 * MiB))
    bad = service.download(origin.url("/files/r.bin?digest=repr&bad=1&drop=600000"), tmp_path)
    service.wait_for_job(bad, timeout=20)
    assert bad.status == DownloadJobStatus.ERROR
    assert bad.error_type is not None and bad.error_type.startswith("ChecksumMismatchError")
    assert origin.gets("/files/r.bin")[-1].headers.get("Range") == "bytes=600000-"
    assert engine_leftovers(tmp_path) == [] and not (tmp_path / "r.bin").exists()
