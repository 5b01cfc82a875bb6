"""Per-job control over REST: pause, resume, retry, a new priority, and a cancel that answers
the state after it; each answers the item after the change, 409 for a move its state does not
allow, 404 for no such item. Real Redis, the real in-process Celery worker, the local origin."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from downloader import DownloadQueueService
from tests.origin import Origin
from tests.test_api import Q, api, enqueue, finished, root, worker  # noqa: F401 (fixtures)
from tests.test_queue import MiB, wait_until


def _item(api: TestClient, item_id: int) -> dict:  # noqa: F811
    return api.get(f"{Q}/i/{item_id}").json()


def test_rest_pause_resume_answer_the_state_after_and_the_file_is_whole(
    api: TestClient,  # noqa: F811
    worker: DownloadQueueService,  # noqa: F811
    origin: Origin,
    root: Path,  # noqa: F811
) -> None:
    data = os.urandom(2 * MiB)
    origin.add("big.bin", data)
    (item,) = enqueue(api, {"source": origin.url("/files/big.bin?rate=500000"), "dest": "d"})
    wait_until(lambda: _item(api, item["item_id"])["bytes"] > 0)

    paused = api.post(f"{Q}/i/{item['item_id']}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert api.get(f"{Q}/status").json()["queue"]["paused"] == 1
    listed = api.get(f"{Q}/list", params={"status": "paused"}).json()["items"]
    assert [i["item_id"] for i in listed] == [item["item_id"]]

    resumed = api.post(f"{Q}/i/{item['item_id']}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] in ("pending", "in_progress")
    done = finished(api, item["item_id"])
    assert done["status"] == "completed"
    assert hashlib.sha256((root / "d" / "big.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )
    ranges = [r.headers.get("Range") for r in origin.gets("/files/big.bin")]
    assert ranges[0] is None and ranges[-1] is not None

    refused = api.post(f"{Q}/i/{item['item_id']}/resume")
    assert refused.status_code == 409
    assert refused.json() == {"detail": f"cannot resume job {item['item_id']}: it has ended"}
    assert api.post(f"{Q}/i/{item['item_id']}/pause").status_code == 409
    assert api.patch(f"{Q}/i/{item['item_id']}", json={"priority": 1}).status_code == 409


def test_rest_cancel_answers_canceled_and_retry_runs_it_again(
    api: TestClient,  # noqa: F811
    worker: DownloadQueueService,  # noqa: F811
    origin: Origin,
    root: Path,  # noqa: F811
) -> None:
    data = os.urandom(2 * MiB)
    origin.add("big.bin", data)
    (item,) = enqueue(api, {"source": origin.url("/files/big.bin?rate=500000"), "dest": "d"})
    item_id = item["item_id"]
    wait_until(lambda: _item(api, item_id)["bytes"] > 0)
    cancelled = api.post(f"{Q}/i/{item_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"

    running_retry = api.post(f"{Q}/i/{item_id}/retry")
    assert running_retry.status_code == 200
    assert running_retry.json()["status"] in ("pending", "in_progress")
    assert finished(api, item_id)["status"] == "completed"
    assert (root / "d" / "big.bin").read_bytes() == data
    assert api.post(f"{Q}/i/{item_id}/retry").status_code == 409  # it completed

    failing = enqueue(api, {"source": origin.url("/files/big.bin?fail=1&code=404"), "dest": "e"})
    assert finished(api, failing[0]["item_id"])["status"] == "failed"
    again = api.post(f"{Q}/i/{failing[0]['item_id']}/retry")
    assert again.status_code == 200 and again.json()["error_type"] is None
    assert finished(api, failing[0]["item_id"])["status"] == "completed"


def test_rest_priority_moves_a_pending_item_and_bad_input_is_refused(
    api: TestClient,  # noqa: F811
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    root: Path,  # noqa: F811
) -> None:
    service = make_service(start_worker=True, max_parallel_dl=1)
    for name in ("held", "a", "b"):
        origin.add(f"{name}.bin", name.encode() * 100)
    (held,) = enqueue(api, {"source": origin.url("/files/held.bin?hold=slot"), "dest": "p"})
    wait_until(lambda: len(origin.gets("/files/held.bin")) == 1)
    a, b = (enqueue(api, {"source": origin.url(f"/files/{n}.bin"), "dest": "p"})[0] for n in "ab")
    changed = api.patch(f"{Q}/i/{b['item_id']}", json={"priority": 0})
    assert changed.status_code == 200
    assert changed.json()["priority"] == 0 and changed.json()["status"] == "pending"
    origin.release("slot")
    for each in (held, a, b):
        assert finished(api, each["item_id"])["status"] == "completed"
    started = [_item(api, i["item_id"])["started_at"] for i in (a, b)]
    assert started[1] < started[0]  # b, moved ahead, started first
    assert service.queue_id == "default"

    for body in ({"priority": "high"}, {}, {"priority": 1, "other": 2}):
        assert api.patch(f"{Q}/i/{a['item_id']}", json=body).status_code == 422
    for route in ("pause", "resume", "retry"):
        assert api.post(f"{Q}/i/999999/{route}").status_code == 404
    assert api.patch(f"{Q}/i/999999", json={"priority": 1}).status_code == 404
    assert api.post(f"/api/v1/queue/elsewhere/i/{a['item_id']}/pause").status_code == 404


def test_rest_control_routes_are_in_the_openapi_document(api: TestClient) -> None:  # noqa: F811
    paths = api.get("/openapi.json").json()["paths"]
    for route, method in (
        ("/i/{item_id}/pause", "post"),
        ("/i/{item_id}/resume", "post"),
        ("/i/{item_id}/retry", "post"),
        ("/i/{item_id}/cancel", "post"),
        ("/i/{item_id}", "patch"),
    ):
        declared = paths[f"/api/v1/queue/{{queue_id}}{route}"][method]["responses"]
        assert {"200", "401", "404", "409", "422"} <= declared.keys(), route
