"""A batch's jobs are built once per shared shape and copied (`client.newjobs.JobBatch`,
issue 22): each copy must be the job and record `new_job` builds for the same item, own its
callbacks, and be refused where `new_job` refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from downloader import hub
from downloader.client.newjobs import JobBatch, new_job
from downloader.config import Settings
from downloader.engine.naming import PARTIAL_SUFFIX
from downloader.jobs.models import mirror_urls
from downloader.jobs.record import JobRecord


def _alone(job_id: int, item: dict[str, Any], settings: Settings) -> tuple[Any, JobRecord]:
    return new_job(
        job_id,
        item["source"],
        item["dest"],
        item.get("priority", 10),
        item.get("access_token") or hub.token_for(item["source"], settings),
        item.get("sha256"),
        bool(item.get("untrusted")),
        download_path=item.get("download_path"),
        mirrors=mirror_urls(item.get("mirrors")),
    )


def test_a_batchs_copies_are_the_jobs_built_one_by_one(tmp_path: Path) -> None:
    settings = Settings()
    (tmp_path / "there").mkdir()
    items: list[dict[str, Any]] = []
    for i in range(12):
        item: dict[str, Any] = {
            "source": f"http://Example.ORG:80/a/f{i}.bin"
            if i % 3
            else f"https://h{i % 2}.test/f{i}",
            "dest": tmp_path / "there" if i % 2 else f"{tmp_path}/new/",
            "priority": i % 2,
        }
        if i % 4 == 1:
            item["access_token"] = " tok \n"
        if i % 5 == 2:
            item.update(sha256="ab" * 32, mirrors=[f"http://m.test/f{i}"], untrusted=True)
        if i == 7:
            item["download_path"] = tmp_path / "named.bin"
        items.append(item)
    batch = JobBatch(settings)
    for job_id, item in enumerate(items, 100):
        job, record = batch.job(job_id, item)
        want_job, want_record = _alone(job_id, item, settings)
        assert job.model_dump() == want_job.model_dump()
        assert job.access_token == want_job.access_token
        assert record == want_record
        assert record.to_hash() == want_record.to_hash()


def test_a_copy_owns_its_callbacks_and_state(tmp_path: Path) -> None:
    batch = JobBatch(Settings())
    items = [{"source": f"http://a.test/f{i}", "dest": f"{tmp_path}/d/"} for i in range(2)]
    first, second = (batch.job(i, item)[0] for i, item in enumerate(items))
    second.set_callbacks(on_complete=print)
    second.cancelled = True
    second.status = "running"  # type: ignore[assignment]
    assert first.callback("on_complete") is None
    assert not first.cancelled
    assert first.status == "waiting"
    assert "status" not in first.model_fields_set


@pytest.mark.parametrize(
    "bad",
    [
        {"source": "ftp://a.test/x"},
        {"source": "http://a.test/x", "access_token": "a\nb"},
        {"source": "http://a.test/x", "dest": f"/tmp/x{PARTIAL_SUFFIX}"},
        {"source": "http://a.test/x", "priority": "high"},
    ],
)
def test_an_item_after_good_ones_is_refused_as_alone(tmp_path: Path, bad: dict[str, Any]) -> None:
    batch = JobBatch(Settings())
    for i in range(2):
        batch.job(i, {"source": f"http://a.test/f{i}", "dest": f"{tmp_path}/d/"})
    item = {"dest": f"{tmp_path}/d/", **bad}
    with pytest.raises(ValueError) as alone:
        _alone(9, item, Settings())
    with pytest.raises(ValueError) as batched:
        batch.job(9, item)
    assert type(batched.value) is type(alone.value)
    assert str(batched.value) == str(alone.value)
