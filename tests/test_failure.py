"""A failed job keeps its failure as data beside InvokeAI's `error_type`, and the command line
says it from there (or from `error_type`, for a record written before failures were kept)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.jobs.failure import Failure, FailureKind, describe
from tests.origin import Origin


def test_a_failed_job_keeps_its_failure_beside_its_error_type(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    job = service.download(origin.url("/files/missing.bin?sig=abc"), tmp_path)
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.ERROR
    assert job.error_type == "HTTPError(Not Found)"  # as InvokeAI's callers read it
    expected = Failure(FailureKind.HTTP, "Not Found", 404, origin.url("/files/missing.bin"))
    assert job.failure == expected  # the URL without its query
    record = service.app.store.record(job.id)
    assert record is not None and record.failure == expected
    assert "failure" not in job.model_dump()  # the dumps keep InvokeAI's fields


def test_a_job_cancelled_while_waiting_is_a_cancelled_failure(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    client = make_service(start_worker=False)
    job = client.download(origin.url("/files/never.bin"), tmp_path)
    client.cancel_job(job)
    record = client.app.store.record(job.id)
    assert record is not None and record.cancelled
    assert record.failure == Failure(FailureKind.CANCELLED, f"job {job.id} was cancelled")
    assert describe(record.failure, record.error_type) == "cancelled"


@pytest.mark.parametrize(
    ("failure", "error_type", "said"),
    [
        (Failure(FailureKind.HTTP, "Not Found", 404), "HTTPError(Not Found)", "404 Not Found"),
        (
            Failure(FailureKind.HTTP, "Forbidden; set HF_TOKEN", 403),
            "HTTPError(Forbidden; set HF_TOKEN)",
            "403 Forbidden: set HF_TOKEN",
        ),
        (Failure(FailureKind.HTTP, "Odd", 599), "HTTPError(Odd)", "HTTP Odd"),
        (
            Failure(FailureKind.HOST_NOT_FOUND, "nowhere.invalid"),
            "HostNotFoundError(nowhere.invalid)",
            "host not found: nowhere.invalid",
        ),
        (
            Failure(FailureKind.NETWORK, "... [Errno 111] Connection refused"),
            "ConnectionError(... [Errno 111] Connection refused)",
            "connection refused",
        ),
        (
            Failure(FailureKind.CANCELLED, "job 3 was cancelled"),
            "DownloadJobCancelledException",
            "cancelled",
        ),
        (
            Failure(FailureKind.CHECKSUM, "sha256 differs"),
            "ChecksumMismatchError(sha256 differs)",
            "ChecksumMismatchError(sha256 differs)",
        ),
    ],
)
def test_a_failure_is_said_as_its_error_type_always_was(
    failure: Failure, error_type: str, said: str
) -> None:
    assert describe(failure, error_type) == said
    assert describe(None, error_type) == said  # a record written before failures were kept


def test_a_failure_of_a_newer_kind_reads_as_other() -> None:
    failure = Failure.from_json({"kind": "quantum", "status": None, "url": None, "message": "m"})
    assert failure.kind is FailureKind.OTHER
    assert Failure.from_json(Failure(FailureKind.SPACE, "full").to_json()).kind is FailureKind.SPACE
