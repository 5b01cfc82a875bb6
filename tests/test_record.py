"""`JobRecord`, the one typed shape of a job in the store: its hash, its models."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest
import redis

from downloader.jobs.failure import Failure, FailureKind
from downloader.jobs.models import DownloadJob, DownloadJobStatus, MultiFileDownloadJob
from downloader.jobs.record import FIELD_NAMES, JobKind, JobRecord
from downloader.store.jobs import JobStore


def full_record() -> JobRecord:
    """A record with every field away from its default."""
    return JobRecord(
        id=7,
        dest=Path("/data/models"),
        queue_id="q",
        kind=JobKind.MULTIFILE,
        status=DownloadJobStatus.ERROR,
        priority=3,
        level=0,
        source="https://example.com/a.bin",
        dest_is_dir=True,
        download_path=Path("/data/models/a.bin"),
        root=Path("/data"),
        sha256="0" * 64,
        size=12,
        mirrors=["https://mirror.example/a.bin"],
        untrusted=True,
        follower="0f1e2d3c",
        parent_id=6,
        part_ids=[8, 9],
        parts_total=2,
        parts_done=1,
        parts_failed=1,
        parts_cancelled=1,
        culprit=9,
        revision="abc",
        bandwidth=512 << 10,
        waiting_for="waiting for a connection to cdn.example (8 of 8 in use)",
        bytes=5,
        total_bytes=12,
        content_type="application/octet-stream",
        etag='"e"',
        final_url="https://cdn.example/a.bin",
        attempts=2,
        worker="w@host#1",
        job_sequence=4,
        started_epoch=1700000000.25,
        cancel_requested=True,
        pause_requested=True,
        cancelled=True,
        error_type="HTTPError(Not Found)",
        error="Traceback ...",
        last_error="ConnectionError(refused)",
        failure=Failure(FailureKind.HTTP, "Not Found", 404, "https://cdn.example/a.bin"),
        created_at=datetime(2024, 1, 2, 3, 4, 5, 6),
        updated_at=datetime(2024, 1, 2, 3, 4, 6),
        job_started=datetime(2024, 1, 2, 3, 4, 7),
        job_ended=datetime(2024, 1, 2, 3, 4, 8),
    )


def as_redis(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in fields.items()}


def test_every_field_survives_the_hash() -> None:
    record = full_record()
    defaults = JobRecord(id=0, dest=Path("/"))
    unchanged = {
        spec.name
        for spec in dataclasses.fields(JobRecord)
        if getattr(record, spec.name) == getattr(defaults, spec.name)
    }
    assert unchanged == set()  # the test covers every field
    assert JobRecord.from_hash(as_redis(record.to_hash())) == record


def test_a_row_for_the_create_script_holds_the_hash() -> None:
    for record in (full_record(), JobRecord(id=7, dest=Path("/d"), source="http://x/")):
        row = record.to_row()
        assert row[:2] == [str(record.id), record.status.value]
        assert dict(zip(row[2::2], row[3::2], strict=True)) == record.to_hash()
        assert list(record.to_hash()) == row[2::2]  # in the same order, each once


def test_a_field_at_its_default_is_not_stored_and_reads_as_its_default() -> None:
    record = JobRecord(id=0, dest=Path("/d"), queue_id="q", source="http://x/")
    stored = record.to_hash()
    assert set(stored) == {"id", "dest", "queue_id", "status", "source"}
    assert json.loads(stored["status"]) == "waiting"
    assert JobRecord.from_hash(as_redis(stored)) == record


def test_a_field_this_version_does_not_know_and_a_null_are_left_out() -> None:
    raw = as_redis({"id": "1", "dest": '"/d"', "future_field": '"x"', "etag": "null"})
    assert JobRecord.from_hash(raw) == JobRecord(id=1, dest=Path("/d"))


def test_the_job_models_keep_invokeais_field_order() -> None:
    assert list(DownloadJob.model_fields) == [
        "source",
        "dest",
        "id",
        "priority",
        "status",
        "download_path",
        "job_started",
        "job_ended",
        "job_sequence",
        "bytes",
        "total_bytes",
        "content_type",
        "etag",
        "final_url",
        "error_type",
        "error",
        "attempts",
        "access_token",
    ]
    assert list(MultiFileDownloadJob.model_fields) == [
        "dest",
        "id",
        "priority",
        "status",
        "download_path",
        "job_started",
        "job_ended",
        "bytes",
        "total_bytes",
        "error_type",
        "error",
        "download_parts",
        "revision",
    ]
    job = DownloadJob(source="http://x/a", dest=Path("/d"), access_token="secret")
    # The seed's `cancelled` is in the JSON too (the token never is).
    fields = [*list(DownloadJob.model_fields)[:-1], "cancelled"]
    assert list(json.loads(job.model_dump_json())) == fields


def test_a_model_and_its_record_agree() -> None:
    record = dataclasses.replace(full_record(), kind=JobKind.SINGLE)
    job = record.to_model()
    assert isinstance(job, DownloadJob)
    assert job.cancelled and str(job.source) == record.source
    assert JobRecord.for_job(job).to_model().model_dump() == job.model_dump()
    parent = dataclasses.replace(record, kind=JobKind.MULTIFILE, source=None)
    multi = parent.to_model([record])
    assert isinstance(multi, MultiFileDownloadJob)
    assert multi.download_parts == [job] and multi.revision == "abc"
    assert JobRecord.for_job(multi).kind is JobKind.MULTIFILE


def test_an_update_of_a_field_the_record_lacks_is_refused(namespace: str, redis_url: str) -> None:
    store = JobStore(redis.Redis.from_url(redis_url), namespace)
    (job_id,) = store.new_ids(1)
    store.create("q", [JobRecord(id=job_id, dest=Path("/d"), source="http://x/")])
    with pytest.raises(ValueError, match="no field stauts"):
        store.update(job_id, stauts="running")
    assert "status" in FIELD_NAMES
