"""The REST API and event stream, against a real Redis, worker and origin."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
import requests
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from downloader import DownloadQueueService
from downloader.api import build_api, create_api
from downloader.api.routers.queue import MAX_PAGE
from downloader.engine.redact import MASK
from tests.children import popen, stop_process
from tests.conftest import WorkerProcess, cli_env
from tests.hub_origin import HubOrigin
from tests.origin import Origin
from tests.test_hub import REPO, digest, hub, repo_files  # noqa: F401 (hub: a fixture)
from tests.test_queue import wait_until

MiB = 1 << 20
Q = "/api/v1/queue/default"


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


def enqueue(api: TestClient, body: dict, queue: str = Q) -> list[dict]:
    answer = api.post(f"{queue}/enqueue", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def finished(api: TestClient, item_id: int, timeout: float = 30) -> dict:
    def done() -> bool:
        return api.get(f"{Q}/i/{item_id}").json()["status"] not in ("pending", "in_progress")

    wait_until(done, timeout=timeout)
    return api.get(f"{Q}/i/{item_id}").json()


def test_a_dest_that_does_not_exist_is_a_directory_for_every_url_sent_to_it(
    api: TestClient, worker: DownloadQueueService, origin: Origin, root: Path
) -> None:
    """The seed's example through REST: several URLs into one `dest` not yet made, with and
    without a suffix (an API `dest` is always a directory)."""
    origin.add("a.png", b"first image")
    origin.add("b.png", b"second image")
    for dest in ("downloads", "models.v2"):
        items = [
            {"source": origin.url(f"/files/{name}"), "dest": dest} for name in ("a.png", "b.png")
        ]
        for item in enqueue(api, {"items": items}):
            assert finished(api, item["item_id"])["status"] == "completed"
        assert (root / dest / "a.png").read_bytes() == b"first image"
        assert (root / dest / "b.png").read_bytes() == b"second image"


def test_enqueue_a_file_and_a_multifile_job_and_get_them(
    api: TestClient, worker: DownloadQueueService, origin: Origin, root: Path
) -> None:
    digest = origin.add("one.bin", os.urandom(MiB))
    answers: list[object] = []
    (single,) = enqueue(
        api,
        {
            "source": origin.url("/private/one.bin"),
            "dest": "models",
            "access_token": origin.token,
            "priority": 5,
            "sha256": digest,
        },
    )
    answers.append(single)
    assert single["status"] in ("pending", "in_progress") and single["priority"] == 5
    assert single["batch_id"] is None and single["queue_id"] == "default"
    assert single["kind"] == "download" and single["part_ids"] is None
    done = finished(api, single["item_id"])
    answers.append(done)
    assert done["status"] == "completed" and done["bytes"] == done["total_bytes"] == MiB
    assert done["download_path"] == str(root / "models" / "one.bin")
    assert hashlib.sha256((root / "models/one.bin").read_bytes()).hexdigest() == digest
    assert done["started_at"] and done["completed_at"] and done["created_at"]
    assert done["error_type"] is None and done["error_message"] is None

    parts = [
        {"url": origin.url("/files/one.bin"), "path": f"m/p{i}.bin", "size": MiB} for i in range(3)
    ]
    parts[0]["sha256"] = digest
    multi = enqueue(api, {"parts": parts, "dest": "sets", "access_token": origin.token})
    answers.append(multi)
    parent = multi[0]
    assert parent["kind"] == "multifile" and parent["part_ids"] == [p["item_id"] for p in multi[1:]]
    assert [p["batch_id"] for p in multi] == [parent["item_id"]] * 4
    assert parent["source"] is None and multi[1]["source"] == origin.url("/files/one.bin")
    done = finished(api, parent["item_id"])
    answers.append(done)
    assert done["status"] == "completed" and done["bytes"] == done["total_bytes"] == 3 * MiB
    assert done["download_path"] == str(root / "sets" / "m")
    for i in range(3):
        part = (root / "sets" / "m" / f"p{i}.bin").read_bytes()
        assert hashlib.sha256(part).hexdigest() == digest

    for route in ("list", "status", "current", f"i/{single['item_id']}"):
        answers.append(api.get(f"{Q}/{route}").json())
    everything = json.dumps(answers)
    assert origin.token not in everything and "access_token" not in everything


def test_a_host_that_does_not_exist_fails_at_once_named_in_every_error_field_token_masked(
    api: TestClient, worker: DownloadQueueService, origin: Origin
) -> None:
    token = f"job-{os.urandom(8).hex()}"
    # The origin puts the token into the redirect's URL, which the failed lookup's error quotes.
    source = origin.url("/echo-auth?to=http://gone.invalid/x.bin")
    (item,) = enqueue(api, {"source": source, "dest": "d", "access_token": token})
    failed = finished(api, item["item_id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error_type"] == "HostNotFoundError(gone.invalid)"
    assert failed["error_message"] == "downloader.engine.errors.HostNotFoundError: gone.invalid"
    assert f"auth={MASK}" in failed["error_traceback"]
    assert token not in json.dumps(failed)


def test_status_list_paging_current_filters_and_cancelling_a_running_item(
    api: TestClient, worker: DownloadQueueService, origin: Origin, root: Path
) -> None:
    origin.add("slow.bin", os.urandom(2 * MiB))
    origin.add("tiny.bin", b"tiny")
    (slow,) = enqueue(api, {"source": origin.url("/files/slow.bin?rate=1000000"), "dest": "s"})
    ids = [slow["item_id"]]
    for i in range(5):
        ids.append(
            enqueue(api, {"source": origin.url("/files/tiny.bin"), "dest": f"t{i}"})[0]["item_id"]
        )
    (missing,) = enqueue(api, {"source": origin.url("/files/absent.bin"), "dest": "x"})
    ids.append(missing["item_id"])

    wait_until(lambda: api.get(f"{Q}/current").json() is not None)
    assert api.get(f"{Q}/current").json()["item_id"] == slow["item_id"]
    status = api.get(f"{Q}/status").json()
    assert status["queue"]["total"] == 7 and status["queue"]["queue_id"] == "default"
    assert status["processor"]["is_started"] and status["processor"]["is_processing"]
    assert not status["processor"]["is_paused"] and len(status["processor"]["workers"]) == 1

    finished(api, missing["item_id"])
    failed = api.get(f"{Q}/list", params={"status": "failed"}).json()
    assert [i["item_id"] for i in failed["items"]] == [missing["item_id"]] and failed["total"] == 1
    assert failed["items"][0]["error_type"] == "HTTPError(Not Found)"
    assert "Not Found" in failed["items"][0]["error_message"]
    assert "\n" not in failed["items"][0]["error_message"]
    assert "Traceback" in failed["items"][0]["error_traceback"]

    first = api.get(f"{Q}/list", params={"limit": 3}).json()
    assert [i["item_id"] for i in first["items"]] == ids[:3] and first["total"] == 7
    second = api.get(f"{Q}/list", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [i["item_id"] for i in second["items"]] == ids[3:6]
    third = api.get(f"{Q}/list", params={"limit": 3, "cursor": second["next_cursor"]}).json()
    assert [i["item_id"] for i in third["items"]] == ids[6:] and third["next_cursor"] is None
    offset = api.get(f"{Q}/list", params={"limit": 2, "offset": 2}).json()
    assert [i["item_id"] for i in offset["items"]] == ids[2:4]
    for query in ({"limit": 0}, {"offset": -1}, {"status": "waiting"}, {"cursor": "x"}):
        assert api.get(f"{Q}/list", params=query).status_code == 422

    # cancelling the running item stops it and removes its partial file
    assert api.get(f"{Q}/i/{slow['item_id']}").json()["status"] == "in_progress"
    assert api.post(f"{Q}/i/{slow['item_id']}/cancel").status_code == 200
    cancelled = finished(api, slow["item_id"], timeout=10)
    assert cancelled["status"] == "canceled"
    assert cancelled["error_type"] == "DownloadJobCancelledException"
    assert not list((root / "s").iterdir())
    assert api.get(f"{Q}/current").json() is None
    counts = api.get(f"{Q}/status").json()["queue"]
    assert (counts["completed"], counts["failed"], counts["canceled"]) == (5, 1, 1)
    assert api.delete(f"{Q}/prune").json() == {"removed": 7}


def test_cancel_clear_prune_and_unknown_ids(
    api: TestClient, make_service: Callable[..., DownloadQueueService], origin: Origin
) -> None:
    make_service(start_worker=False)  # no worker: everything stays pending
    ids = [
        enqueue(api, {"source": origin.url(f"/files/f{i}"), "dest": "d"})[0]["item_id"]
        for i in range(4)
    ]
    multi = enqueue(
        api,
        {
            "parts": [
                {"url": origin.url("/files/a"), "path": "a"},
                {"url": origin.url("/files/b"), "path": "b"},
            ],
            "dest": "m",
        },
    )
    cancelled = api.post(f"{Q}/i/{ids[0]}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"
    again = api.post(f"{Q}/i/{ids[0]}/cancel")  # a finished item stays as it is
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    assert api.get(f"{Q}/status").json()["queue"] == {
        "queue_id": "default",
        "pending": 6,
        "in_progress": 0,
        "paused": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 1,
        "total": 7,
    }
    assert api.get(f"{Q}/i/999999").status_code == 404
    assert api.post(f"{Q}/i/999999/cancel").status_code == 404
    assert api.get(f"/api/v1/queue/elsewhere/i/{ids[1]}").status_code == 404
    assert api.post(f"/api/v1/queue/elsewhere/i/{ids[1]}/cancel").status_code == 404
    assert api.get(f"{Q}/i/{ids[1]}").json()["status"] == "pending"
    assert api.get("/api/v1/queue/bad:queue/status").status_code == 422

    assert api.delete(f"{Q}/clear").json() == {"removed": 6}  # 3 singles, a job, its 2 parts
    assert [i["item_id"] for i in api.get(f"{Q}/list").json()["items"]] == [ids[0]]
    for item in multi:
        assert api.get(f"{Q}/i/{item['item_id']}").status_code == 404
    assert api.delete(f"{Q}/prune").json() == {"removed": 1}
    assert api.get(f"{Q}/list").json() == {"items": [], "total": 0, "next_cursor": None}
    assert api.delete(f"{Q}/clear").json() == {"removed": 0}
    assert origin.requests == []


def test_prune_keeps_the_finished_parts_of_a_running_multifile_job(
    api: TestClient, worker: DownloadQueueService, origin: Origin
) -> None:
    origin.add("tiny.bin", b"tiny")
    origin.add("slow.bin", os.urandom(MiB))
    parent, tiny, _slow = enqueue(
        api,
        {
            "parts": [
                {"url": origin.url("/files/tiny.bin"), "path": "tiny.bin"},
                {"url": origin.url("/files/slow.bin?rate=1000000"), "path": "slow.bin"},
            ],
            "dest": "mixed",
        },
    )
    assert finished(api, tiny["item_id"])["status"] == "completed"
    assert api.get(f"{Q}/i/{parent['item_id']}").json()["status"] == "in_progress"
    assert api.delete(f"{Q}/prune").json() == {"removed": 0}
    assert finished(api, parent["item_id"])["status"] == "completed"
    assert api.delete(f"{Q}/prune").json() == {"removed": 3}


@pytest.mark.parametrize(
    "body",
    [
        {"source": "http://x/a", "dest": "/etc"},
        {"source": "http://x/a", "dest": "../outside"},
        {"source": "http://x/a", "dest": "a/../../outside"},
        {"source": "http://x/a", "dest": "~/d"},
        {"source": "http://x/a", "dest": "bad\x00name"},
        {"source": "ftp://x/a", "dest": "d"},
        {"source": "not a url", "dest": "d"},
        {"dest": "d"},
        {"parts": [], "dest": "d"},
        {"source": "http://x/a", "parts": [{"url": "http://x/b", "path": "b"}], "dest": "d"},
        {"parts": [{"url": "http://x/b", "path": "../b"}], "dest": "d"},
        {"parts": [{"url": "http://x/b", "path": "/etc/b"}], "dest": "d"},
        {"parts": [{"url": "http://x/b", "path": "b", "size": -1}], "dest": "d"},
        {"parts": [{"url": "http://x/b", "path": "b", "sha256": "abc"}], "dest": "d"},
        {"parts": [{"url": "http://x/b", "path": "b"}], "dest": "d", "sha256": "a" * 64},
        {
            "parts": [{"url": "http://x/b", "path": "b"}, {"url": "http://x/c", "path": "b"}],
            "dest": "d",
        },
        {"source": "http://x/a"},
        {"source": "http://x/a", "dest": "d", "priority": "high"},
        {"source": "http://x/a", "dest": "d", "sha256": "not-hex"},
        {"items": []},
        {"items": [{"source": "http://x/a", "dest": "d"}], "dest": "d"},
        {"items": [{"source": "http://x/a", "dest": "d"}], "source": "http://x/b", "dest": "d"},
        {"items": [{"source": "http://x/a", "dest": "d"}, {"source": "http://x/b"}]},
        {"items": [{"source": "http://x/a", "dest": "d"}, {"source": "ftp://x/b", "dest": "d"}]},
        {"items": [{"source": "http://x/a", "dest": "d"}, {"source": "http://x/b", "dest": "/d"}]},
        {
            "items": [
                {"source": "http://x/a", "dest": "d"},
                {"source": "http://x/b", "dest": "../d"},
            ]
        },
        {"items": [{"source": "http://x/a", "dest": "d", "sha256": "abc"}]},
        {"items": [{"source": f"http://x/{i}", "dest": "d"} for i in range(10_001)]},
        {"repo": "acme/model"},
        {"repo": "../etc", "dest": "d"},
        {"repo": "acme/model", "dest": "../d"},
        {"repo": "acme/model", "dest": "d", "repo_type": "organisation"},
        {"repo": "acme/model", "dest": "d", "sha256": "a" * 64},
        {"repo": "acme/model", "source": "http://x/a", "dest": "d"},
        {"source": "http://x/a", "dest": "d", "revision": "v1"},
        {"parts": [{"url": "http://x/b", "path": "b"}], "dest": "d", "allow_patterns": ["*"]},
    ],
)
def test_bad_bodies_are_422_and_enqueue_nothing(api: TestClient, body: dict) -> None:
    answer = api.post(f"{Q}/enqueue", json=body)
    assert answer.status_code == 422, answer.text
    assert api.get(f"{Q}/list").json()["items"] == []


def test_a_dest_that_leaves_the_root_through_a_symlink_is_422(
    api: TestClient, root: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "real").mkdir()
    (root / "inner").symlink_to(root / "real")
    (root / "d").mkdir()
    (root / "d" / "esc").symlink_to(tmp_path / "outside")
    for body in (
        {"source": "http://x/a", "dest": "escape"},
        {"source": "http://x/a", "dest": "escape/deeper"},
        {"parts": [{"url": "http://x/b", "path": "esc/b"}], "dest": "d"},
    ):
        answer = api.post(f"{Q}/enqueue", json=body)
        assert answer.status_code == 422 and "leaves the download root" in answer.text, body
    assert not (tmp_path / "outside" / "deeper").exists()
    (inside,) = enqueue(api, {"source": "http://x/a", "dest": "inner"})  # a symlink inside
    assert inside["dest"] == str(root / "real")
    assert api.get(f"{Q}/status").json()["queue"]["total"] == 1


def test_the_api_key_guards_everything_but_health(
    root: Path, monkeypatch: pytest.MonkeyPatch, worker: DownloadQueueService
) -> None:
    monkeypatch.setenv("DOWNLOADER_API_KEY", "k3y")
    with TestClient(create_api()) as api:
        routes = [
            ("get", f"{Q}/status"),
            ("get", f"{Q}/list"),
            ("get", f"{Q}/current"),
            ("get", f"{Q}/i/1"),
            ("post", f"{Q}/i/1/cancel"),
            ("delete", f"{Q}/clear"),
            ("delete", f"{Q}/prune"),
            ("post", f"{Q}/processor/pause"),
            ("post", f"{Q}/processor/resume"),
            ("get", f"{Q}/events"),
            ("post", f"{Q}/enqueue"),
            ("get", "/metrics"),
        ]
        for method, route in routes:
            for headers in (
                {},
                {"X-API-Key": "wrong"},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Basic k3y"},
                {"Authorization": "k3y"},
            ):
                answer = api.request(method, route, headers=headers)
                assert answer.status_code == 401, (method, route, headers)
        assert api.get(f"{Q}/list", headers={"X-API-Key": "k3y"}).status_code == 200
        assert api.get(f"{Q}/list", headers={"Authorization": "Bearer k3y"}).status_code == 200
        assert api.get(f"{Q}/list", headers={"Authorization": "bearer k3y"}).status_code == 200
        health = api.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["redis"] is True and health.json()["workers"] == 1
        for page in ("/docs", "/redoc", "/openapi.json", "/no/such/route"):
            refused = api.get(page)
            assert refused.status_code == 401, page
            assert "k3y" not in refused.text and "k3y" not in str(refused.headers)
        key = {"X-API-Key": "k3y"}
        assert api.get("/docs", headers=key).status_code == 200
        assert api.get("/redoc", headers=key).status_code == 200
        schema = api.get("/openapi.json", headers={"Authorization": "Bearer k3y"}).json()
        paths = schema["paths"]
        assert {"/api/v1/queue/{queue_id}/enqueue", "/api/v1/queue/{queue_id}/events"} <= set(paths)
        assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
        assert "security" not in paths["/health"]["get"]
        assert "k3y" not in json.dumps(schema)


def test_a_key_read_from_a_secret_file_works_without_its_newline(
    root: Path, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setenv("DOWNLOADER_API_KEY", " s3cret\n")
    with TestClient(create_api()) as api:
        assert api.get(f"{Q}/list", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert api.get(f"{Q}/list", headers={"X-API-Key": " s3cret"}).status_code == 401


def test_bodies_over_the_limit_are_413_before_they_are_parsed(
    root: Path, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setenv("DOWNLOADER_API_KEY", "k3y")
    key = {"X-API-Key": "k3y", "Content-Type": "application/json"}
    padded = {"source": "http://x/a", "dest": "d", "access_token": "x" * (2 * MiB)}
    with TestClient(create_api()) as api:
        for body in (json.dumps(padded).encode(), b"{" * (2 * MiB)):  # valid or not: unread
            answer = api.post(f"{Q}/enqueue", content=body, headers=key)
            assert answer.status_code == 413, answer.text
            chunked = api.post(f"{Q}/enqueue", content=iter([body]), headers=key)
            assert chunked.status_code == 413, chunked.text
        small = json.dumps({"source": "http://x/a", "dest": "d"}).encode()
        pieces = iter([small[:10], small[10:]])  # chunked, under the limit: read and parsed
        (item,) = api.post(f"{Q}/enqueue", content=pieces, headers=key).json()["items"]
        assert item["source"] == "http://x/a" and item["status"] == "pending"
        assert api.get(f"{Q}/status", headers=key).json()["queue"]["total"] == 1


def test_the_body_limit_is_a_setting(
    root: Path, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setenv("DOWNLOADER_MAX_BODY_BYTES", "4096")
    with TestClient(create_api()) as api:
        body = {"source": "http://x/b", "dest": "d", "access_token": "x" * 3900}
        assert api.post(f"{Q}/enqueue", json=body).status_code == 200
        body["access_token"] = "x" * 4100
        assert api.post(f"{Q}/enqueue", json=body).status_code == 413
        assert api.get(f"{Q}/status").json()["queue"]["total"] == 1


def test_health_is_503_without_a_worker_or_without_redis(
    api: TestClient, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = api.get("/health")
    assert answer.status_code == 503 and answer.json() == {
        "redis": True,
        "redis_data_lost": False,
        "workers": 0,
        "worker_names": [],
        "detail": None,
    }
    monkeypatch.setenv("DOWNLOADER_REDIS_URL", f"redis://127.0.0.1:{_free_port()}/0")
    started = time.monotonic()
    with TestClient(create_api()) as nowhere:
        answer = nowhere.get("/health")
    assert answer.status_code == 503 and answer.json()["redis"] is False
    assert time.monotonic() - started < 5


def test_pause_holds_jobs_even_for_a_worker_started_later_and_resume_runs_them(
    api: TestClient,
    make_service: Callable[..., DownloadQueueService],
    origin: Origin,
    root: Path,
    namespace: str,
    redis_url: str,
) -> None:
    origin.add("held.bin", b"held")
    paused = api.post(f"{Q}/processor/pause").json()
    assert paused == {"is_started": False, "is_processing": False, "is_paused": True, "workers": []}
    assert redis.Redis.from_url(redis_url).exists(f"{namespace}:queue:default:paused")

    make_service(start_worker=True, max_parallel_dl=1)  # starts while the queue is paused
    (first,) = enqueue(api, {"source": origin.url("/files/held.bin"), "dest": "h1"})
    time.sleep(1.5)
    assert api.get(f"{Q}/i/{first['item_id']}").json()["status"] == "pending"
    assert not api.get(f"{Q}/status").json()["processor"]["is_started"]
    # resuming another queue does not draw this queue's worker into it
    other = api.post("/api/v1/queue/other/processor/resume").json()
    assert not other["is_started"] and not other["is_paused"]

    resumed = api.post(f"{Q}/processor/resume").json()
    assert not resumed["is_paused"]
    assert finished(api, first["item_id"])["status"] == "completed"
    assert (root / "h1" / "held.bin").read_bytes() == b"held"
    assert api.get(f"{Q}/status").json()["processor"]["is_started"]

    # pausing a running worker
    assert not api.post(f"{Q}/processor/pause").json()["is_started"]
    (second,) = enqueue(api, {"source": origin.url("/files/held.bin"), "dest": "h2"})
    time.sleep(1.5)
    assert api.get(f"{Q}/i/{second['item_id']}").json()["status"] == "pending"
    assert api.post(f"{Q}/processor/resume").json()["is_started"]
    assert finished(api, second["item_id"])["status"] == "completed"
    assert (root / "h2" / "held.bin").read_bytes() == b"held"
    assert origin.gets("/files/held.bin") and len(origin.gets("/files/held.bin")) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(root: Path) -> Iterator[str]:
    """The API on a real uvicorn server in a thread, with a short keep-alive."""
    app: FastAPI = build_api(keep_alive=0.5)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, dict | str]]:
    """(event name, payload) per event, ("comment", text) per comment line."""
    event = None
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield str(event), json.loads(line[6:])


def test_the_event_stream_follows_a_download_live(
    served: str, worker: DownloadQueueService, origin: Origin
) -> None:
    origin.add("live.bin", os.urandom(2 * MiB))
    seen: list[dict] = []
    with requests.get(f"{served}{Q}/events", stream=True, timeout=30) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _sse(stream.iter_lines(decode_unicode=True))
        assert next(events) == ("comment", "subscribed")
        requests.post(
            f"{served}{Q}/enqueue",
            timeout=10,
            json={
                "source": origin.url("/private/live.bin?rate=4000000"),
                "dest": "live",
                "access_token": origin.token,
            },
        ).raise_for_status()
        for name, payload in events:
            if name == "comment":
                continue
            assert isinstance(payload, dict) and payload["event"] == name
            seen.append(payload)
            if name == "download_complete":
                break
    names = [e["event"] for e in seen]
    assert names[0] == "download_started" and names[-1] == "download_complete"
    assert "download_progress" in names and seen[-1]["total_bytes"] == 2 * MiB
    assert origin.token not in json.dumps(seen)


def test_the_event_stream_keeps_alive_and_unsubscribes_when_the_client_leaves(
    served: str, namespace: str, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    channel = f"{namespace}:events:quiet"

    def subscribers() -> int:
        return dict(client.pubsub_numsub(channel))[channel.encode()]

    assert subscribers() == 0
    with requests.get(f"{served}/api/v1/queue/quiet/events", stream=True, timeout=10) as stream:
        events = _sse(stream.iter_lines(decode_unicode=True))
        assert next(events) == ("comment", "subscribed")
        assert subscribers() == 1
        started = time.monotonic()
        assert next(events) == ("comment", "keep-alive")
        assert next(events) == ("comment", "keep-alive")
        assert time.monotonic() - started < 3
    wait_until(lambda: subscribers() == 0, timeout=5)


# -- `downloader api` as a process: start-up checks and memory under hostile bodies ----------


class ApiProcess:
    """A `downloader api` in a process of its own, as an operator starts one."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.process, self.log, self.port = process, log, port
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def memory_kib(self, field: str) -> int:
        """`VmRSS` (now) or `VmHWM` (the peak since `reset_peak`) of the process, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
        return int(line.split()[1])

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


@pytest.fixture
def start_api(
    namespace: str, redis_url: str, root: Path, tmp_path: Path
) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(*args: str, key: str | None = None, port: int | None = None) -> ApiProcess:
        """`port`: the one a stopped API served on, to start it again there."""
        env = cli_env(namespace, redis_url)
        env.pop("DOWNLOADER_API_KEY", None)
        if key is not None:
            env["DOWNLOADER_API_KEY"] = key
        port = port or _free_port()
        log = tmp_path / f"api-{port}.log"
        command = [sys.executable, "-m", "downloader", "api", "--port", str(port), *args]
        process = popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        api = ApiProcess(process, log, port)
        started.append(api)
        wait_until(lambda: _serves(api.url) or process.poll() is not None, timeout=60)
        return api

    yield start
    for api in started:
        if api.process.poll() is None:
            stop_process(api.process)


def _serves(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=5)
        return True
    except requests.ConnectionError:
        return False


def _run_api(namespace: str, redis_url: str, key: str | None, *args: str) -> subprocess.Popen:
    env = cli_env(namespace, redis_url)
    env.pop("DOWNLOADER_API_KEY", None)
    if key is not None:
        env["DOWNLOADER_API_KEY"] = key
    command = [sys.executable, "-m", "downloader", "api", "--port", str(_free_port()), *args]
    return popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _refused_at_start(process: subprocess.Popen) -> str:
    """The one line `downloader api` printed when it refused to start (exit status 2)."""
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("downloader api started serving instead of refusing") from None
    assert process.returncode == 2, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and not out, (out, err)
    return lines[0]


def test_downloader_api_refuses_a_blank_or_unsendable_key(
    namespace: str, redis_url: str, root: Path
) -> None:
    secret = "s3cr3t\x07value"
    # all four start side by side (each takes seconds on a loaded machine)
    blanks = [_run_api(namespace, redis_url, blank) for blank in ("", "   ", "\n")]
    unsendable = _run_api(namespace, redis_url, secret)
    for process in blanks:
        message = _refused_at_start(process)
        assert "DOWNLOADER_API_KEY" in message and "blank" in message
    message = _refused_at_start(unsendable)
    assert "DOWNLOADER_API_KEY" in message and "s3cr3t" not in message


def test_without_a_key_only_loopback_serves_unless_no_auth_is_given(
    namespace: str, redis_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    message = _refused_at_start(_run_api(namespace, redis_url, None, "--host", "0.0.0.0"))
    assert "DOWNLOADER_API_KEY" in message and "--no-auth" in message

    exposed = start_api("--host", "0.0.0.0", "--no-auth")
    assert exposed.process.poll() is None, exposed.output()
    assert "WARNING" in exposed.output() and "authentication is OFF" in exposed.output()
    assert requests.get(f"{exposed.url}{Q}/status", timeout=30).status_code == 200

    local = start_api()  # 127.0.0.1 by default
    assert local.process.poll() is None, local.output()
    assert "authentication is off" in local.output()
    assert requests.get(f"{local.url}{Q}/status", timeout=30).status_code == 200

    keyed = start_api("--host", "0.0.0.0", "--no-auth", key="k3y")  # the key still holds
    assert "authentication is" not in keyed.output()
    assert requests.get(f"{keyed.url}{Q}/status", timeout=30).status_code == 401
    assert "k3y" not in keyed.output()


def _status_line(sock: socket.socket) -> int:
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(65536)
        assert data, f"the server closed the connection without an answer: {head!r}"
        head += data
    return int(head.split(b" ", 2)[1])


def _post(port: int, headers: dict[str, str], body: Iterator[bytes], answer_first: bool) -> int:
    """POST a body to the enqueue route on a raw socket; the answer's status. With
    `answer_first`, the answer must come before a byte of the body is sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(f"POST {Q}/enqueue HTTP/1.1\r\nHost: api\r\n{fields}\r\n".encode())

        def push() -> None:
            with contextlib.suppress(OSError):  # the server may close once it has answered
                for piece in body:
                    sock.sendall(piece)

        if answer_first:
            status = _status_line(sock)
            push()
            return status
        sender = threading.Thread(target=push)
        sender.start()
        try:
            return _status_line(sock)
        finally:
            sender.join(60)


def _plain(size: int) -> Iterator[bytes]:
    piece = b"x" * (64 << 10)
    for _ in range(size // len(piece)):
        yield piece


def _chunked(size: int) -> Iterator[bytes]:
    for piece in _plain(size):
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def test_large_bodies_are_refused_unread_and_cost_the_server_no_memory(
    start_api: Callable[..., ApiProcess],
) -> None:
    api = start_api(key="k3y")
    key = {"X-API-Key": "k3y"}
    # warm up what every request uses, then measure the peak from here
    assert requests.get(f"{api.url}{Q}/status", headers=key, timeout=30).status_code == 200
    assert requests.post(f"{api.url}{Q}/enqueue", json={}, timeout=30).status_code == 401
    api.reset_peak()
    before = api.memory_kib("VmRSS")

    size = 50 * MiB
    json_type = {"Content-Type": "application/json"}
    sized = {**json_type, "Content-Length": str(size)}
    chunked = {**json_type, "Transfer-Encoding": "chunked"}
    assert _post(api.port, sized, _plain(size), answer_first=True) in (401, 413)
    assert _post(api.port, chunked, _chunked(size), answer_first=True) == 401
    assert _post(api.port, {**sized, **key}, _plain(size), answer_first=True) == 413
    assert _post(api.port, {**chunked, **key}, _chunked(size), answer_first=False) == 413

    grown = api.memory_kib("VmHWM") - before
    assert grown < 20 * 1024, f"the API grew by {grown} KiB"
    assert requests.get(f"{api.url}{Q}/list", headers=key, timeout=30).json()["total"] == 0
    assert "k3y" not in api.output()


# -- batches, hub repos, reads from the indexes, heartbeats, metrics, error answers ----------


def test_a_batch_of_a_thousand_items_is_one_request_under_the_default_body_limit(
    api: TestClient, origin: Origin, root: Path
) -> None:
    secret = "tok-SECRET-batch"
    items = [
        {
            "source": origin.url(f"/files/model-{i:06d}.safetensors"),
            "dest": f"batch/{i % 7}",
            "priority": i % 3 * 10,
            "access_token": secret,
        }
        for i in range(1000)
    ]
    body = json.dumps({"items": items}).encode()
    assert len(body) < MiB  # DOWNLOADER_MAX_BODY_BYTES' default
    answer = api.post(f"{Q}/enqueue", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text[:500]
    assert secret not in answer.text and "access_token" not in answer.text
    made = answer.json()["items"]
    assert [item["source"] for item in made] == [item["source"] for item in items]
    assert [item["priority"] for item in made] == [item["priority"] for item in items]
    assert [item["dest"] for item in made] == [str(root / item["dest"]) for item in items]
    assert {item["status"] for item in made} == {"pending"}
    assert api.get(f"{Q}/status").json()["queue"]["pending"] == 1000

    listed, params = [], {"limit": 300}
    while True:
        page = api.get(f"{Q}/list", params=params).json()
        assert page["total"] == 1000
        listed += [item["item_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert listed == [item["item_id"] for item in made]
    assert secret not in json.dumps(api.get(f"{Q}/list", params={"limit": 1000}).json())
    assert origin.requests == []


@pytest.mark.slow
def test_a_page_of_the_list_holds_up_to_ten_thousand_items(api: TestClient, root: Path) -> None:
    """`/list?limit=10000` (a job queue's callers ask for 1,000 and more to get all jobs at
    once); past it is a 422, and the next page starts after the last item."""
    url = "http://127.0.0.1:9/f.bin"  # nothing runs: no worker takes the queue
    batch = {"items": [{"source": url, "dest": "d"}] * MAX_PAGE}
    made = [item["item_id"] for item in enqueue(api, batch)]
    made += [item["item_id"] for item in enqueue(api, {"source": url, "dest": "d"})]
    page = api.get(f"{Q}/list", params={"limit": MAX_PAGE}).json()
    assert [item["item_id"] for item in page["items"]] == made[:MAX_PAGE]
    assert page["total"] == MAX_PAGE + 1 and page["next_cursor"] == made[MAX_PAGE - 1]
    rest = api.get(f"{Q}/list", params={"limit": MAX_PAGE, "cursor": page["next_cursor"]})
    assert [item["item_id"] for item in rest.json()["items"]] == made[MAX_PAGE:]
    assert rest.json()["next_cursor"] is None
    too_many = api.get(f"{Q}/list", params={"limit": MAX_PAGE + 1})
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["loc"] == ["query", "limit"]


def test_a_batch_is_downloaded_and_a_bad_item_refuses_the_whole_batch(
    api: TestClient, worker: DownloadQueueService, origin: Origin, root: Path, tmp_path: Path
) -> None:
    digests = [origin.add(f"b{i}.bin", os.urandom(100_000 + i)) for i in range(3)]
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    bad = [
        {"source": origin.url("/files/b0.bin"), "dest": "escape"},
        {"source": origin.url("/files/b0.bin"), "dest": "ok", "access_token": "SECRET\nX: 1"},
    ]
    for wrong in bad:
        answer = api.post(
            f"{Q}/enqueue",
            json={"items": [{"source": origin.url("/files/b1.bin"), "dest": "ok"}, wrong]},
        )
        assert answer.status_code == 422 and "SECRET" not in answer.text, answer.text
    assert api.get(f"{Q}/status").json()["queue"]["total"] == 0

    items = [{"source": origin.url(f"/files/b{i}.bin"), "dest": f"out/{i}"} for i in range(3)]
    items[1]["sha256"] = digests[1]
    made = enqueue(api, {"items": items})
    for i, item in enumerate(made):
        done = finished(api, item["item_id"])
        assert done["status"] == "completed", done
        assert hashlib.sha256((root / f"out/{i}/b{i}.bin").read_bytes()).hexdigest() == digests[i]
    assert not list((tmp_path / "outside").iterdir())


def test_a_hub_repo_is_queued_pinned_and_verified_and_hub_refusals_are_4xx(
    hub: HubOrigin,  # noqa: F811 (the fixture of tests/test_hub.py)
    api: TestClient,
    worker: DownloadQueueService,
    root: Path,
) -> None:
    files = repo_files()
    commit = hub.add_repo(REPO, files, private=True)
    hub.add_repo("acme/gated", repo_files(), gated=True)
    body = {
        "repo": REPO,
        "dest": "models",
        "allow_patterns": ["*.safetensors", "*.json"],
        "ignore_patterns": ["text_encoder/"],
        "access_token": hub.token,
    }
    elsewhere = {**body, "endpoint": "http://127.0.0.1:9"}  # the hub is the server's setting
    refused = api.post(f"{Q}/enqueue", json=elsewhere)
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["type"] == "extra_forbidden" and error["loc"] == ["body", "repo", "endpoint"]
    parent, *parts = enqueue(api, body)
    assert parent["kind"] == "multifile" and parent["revision"] == commit
    assert parent["part_ids"] == [part["item_id"] for part in parts] and len(parts) == 4
    assert all(f"/{REPO}/resolve/{commit}/" in part["source"] for part in parts)
    hub.push(REPO, {path: os.urandom(len(data)) for path, data in files.items()})
    done = finished(api, parent["item_id"])
    assert done["status"] == "completed", done
    base = root / "models" / "tiny-diffusion"
    assert done["download_path"] == str(base)
    wanted = {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }
    assert {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()} == wanted
    for path in wanted:
        assert hashlib.sha256((base / path).read_bytes()).hexdigest() == digest(files[path])
    assert {s.authorization for s in hub.hub_seen("hub")} == {f"Bearer {hub.token}"}
    assert hub.hub_seen("cdn") and {s.authorization for s in hub.hub_seen("cdn")} == {None}
    shown = json.dumps(
        [api.get(f"{Q}/list").json(), api.get(f"{Q}/i/{parts[0]['item_id']}").json()]
    )
    assert hub.token not in shown

    refusals = [
        ({"repo": "acme/gated", "dest": "g"}, 403, "model acme/gated is gated"),
        ({"repo": REPO, "dest": "p"}, 404, f"model {REPO} was not found"),  # private, no token
        ({"repo": "acme/nothing", "dest": "n", "access_token": hub.token}, 404, "not found"),
        ({"repo": REPO, "dest": "r", "access_token": hub.token, "revision": "v9"}, 404, "'v9'"),
        (
            {"repo": REPO, "dest": "a", "access_token": hub.token, "allow_patterns": ["*.gguf"]},
            404,
            "no file",
        ),
    ]
    for refused, code, text in refusals:
        answer = api.post(f"{Q}/enqueue", json=refused)
        assert answer.status_code == code and text in answer.json()["detail"], answer.text
        assert hub.token not in answer.text
    hub.failing = True
    down = api.post(f"{Q}/enqueue", json={"repo": REPO, "dest": "d", "access_token": hub.token})
    assert down.status_code == 502 and "HTTP 503" in down.json()["detail"]
    assert api.get(f"{Q}/status").json()["queue"]["total"] == 5


def test_a_multi_file_jobs_bandwidth_holds_each_part_to_it_and_a_bad_one_is_named(
    origin: Origin,
    api: TestClient,
    worker: DownloadQueueService,
    root: Path,
) -> None:
    data = os.urandom(MiB)
    sha = origin.add("paced.bin", data)
    parts = [{"url": origin.url("/files/paced.bin"), "path": f"p{i}.bin"} for i in range(2)]
    bad = api.post(f"{Q}/enqueue", json={"parts": parts, "dest": "d", "bandwidth": "fast"})
    assert bad.status_code == 422, bad.text
    (error,) = bad.json()["errors"]
    assert error["loc"] == ["body", "parts", "bandwidth"] and "not a rate" in error["msg"], error
    parent, *items = enqueue(api, {"parts": parts, "dest": "paced", "bandwidth": "256K"})
    assert [worker.admin.record(p["item_id"]).bandwidth for p in items] == [256 << 10] * 2
    done = finished(api, parent["item_id"], timeout=120)
    assert done["status"] == "completed", done
    for i in range(2):
        assert hashlib.sha256((root / f"paced/p{i}.bin").read_bytes()).hexdigest() == sha
        part = api.get(f"{Q}/i/{items[i]['item_id']}").json()
        took = datetime.fromisoformat(part["completed_at"]) - datetime.fromisoformat(
            part["started_at"]
        )
        # A job's bucket starts with one slice (32 KiB at 256 KiB/s), then refills at the
        # rate: 1 MiB is not all granted before 3.9 s. A lower bound only: a busy machine
        # is slower, never faster; unpaced, a MiB from loopback takes milliseconds.
        assert took.total_seconds() >= 3.5, took


def test_a_hub_repos_bandwidth_is_each_parts_own_rate(
    hub: HubOrigin,  # noqa: F811 (the fixture of tests/test_hub.py)
    api: TestClient,
    make_service: Callable[..., DownloadQueueService],
) -> None:
    hub.add_repo(REPO, repo_files())
    body = {"repo": REPO, "dest": "models", "allow_patterns": ["*.json"]}
    bad = api.post(f"{Q}/enqueue", json={**body, "bandwidth": "1X"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"][-1] == "bandwidth"
    _, *parts = enqueue(api, {**body, "bandwidth": "2MiB"})
    admin = make_service(start_worker=False).admin
    assert parts and {admin.record(p["item_id"]).bandwidth for p in parts} == {2 << 20}


def test_lists_by_status_and_metrics_read_the_indexes_and_agree_with_status(
    api: TestClient, make_service: Callable[..., DownloadQueueService], origin: Origin
) -> None:
    origin.add("tiny.bin", b"tiny")
    absent = [{"source": origin.url(f"/files/absent{i}"), "dest": f"a{i}"} for i in range(6)]
    ids = [item["item_id"] for item in enqueue(api, {"items": absent})]
    for item_id in ids[::2]:  # no worker yet: cancelled while pending
        assert api.post(f"{Q}/i/{item_id}/cancel").json()["status"] == "canceled"
    (tiny,) = enqueue(api, {"source": origin.url("/files/tiny.bin"), "dest": "t"})
    other = "/api/v1/queue/nobody"
    held = enqueue(api, {"items": absent[:4]}, queue=other)  # nobody takes queue `nobody`
    api.post(f"{other}/i/{held[0]['item_id']}/cancel").raise_for_status()
    make_service(start_worker=True, max_parallel_dl=2)
    assert finished(api, tiny["item_id"])["status"] == "completed"
    for item_id in ids[1::2]:
        assert finished(api, item_id)["status"] == "failed"

    failed = api.get(f"{Q}/list", params={"status": "failed", "limit": 2}).json()
    assert [i["item_id"] for i in failed["items"]] == ids[1:4:2] and failed["total"] == 3
    rest = api.get(f"{Q}/list", params={"status": "failed", "cursor": failed["next_cursor"]})
    assert [i["item_id"] for i in rest.json()["items"]] == [ids[5]]
    assert rest.json()["next_cursor"] is None
    skipped = api.get(f"{Q}/list", params={"status": "failed", "offset": 1, "limit": 1}).json()
    assert [i["item_id"] for i in skipped["items"]] == [ids[3]]
    canceled = api.get(f"{Q}/list", params={"status": "canceled"}).json()
    assert [i["item_id"] for i in canceled["items"]] == ids[::2] and canceled["total"] == 3
    assert [i["item_id"] for i in api.get(f"{other}/list?status=pending").json()["items"]] == [
        item["item_id"] for item in held[1:]
    ]

    answer = api.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    jobs = {
        (s.labels["queue"], s.labels["status"]): s.value
        for s in families["downloader_jobs"].samples
    }
    store_word = {"pending": "waiting", "in_progress": "running", "completed": "completed"}
    # `nobody` is neither configured nor consumed: its figures are summed under `other`.
    assert {queue for queue, _ in jobs} == {"default", "other"}
    for queue_id, label in (("default", "default"), ("nobody", "other")):
        counts = api.get(f"/api/v1/queue/{queue_id}/status").json()["queue"]
        for word, status in store_word.items():
            assert jobs[(label, status)] == counts[word], (queue_id, word)
        assert jobs[(label, "error")] == counts["failed"]
        assert jobs[(label, "cancelled")] == counts["canceled"]
        assert sum(v for (q, _), v in jobs.items() if q == label) == counts["total"]
    ended = {
        (s.labels["queue"], s.labels["outcome"]): s.value
        for s in families["downloader_jobs_ended"].samples
    }
    assert ended[("default", "completed")] == 1 and ended[("default", "error")] == 3
    assert ended[("default", "cancelled")] == 3 and ended[("other", "cancelled")] == 1
    (downloaded,) = families["downloader_downloaded_bytes"].samples
    assert downloaded.value == len(b"tiny")
    (live,) = families["downloader_live_workers"].samples
    assert live.value == api.get("/health").json()["workers"] == 1


def test_worker_presence_comes_from_heartbeats_per_queue(
    api: TestClient,
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    other = make_service(start_worker=True, queue_id="other")
    health = api.get("/health")
    assert health.status_code == 200 and health.json()["workers"] == 1
    (name,) = health.json()["worker_names"]
    assert api.get(f"{Q}/status").json()["processor"]["workers"] == []
    assert api.get("/api/v1/queue/other/status").json()["processor"]["workers"] == [name]

    process = spawn_worker("w1")  # `downloader worker`, on the default queue
    (beside,) = set(api.get("/health").json()["worker_names"]) - {name}
    assert beside.startswith("w1@")
    assert api.get(f"{Q}/status").json()["processor"]["workers"] == [beside]
    process.stop()
    other.close()
    wait_until(lambda: api.get("/health").status_code == 503, timeout=30)
    assert not api.get(f"{Q}/status").json()["processor"]["is_started"]


SECRET = "SECRET-token-0123456789"


@pytest.mark.parametrize(
    "body",
    [
        {"source": "not a url", "dest": "d", "access_token": SECRET},
        {"dest": "d", "access_token": SECRET},
        {"source": "http://x/a", "dest": ["d"], "access_token": SECRET},
        {"source": "http://x/a", "dest": "d", "access_token": [SECRET]},
        {"items": [{"source": "http://x/a", "access_token": SECRET}]},
        {"items": [{"source": "http://x/a", "dest": "d", "access_token": SECRET, "sha256": "x"}]},
        {"repo": "acme/model", "access_token": SECRET},
        {"parts": [{"url": "http://x/b", "path": "../b"}], "dest": "d", "access_token": SECRET},
        '{"source": "http://x/a", "dest": "d", "access_token": "' + SECRET + '"',
    ],
)
def test_a_422_repeats_no_part_of_the_body(api: TestClient, body: dict | str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    answer = api.post(f"{Q}/enqueue", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert SECRET not in answer.text
    body = answer.json()  # one shape: a line, and the fields at fault (none from the service)
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str), body
    for error in body["errors"]:
        assert set(error) == {"type", "loc", "msg"} and error["msg"]


def test_the_api_follows_no_job_it_queued(
    api: TestClient, namespace: str, redis_url: str, origin: Origin
) -> None:
    """An enqueue-only front end keeps nothing per job: no subscription stays behind."""
    origin.add("f.bin", b"x")
    items = enqueue(api, {"items": [{"source": origin.url("/files/f.bin"), "dest": "f"}] * 20})
    client = redis.Redis.from_url(redis_url)
    channels = [f"{namespace}:job-events:{item['item_id']}" for item in items]
    assert [count for _, count in client.pubsub_numsub(*channels)] == [0] * len(channels)
