"""Batch enqueue writes Celery's own messages from a template (issue 22): the same message
`apply_async` sends, field by field, and a stock `celery worker` runs them."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from downloader import DownloadJobStatus, DownloadQueueService
from downloader.celery_app import create_app
from downloader.celery_app.dispatch import dispatch_task_id
from downloader.config import Settings
from downloader.store.keys import celery_priority
from tests.children import stop_process
from tests.conftest import cli_env, stock_celery_worker
from tests.origin import Origin

IDS = (("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"))
"""The task id's places: one per message, compared by form, not value."""


def _sent(client: redis.Redis, key: str) -> dict[str, Any]:
    raw = client.rpop(key)
    assert raw is not None, f"no message on {key}"
    return json.loads(raw)


def test_template_message_is_apply_async_s(redis_url: str, namespace: str) -> None:
    app = create_app(redis_url, Settings())
    broker, keys = app.broker, app.runtime.keys
    client = redis.Redis.from_url(redis_url)
    for priority in (10, 3, 0):
        level = celery_priority(priority)
        key = keys.broker_list("default", level)
        app.tasks["downloader.download"].apply_async(
            (41,),
            queue=broker.broker_queue("default"),
            priority=level,
            task_id=dispatch_task_id(41, time.time()),
            ignore_result=True,
            argsrepr="(41,)",
            kwargsrepr="{}",
            origin=broker.messages.origin,
        )
        stock = _sent(client, key)
        broker.submit([(41, "default", priority)])
        ours = _sent(client, key)
        task_id = ours["headers"]["id"]
        assert task_id.startswith("41-")
        for section, field in IDS:
            assert ours[section][field] == task_id
            stock[section][field] = ours[section][field] = "<id>"
        assert len(ours["properties"].pop("delivery_tag")) == 36  # a uuid4, as kombu makes
        stock["properties"].pop("delivery_tag")
        assert base64.b64decode(ours["body"]) == base64.b64decode(stock["body"])
        assert ours == stock, f"priority {priority}"
        assert ours["properties"]["priority"] == level


def test_stock_celery_worker_runs_a_batch(
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    namespace: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    digests = {f"m{i}.bin": origin.add(f"m{i}.bin", bytes([i]) * (1000 + i)) for i in range(30)}
    service = make_service(start_worker=False)
    dest = tmp_path / "out"
    jobs = service.download_many(
        [{"source": origin.url(f"/files/{name}"), "dest": dest / name} for name in digests]
    )
    log = tmp_path / "celery.log"
    worker = stock_celery_worker(log, cli_env(namespace, redis_url))
    try:
        for job in jobs:
            service.wait_for_job(job, timeout=120)
    finally:
        stop_process(worker)
    assert [job.status for job in jobs] == [DownloadJobStatus.COMPLETED] * len(jobs), log.read_text(
        errors="replace"
    )[-3000:]
    for name, digest in digests.items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest
    assert "downloader.download" in log.read_text(errors="replace")
