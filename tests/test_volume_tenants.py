"""Other tenants of a shared download volume: what anyone who can create entries in it may
plant (symbolic links at the names the engine uses, a link for a directory on the way) must
never make a worker write outside, and a file changed in place after it was stamped must
never pass for the file its job asked for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from downloader import DownloadJobStatus, DownloadQueueService, RemoteModelFile
from downloader.engine.destdir import DestDir
from downloader.engine.errors import DirectoryRemovedError
from downloader.engine.filestate import SEAL_SLACK_NS
from downloader.engine.retry import is_retriable
from tests.origin import Origin
from tests.test_queue import sha256, wait_until

KiB = 1 << 10
VICTIM = b"# a file the worker's user may write, outside every download directory\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory no job names, holding a file a planted link points to."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "victim.conf").write_bytes(VICTIM)
    return directory


def untouched(outside: Path) -> None:
    """Nothing outside changed: the victim's bytes, and no new entry."""
    assert (outside / "victim.conf").read_bytes() == VICTIM
    assert sorted(p.name for p in outside.iterdir()) == ["victim.conf"]


def refused(job: object, link: Path) -> None:
    """The job failed, naming the link it refused to follow."""
    assert job.status == DownloadJobStatus.ERROR, job.error  # type: ignore[attr-defined]
    error_type = job.error_type or ""  # type: ignore[attr-defined]
    assert error_type.startswith("UnsafeDestinationError("), error_type
    assert str(link) in error_type and "symbolic link" in error_type, error_type
    assert "nothing was written" in error_type, error_type


# 1. Links planted where the engine writes ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".downloading", ".downloading.state", ".downloading.state.tmp"])
@pytest.mark.parametrize("into", ["directory", "file path"])
def test_a_link_planted_at_an_engine_file_is_refused_and_nothing_outside_changes(
    service: DownloadQueueService,
    origin: Origin,
    tmp_path: Path,
    outside: Path,
    suffix: str,
    into: str,
) -> None:
    """`ln -s /outside/victim.conf model.bin.downloading` in the download directory, then a job
    for `model.bin` there: the worker used to write the download through the link."""
    origin.add("model.bin", os.urandom(5000))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    link = downloads / f"model.bin{suffix}"
    link.symlink_to(outside / "victim.conf")
    dest = f"{downloads}/" if into == "directory" else downloads / "model.bin"
    job = service.download(origin.url("/files/model.bin"), dest)
    service.wait_for_job(job, timeout=20)
    refused(job, link)
    untouched(outside)
    assert link.is_symlink() and link.readlink() == outside / "victim.conf"
    assert not (downloads / "model.bin").exists()


@pytest.mark.parametrize("plant", ["hard link at the partial", "FIFO at the state"])
def test_what_is_not_a_plain_file_of_its_own_is_refused_too(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, outside: Path, plant: str
) -> None:
    """A second name for someone else's file where the partial goes (writing it would write
    theirs); a FIFO where the state goes (reading it would wait for ever)."""
    origin.add("model.bin", os.urandom(5000))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    if plant.startswith("hard link"):
        planted = downloads / "model.bin.downloading"
        os.link(outside / "victim.conf", planted)
        said = "has 2 names (hard links)"
    else:
        planted = downloads / "model.bin.downloading.state"
        os.mkfifo(planted)
        said = "should be a file but is a FIFO"
    job = service.download(origin.url("/files/model.bin"), downloads / "model.bin")
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.ERROR, job.error
    assert (job.error_type or "").startswith("UnsafeDestinationError("), job.error_type
    assert f"{planted} {said}" in (job.error_type or ""), job.error_type
    untouched(outside)
    assert not (downloads / "model.bin").exists()


def test_a_link_at_the_final_name_is_refused_for_a_file_path(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, outside: Path
) -> None:
    """A link where the file goes is not replaced: it may be someone else's, or the user's own
    (a file kept on another disk); the job says so instead."""
    origin.add("model.bin", os.urandom(5000))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    link = downloads / "model.bin"
    link.symlink_to(outside / "victim.conf")
    job = service.download(origin.url("/files/model.bin"), link)
    service.wait_for_job(job, timeout=20)
    refused(job, link)
    untouched(outside)
    assert link.is_symlink() and link.readlink() == outside / "victim.conf"
    assert sorted(p.name for p in downloads.iterdir()) == ["model.bin"]


def test_a_link_at_a_server_chosen_name_is_left_alone_and_the_file_named_apart(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, outside: Path
) -> None:
    digest = origin.add("model.bin", os.urandom(5000))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    link = downloads / "model.bin"
    link.symlink_to(outside / "victim.conf")
    job = service.download(origin.url("/files/model.bin"), f"{downloads}/")
    service.wait_for_job(job, timeout=20)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert job.download_path == downloads / "model (1).bin"
    assert sha256(job.download_path) == digest
    untouched(outside)
    assert link.is_symlink()


def test_a_link_for_a_part_directory_is_refused(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, outside: Path
) -> None:
    """A multi-file part `sub/model.bin` whose `sub` is a link out of the job's directory."""
    origin.add("model.bin", os.urandom(5000))
    origin.add("other.bin", os.urandom(5000))
    dest = tmp_path / "repo"
    dest.mkdir()
    link = dest / "sub"
    link.symlink_to(outside)
    multi = service.multifile_download(
        [
            RemoteModelFile(url=origin.url("/files/model.bin"), path="sub/model.bin"),
            RemoteModelFile(url=origin.url("/files/other.bin"), path="deep/er/other.bin"),
        ],
        dest,
    )
    service.wait_for_job(multi, timeout=30)
    assert multi.status == DownloadJobStatus.ERROR
    part = multi.download_parts[0]
    wait_until(lambda: part.status == DownloadJobStatus.ERROR, timeout=20)
    refused(part, link)
    untouched(outside)
    assert link.is_symlink() and not (dest / "sub" / "model.bin.downloading").exists()


def test_a_directory_that_became_a_link_below_the_download_root_is_refused(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A REST caller's `dest` was checked inside the root when it was queued; another tenant
    then swaps a directory on the way for a link. The worker walks down from the root."""
    root = tmp_path / "root"
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(root))
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")  # the origin is loopback
    client = make_service(start_worker=False)
    origin.add("model.bin", os.urandom(5000))
    (root / "tenant" / "models").mkdir(parents=True)
    job = client.download(origin.url("/files/model.bin"), f"{root}/tenant/models/", untrusted=True)
    (root / "tenant" / "models").rmdir()
    (root / "tenant").rmdir()
    (root / "tenant").symlink_to(tmp_path / "outside")
    (outside / "models").mkdir()
    make_service(max_parallel_dl=1)  # a worker comes up and takes the job
    client.wait_for_job(job, timeout=20)
    refused(job, root / "tenant")
    assert (outside / "victim.conf").read_bytes() == VICTIM
    assert list((outside / "models").iterdir()) == []


# 2. A stamped file changed in place ------------------------------------------------------------


def overwrite_in_place(path: Path, reset_mtime: bool) -> None:
    """What `dd conv=notrunc` (or a torn write) does: 4 KiB at offset 0, same size; with
    `reset_mtime`, the writer then puts the modification time back."""
    before = path.stat()
    # A change right after the stamp could share its ctime window (see filestate): this one
    # comes later, as every change by another program does.
    wait_until(lambda: time.time_ns() - path.stat().st_ctime_ns > 2 * SEAL_SLACK_NS)
    with open(path, "r+b") as handle:
        handle.write(os.urandom(4 * KiB))
    if reset_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert path.stat().st_size == before.st_size


@pytest.mark.parametrize("reset_mtime", [False, True], ids=["written", "written, mtime reset"])
def test_a_sha256_job_never_completes_on_a_stamped_file_changed_in_place(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, reset_mtime: bool
) -> None:
    digest = origin.add("m.bin", os.urandom(256 * KiB))
    path = tmp_path / "m.bin"
    first = service.download(origin.url("/files/m.bin"), path, sha256=digest)
    service.wait_for_job(first, timeout=20)
    assert first.status == DownloadJobStatus.COMPLETED, first.error
    # An untouched stamped file is still reused on the server's word, without a body.
    same = service.download(origin.url("/files/m.bin"), path, sha256=digest)
    service.wait_for_job(same, timeout=20)
    assert same.status == DownloadJobStatus.COMPLETED, same.error
    assert origin.gets("/files/m.bin")[-1].headers.get("If-None-Match")
    served = origin.served.get("/files/m.bin", 0)

    overwrite_in_place(path, reset_mtime)
    again = service.download(origin.url("/files/m.bin"), path, sha256=digest)
    service.wait_for_job(again, timeout=20)
    assert again.status == DownloadJobStatus.COMPLETED, again.error
    assert sha256(path) == digest
    assert "If-None-Match" not in origin.gets("/files/m.bin")[-1].headers
    assert origin.served.get("/files/m.bin", 0) == served + 256 * KiB  # fetched again


@pytest.mark.parametrize("reset_mtime", [False, True], ids=["written", "written, mtime reset"])
def test_a_stamped_file_changed_in_place_is_not_current_without_a_sha256(
    service: DownloadQueueService, origin: Origin, tmp_path: Path, reset_mtime: bool
) -> None:
    digest = origin.add("n.bin", os.urandom(256 * KiB))
    path = tmp_path / "n.bin"
    first = service.download(origin.url("/files/n.bin"), path)
    service.wait_for_job(first, timeout=20)
    assert first.status == DownloadJobStatus.COMPLETED, first.error

    overwrite_in_place(path, reset_mtime)
    again = service.download(origin.url("/files/n.bin"), path)
    service.wait_for_job(again, timeout=20)
    assert again.status == DownloadJobStatus.COMPLETED, again.error
    assert sha256(path) == digest
    assert "If-None-Match" not in origin.gets("/files/n.bin")[-1].headers


def test_a_directory_removed_before_a_file_is_made_in_it_is_a_retriable_error(
    tmp_path: Path,
) -> None:
    # Another job tidies its empty directories away (its part failed) while this one has
    # reached the directory and is about to make its partial file there: the next try makes
    # the directory again, instead of failing the job with a bare FileNotFoundError.
    with DestDir.reach(tmp_path / "m", tmp_path) as folder:
        (tmp_path / "m").rmdir()
        with pytest.raises(DirectoryRemovedError) as removed:
            folder.open("slow.bin.downloading", os.O_CREAT | os.O_WRONLY)
        assert is_retriable(removed.value)
    with DestDir.reach(tmp_path / "m", tmp_path) as folder:
        os.close(folder.open("slow.bin.downloading", os.O_CREAT | os.O_WRONLY))
    assert (tmp_path / "m" / "slow.bin.downloading").is_file()
