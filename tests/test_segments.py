"""Segmented downloads: several range requests into one file, and their resume."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.config import Settings
from downloader.engine.filestate import PartialState, partial_path, state_path
from downloader.engine.transfer import TransferHooks, TransferRequest, fetch
from tests.origin import Origin

MiB = 1 << 20


class Interrupted(Exception):
    pass


def request(origin: Origin, route: str, dest: Path, **extra: object) -> TransferRequest:
    return TransferRequest(
        url=origin.url(route), dest=dest, segments=4, segment_threshold=MiB, **extra
    )


def ranges_seen(origin: Origin, path: str) -> list[str]:
    return sorted(r.headers.get("Range", "") for r in origin.gets(path))


def test_a_large_file_is_fetched_as_segments_into_one_file(origin: Origin, tmp_path: Path) -> None:
    data = os.urandom(8 * MiB + 3)
    digest = origin.add("big.bin", data)
    result = fetch(request(origin, "/files/big.bin", tmp_path, sha256=digest))
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == digest
    assert result.bytes == result.total_bytes == len(data)
    size = -(-len(data) // 4)
    expected = [
        "",
        *(f"bytes={s}-{min(s + size, len(data)) - 1}" for s in range(0, len(data), size)),
    ]
    assert ranges_seen(origin, "/files/big.bin") == sorted(expected)  # one probe, four ranges
    assert not state_path(partial_path(tmp_path / "big.bin")).exists()


def test_small_files_and_servers_without_ranges_use_one_stream(
    origin: Origin, tmp_path: Path
) -> None:
    origin.add("small.bin", os.urandom(MiB // 2))
    origin.add("norange.bin", os.urandom(2 * MiB))
    fetch(request(origin, "/files/small.bin", tmp_path))
    fetch(request(origin, "/files/norange.bin?norange=1", tmp_path))
    assert ranges_seen(origin, "/files/small.bin") == [""]
    assert ranges_seen(origin, "/files/norange.bin") == [""]


def test_an_interrupted_segmented_download_resumes_every_segment(
    origin: Origin, tmp_path: Path
) -> None:
    data = os.urandom(8 * MiB)
    digest = origin.add("resume.bin", data)

    def stop_halfway(current: int, total: int) -> None:
        if current > total // 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fetch(
            request(origin, "/files/resume.bin?rate=8000000", tmp_path, chunk_size=64 * 1024),
            hooks=TransferHooks(progress=stop_halfway),
        )
    partial = partial_path(tmp_path / "resume.bin")
    state = PartialState.load(state_path(partial))
    assert state is not None and state.segments is not None
    assert 0 < state.segmented_done < len(data)
    assert not (tmp_path / "resume.bin").exists()
    before = len(origin.gets("/files/resume.bin"))

    result = fetch(  # the same URL: a partial file only resumes from its own source
        request(
            origin,
            "/files/resume.bin?rate=8000000",
            tmp_path,
            download_path=tmp_path / "resume.bin",
        )
    )
    assert hashlib.sha256((tmp_path / "resume.bin").read_bytes()).hexdigest() == digest
    assert result.resumed_from == state.segmented_done
    resumed = [r.headers.get("Range", "") for r in origin.gets("/files/resume.bin")[before:]]
    starts = sorted(int(r[6:].split("-")[0]) for r in resumed if r)
    segment_starts = [segment.start for segment in state.segments]
    assert starts and all(start not in segment_starts for start in starts if start)  # went on
    assert not state_path(partial).exists()


def test_a_file_that_changed_since_the_plan_starts_over(origin: Origin, tmp_path: Path) -> None:
    origin.add("moving.bin", os.urandom(4 * MiB))

    def stop(current: int, total: int) -> None:
        if current > MiB:
            raise Interrupted

    with pytest.raises(Interrupted):
        fetch(
            request(origin, "/files/moving.bin?rate=8000000", tmp_path, chunk_size=65536),
            hooks=TransferHooks(progress=stop),
        )
    digest = origin.add("moving.bin", os.urandom(4 * MiB))  # a new version, a new ETag
    fetch(
        request(
            origin,
            "/files/moving.bin?rate=8000000",
            tmp_path,
            download_path=tmp_path / "moving.bin",
        )
    )
    assert hashlib.sha256((tmp_path / "moving.bin").read_bytes()).hexdigest() == digest


def test_the_queue_downloads_large_files_in_segments(
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DOWNLOADER_SEGMENTS", "4")
    monkeypatch.setenv("DOWNLOADER_SEGMENT_THRESHOLD", str(MiB))
    service = make_service()
    digest = origin.add("model.safetensors", os.urandom(6 * MiB))
    seen: list[int] = []
    job = service.download(
        origin.url("/files/model.safetensors?rate=6000000"),
        tmp_path,
        sha256=digest,
        on_progress=lambda j: seen.append(j.bytes),
    )
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED and job.bytes == 6 * MiB
    assert len(origin.gets("/files/model.safetensors")) == 5
    assert seen == sorted(seen) and seen[-1] == 6 * MiB


def grown_request(origin: Origin, route: str, dest: Path, **extra: object) -> TransferRequest:
    """Two segments at first, six at most, pieces of at least 256 KiB: a plan that may grow."""
    settings: dict[str, object] = {"segments_max": 6, **extra}
    return TransferRequest(
        url=origin.url(route),
        dest=dest,
        segments=2,
        segment_threshold=MiB,
        chunk_size=64 * 1024,
        **settings,  # type: ignore[arg-type]
    )


def test_a_plan_grows_while_segments_add_throughput_up_to_its_most(
    origin: Origin, tmp_path: Path
) -> None:
    digest = origin.add("grow.bin", os.urandom(16 * MiB))
    result = fetch(grown_request(origin, "/files/grow.bin?rate=1000000", tmp_path, sha256=digest))
    assert hashlib.sha256((tmp_path / "grow.bin").read_bytes()).hexdigest() == digest
    assert result.bytes == 16 * MiB
    # Each connection is capped, so each step adds throughput: more than the two it began
    # with ran at once, and never more than its most.
    assert 2 < origin.peak <= 6, origin.peak
    assert not state_path(partial_path(tmp_path / "grow.bin")).exists()


def test_a_grown_plan_resumes_every_range_and_asks_only_for_missing_bytes(
    origin: Origin, tmp_path: Path
) -> None:
    data = os.urandom(16 * MiB)
    digest = origin.add("regrow.bin", data)
    route = "/files/regrow.bin?rate=1000000"

    def stop_past_half(current: int, total: int) -> None:
        if current > total * 0.6:
            raise Interrupted

    with pytest.raises(Interrupted):
        fetch(grown_request(origin, route, tmp_path), hooks=TransferHooks(progress=stop_past_half))
    state = PartialState.load(state_path(partial_path(tmp_path / "regrow.bin")))
    assert state is not None and state.segments is not None
    assert 2 < len(state.segments) <= 2 * 6 + 1  # it grew, splits saved, finished ones merged
    ends = sorted((s.start, s.end) for s in state.segments)
    assert ends[0][0] == 0 and ends[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in pairwise(ends))  # no gap, no overlap
    with open(partial_path(tmp_path / "regrow.bin"), "rb") as partial:
        for segment in state.segments:  # what the state says is done is the file's bytes
            partial.seek(segment.start)
            assert partial.read(segment.done) == data[segment.start : segment.position]
    before = len(origin.gets("/files/regrow.bin"))

    result = fetch(grown_request(origin, route, tmp_path, download_path=tmp_path / "regrow.bin"))
    assert hashlib.sha256((tmp_path / "regrow.bin").read_bytes()).hexdigest() == digest
    assert result.resumed_from == state.segmented_done
    missing = [(s.position, s.end) for s in state.segments if not s.finished]
    asked = [r.headers.get("Range", "") for r in origin.gets("/files/regrow.bin")[before:]]
    assert asked.count("") == 1  # the probe that finds the plan's version still served
    asked.remove("")
    assert asked
    for spec in asked:
        first, last = (int(n) for n in spec.removeprefix("bytes=").split("-"))
        assert any(start <= first and last < end for start, end in missing), spec


def test_a_fixed_count_never_grows(origin: Origin, tmp_path: Path) -> None:
    digest = origin.add("fixed.bin", os.urandom(8 * MiB))
    fetch(grown_request(origin, "/files/fixed.bin?rate=1000000", tmp_path, segments_max=0))
    assert hashlib.sha256((tmp_path / "fixed.bin").read_bytes()).hexdigest() == digest
    assert origin.peak == 2
    assert len(ranges_seen(origin, "/files/fixed.bin")) == 3  # the probe and two ranges


def test_the_queue_grows_a_plan_by_default_up_to_the_host_cap(
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("DOWNLOADER_SEGMENTS", raising=False)  # auto: 8 at first
    monkeypatch.setenv("DOWNLOADER_HOST_CONNECTIONS", "12")
    monkeypatch.setenv("DOWNLOADER_SEGMENT_THRESHOLD", str(MiB))
    monkeypatch.setenv("DOWNLOADER_CHUNK_SIZE", str(64 * 1024))
    service = make_service()
    digest = origin.add("auto.bin", os.urandom(24 * MiB))
    job = service.download(origin.url("/files/auto.bin?rate=1000000"), tmp_path, sha256=digest)
    service.wait_for_job(job, timeout=60)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert hashlib.sha256((tmp_path / "auto.bin").read_bytes()).hexdigest() == digest
    assert 8 < origin.peak <= 12, origin.peak


def test_a_number_of_segments_keeps_that_count_in_the_queue(
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DOWNLOADER_SEGMENTS", "3")  # what `get --connections 3` sets
    monkeypatch.setenv("DOWNLOADER_SEGMENT_THRESHOLD", str(MiB))
    monkeypatch.setenv("DOWNLOADER_CHUNK_SIZE", str(64 * 1024))
    service = make_service()
    digest = origin.add("three.bin", os.urandom(8 * MiB))
    job = service.download(origin.url("/files/three.bin?rate=2000000"), tmp_path, sha256=digest)
    service.wait_for_job(job, timeout=60)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert origin.peak == 3
    assert len(ranges_seen(origin, "/files/three.bin")) == 4  # the probe and three ranges


def test_auto_starts_at_eight_and_grows_to_the_cap_while_a_number_is_fixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOWNLOADER_SEGMENTS", raising=False)
    assert Settings(segments="auto").segment_counts(16) == (8, 16)
    assert Settings(segments="auto").segment_counts(4) == (4, 4)  # a low cap: no growth
    assert Settings(segments=3).segment_counts(16) == (3, 3)  # `get --connections 3`
    assert Settings().segments == "auto"
