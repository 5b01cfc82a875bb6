"""The REST API and event stream, against a real Redis, worker and origin."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from fastapi.testclient import TestClient

from downloader import DownloadQueueService
from downloader.api import create_api
from tests.origin import Origin
from tests.test_queue import wait_until

MiB = 1 << 20


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str) -> Path:
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")  # the origin is loopback
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def api(root: Path) -> Iterator[TestClient]:
    with TestClient(create_api()) as client:
        yield client


@pytest.fixture
def worker(make_service: Callable[..., DownloadQueueService]) -> DownloadQueueService:
    return make_service(start_worker=True, max_parallel_dl=2)


Q = "/api/v1/queue/default"


def finished(api: TestClient, item_id: int) -> dict:
    def done() -> bool:
        return api.get(f"{Q}/i/{item_id}").json()["status"] not in ("pending", "in_progress")

    wait_until(done, timeout=30)
    return api.get(f"{Q}/i/{item_id}").json()


def test_enqueue_a_file_and_a_multifile_job_and_get_them(
    api: TestClient, worker: DownloadQueueService, origin: Origin, root: Path
) -> None:
    digest = origin.add("one.bin", os.urandom(MiB))
    answer = api.post(
        f"{Q}/enqueue",
        json={
            "source": origin.url("/private/one.bin"),
            "dest": "models",
            "access_token": origin.token,
            "priority": 5,
        },
    )
    assert answer.status_code == 200, answer.text
    (single,) = answer.json()["items"]
    assert single["status"] in ("pending", "in_progress") and single["priority"] == 5
    assert single["batch_id"] is None and single["queue_id"] == "default"
    done = finished(api, single["item_id"])
    assert done["status"] == "completed" and done["bytes"] == done["total_bytes"] == MiB
    assert done["download_path"] == str(root / "models" / "one.bin")
    assert hashlib.sha256((root / "models/one.bin").read_bytes()).hexdigest() == digest
    assert done["started_at"] and done["completed_at"] and done["created_at"]

    parts = [{"url": origin.url("/files/one.bin"), "path": f"m/p{i}.bin"} for i in range(3)]
    multi = api.post(f"{Q}/enqueue", json={"parts": parts, "dest": "sets"}).json()["items"]
    parent = multi[0]
    assert parent["kind"] == "multifile" and len(parent["part_ids"]) == 3
    assert [p["batch_id"] for p in multi] == [parent["item_id"]] * 4
    done = finished(api, parent["item_id"])
    assert done["status"] == "completed" and done["bytes"] == 3 * MiB
    assert done["download_path"] == str(root / "sets" / "m")
    everything = json.dumps([api.get(f"{Q}/list").json(), done])
    assert origin.token not in everything and "access_token" not in everything


def test_status_list_paging_current_and_filters(
    api: TestClient, worker: DownloadQueueService, origin: Origin
) -> None:
    origin.add("slow.bin", os.urandom(2 * MiB))
    origin.add("tiny.bin", b"tiny")
    slow = api.post(
        f"{Q}/enqueue", json={"source": origin.url("/files/slow.bin?rate=1000000"), "dest": "s"}
    ).json()["items"][0]
    ids = [slow["item_id"]]
    for i in range(5):
        ids.append(
            api.post(
                f"{Q}/enqueue", json={"source": origin.url("/files/tiny.bin"), "dest": f"t{i}"}
            ).json()["items"][0]["item_id"]
        )
    missing = api.post(
        f"{Q}/enqueue", json={"source": origin.url("/files/absent.bin"), "dest": "x"}
    ).json()["items"][0]
    ids.append(missing["item_id"])

    wait_until(lambda: api.get(f"{Q}/current").json() is not None)
    assert api.get(f"{Q}/current").json()["item_id"] == slow["item_id"]
    status = api.get(f"{Q}/status").json()
    assert status["queue"]["total"] == 7 and status["processor"]["is_started"]
    assert status["processor"]["is_processing"]

    finished(api, missing["item_id"])
    failed = api.get(f"{Q}/list", params={"status": "failed"}).json()
    assert [i["item_id"] for i in failed["items"]] == [missing["item_id"]]
    assert failed["items"][0]["error_type"] == "HTTPError(Not Found)"
    assert "Not Found" in failed["items"][0]["error_message"]
    assert "Traceback" in failed["items"][0]["error_traceback"]

    first = api.get(f"{Q}/list", params={"limit": 3}).json()
    assert [i["item_id"] for i in first["items"]] == ids[:3] and first["total"] == 7
    second = api.get(f"{Q}/list", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [i["item_id"] for i in second["items"]] == ids[3:6]
    third = api.get(f"{Q}/list", params={"limit": 3, "cursor": second["next_cursor"]}).json()
    assert [i["item_id"] for i in third["items"]] == ids[6:] and third["next_cursor"] is None
    offset = api.get(f"{Q}/list", params={"limit": 2, "offset": 2}).json()
    assert [i["item_id"] for i in offset["items"]] == ids[2:4]


def test_cancel_clear_prune_and_unknown_ids(
    api: TestClient, make_service: Callable[..., DownloadQueueService], origin: Origin
) -> None:
    make_service(start_worker=False)  # no worker: everything stays pending
    ids = [
        api.post(f"{Q}/enqueue", json={"source": origin.url(f"/files/f{i}"), "dest": "d"}).json()[
            "items"
        ][0]["item_id"]
        for i in range(4)
    ]
    cancelled = api.post(f"{Q}/i/{ids[0]}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"
    assert api.get(f"{Q}/status").json()["queue"] | {"queue_id": "default"} == {
        "queue_id": "default",
        "pending": 3,
        "in_progress": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 1,
        "total": 4,
    }
    assert api.get(f"{Q}/i/999999").status_code == 404
    assert api.post(f"{Q}/i/999999/cancel").status_code == 404
    assert api.get("/api/v1/queue/elsewhere/i/" + str(ids[1])).status_code == 404
    assert api.delete(f"{Q}/clear").json() == {"removed": 3}
    assert [i["item_id"] for i in api.get(f"{Q}/list").json()["items"]] == [ids[0]]
    assert api.delete(f"{Q}/prune").json() == {"removed": 1}
    assert api.get(f"{Q}/list").json()["items"] == []
    assert origin.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"source": "http://x/a", "dest": "/etc"},
        {"source": "http://x/a", "dest": "../outside"},
        {"source": "http://x/a", "dest": "a/../../outside"},
        {"source": "ftp://x/a", "dest": "d"},
        {"dest": "d"},
        {"source": "http://x/a", "parts": [{"url": "http://x/b", "path": "b"}], "dest": "d"},
        {"parts": [{"url": "http://x/b", "path": "../b"}], "dest": "d"},
        {
            "parts": [{"url": "http://x/b", "path": "b"}, {"url": "http://x/c", "path": "b"}],
            "dest": "d",
        },
        {"source": "http://x/a"},
        {"source": "http://x/a", "dest": "d", "priority": "high"},
    ],
)
def test_bad_bodies_are_422_and_enqueue_nothing(api: TestClient, body: dict) -> None:
    answer = api.post(f"{Q}/enqueue", json=body)
    assert answer.status_code == 422, answer.text
    assert api.get(f"{Q}/list").json()["items"] == []


def test_the_api_key_guards_everything_but_health(
    root: Path, monkeypatch: pytest.MonkeyPatch, worker: DownloadQueueService
) -> None:
    monkeypatch.setenv("DOWNLOADER_API_KEY", "k3y")
    with TestClient(create_api()) as api:
        assert api.get(f"{Q}/status").status_code == 401
        assert api.get(f"{Q}/list", headers={"X-API-Key": "wrong"}).status_code == 401
        assert api.get(f"{Q}/list", headers={"X-API-Key": "k3y"}).status_code == 200
        assert api.get(f"{Q}/list", headers={"Authorization": "Bearer k3y"}).status_code == 200
        health = api.get("/health")
        assert health.status_code == 200 and health.json() == {"redis": True, "workers": 1}
        assert api.get("/docs").status_code == 200
        assert "/api/v1/queue/{queue_id}/enqueue" in api.get("/openapi.json").json()["paths"]


def test_health_is_503_without_a_worker(api: TestClient, namespace: str) -> None:
    answer = api.get("/health")
    assert answer.status_code == 503 and answer.json()["redis"] is True


def test_pause_keeps_new_jobs_pending_and_resume_runs_them(
    api: TestClient, spawn_worker: Callable, origin: Origin, root: Path
) -> None:
    spawn_worker("pausable", concurrency=1)
    origin.add("held.bin", b"held")
    paused = api.post(f"{Q}/processor/pause").json()
    assert paused["is_paused"] and not paused["is_started"]
    item = api.post(
        f"{Q}/enqueue", json={"source": origin.url("/files/held.bin"), "dest": "h"}
    ).json()["items"][0]
    time.sleep(2)
    assert api.get(f"{Q}/i/{item['item_id']}").json()["status"] == "pending"
    resumed = api.post(f"{Q}/processor/resume").json()
    assert not resumed["is_paused"]
    assert finished(api, item["item_id"])["status"] == "completed"
    assert (root / "h" / "held.bin").read_bytes() == b"held"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_event_stream_follows_a_download_live(
    root: Path, worker: DownloadQueueService, origin: Origin
) -> None:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, timeout=10)
    origin.add("live.bin", os.urandom(2 * MiB))
    seen: list[dict] = []
    with requests.get(f"{base}{Q}/events", stream=True, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines) == ": subscribed"
        requests.post(
            f"{base}{Q}/enqueue",
            timeout=10,
            json={"source": origin.url("/files/live.bin?rate=4000000"), "dest": "live"},
        )
        event = None
        for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                payload = json.loads(line[6:])
                assert payload["event"] == event
                seen.append(payload)
                if event == "download_complete":
                    break
    server.should_exit = True
    thread.join(10)
    names = [e["event"] for e in seen]
    assert names[0] == "download_started" and names[-1] == "download_complete"
    assert "download_progress" in names
