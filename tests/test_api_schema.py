"""The REST API tried with what its own OpenAPI document allows and does not: schemathesis
generates requests for every operation (valid ones and broken ones, a bounded number each,
the same ones every run) and sends them, with the key, to a real server on a real Redis and a
local hub. Whatever a caller sends, the answer is never a 5xx, its status is one the document
declares for that operation, and its body and content type are the declared ones: the
document is the API."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from downloader import DownloadQueueService
from downloader.api import build_api
from tests.conftest import keys_matching
from tests.redis_server import RedisServer
from tests.test_api import _free_port
from tests.test_hub import local_hub
from tests.test_queue import wait_until

KEY = "schema-key"
HEADERS = {"X-API-Key": KEY}
BODY_CAP = 64 << 10
"""The served API's body cap: the largest batch the document allows (10,000 items, as the
coverage phase sends it) is a declared 413 here, not minutes of queueing and clearing."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[str]:
    """`downloader api` as an operator runs it (the key set), on uvicorn in a thread, with a
    live worker (so `/health` is 200) on a queue of its own (so it downloads nothing), and
    repos resolved on a local hub, never on the internet: one for every operation's cases
    (what one case leaves in its namespace is a state the next must answer right in too)."""
    home = tmp_path_factory.mktemp("schema")
    namespace = f"dltest-{uuid.uuid4().hex[:10]}"
    with pytest.MonkeyPatch.context() as env, local_hub(env, home):
        env.setenv("DOWNLOADER_NAMESPACE", namespace)
        env.setenv("DOWNLOADER_REDIS_URL", redis_url)
        env.setenv("DOWNLOADER_API_KEY", KEY)
        env.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(home / "root"))
        env.setenv("DOWNLOADER_MAX_BODY_BYTES", str(BODY_CAP))
        (home / "root").mkdir()
        worker = DownloadQueueService(
            redis_url=redis_url, start_worker=True, max_parallel_dl=1, queue_id="idle-worker"
        )
        server = uvicorn.Server(
            uvicorn.Config(
                build_api(keep_alive=0.2), host="127.0.0.1", port=_free_port(), log_level="warning"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started, timeout=10)
            yield f"http://127.0.0.1:{server.config.port}"
        finally:
            server.should_exit = True
            thread.join(10)
            worker.close()
            client = redis.Redis.from_url(redis_url)
            for found in keys_matching(client, f"{namespace}:*"):
                client.delete(found)


def _document() -> dict:
    """The OpenAPI document the served app answers, made by the same factory with the same
    key (a module-level schema: schemathesis's fixture-based loading fails on pytest 9)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOWNLOADER_API_KEY", KEY)
        return build_api().openapi()


schema = schemathesis.openapi.from_dict(_document())


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_declared_and_never_a_server_error(
    served: str, case: schemathesis.Case
) -> None:
    if case.path.endswith("/events"):
        case.validate_response(_stream_start(case, served), checks=CHECKS, headers=HEADERS)
    else:
        case.call_and_validate(base_url=served, headers=HEADERS, checks=CHECKS, timeout=30)


def _stream_start(case: schemathesis.Case, served: str) -> schemathesis.Response:
    """The answer to an events request as far as it is an answer: a refusal whole, and of an
    event stream (which never ends) its status, headers and first frame (`: subscribed`,
    sent as soon as the stream listens), with no clock involved."""
    sent = case.as_transport_kwargs(base_url=served, headers=HEADERS)
    with requests.request(**sent, stream=True, timeout=30) as answer:
        streaming = answer.status_code == 200
        body = next(answer.iter_content(None), b"") if streaming else answer.content
        headers = {name: answer.raw.headers.getlist(name) for name in answer.raw.headers}
    if streaming:
        assert body.startswith(b": subscribed"), body
    return schemathesis.Response(
        status_code=answer.status_code,
        headers=headers,
        content=body,
        request=answer.request,
        elapsed=answer.elapsed.total_seconds(),
        verify=True,
        stream_cut_short=streaming,
    )


SECRET = "s3cr3t-value"
"""A value each refused request carries: no answer may repeat it."""


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str) -> Iterator[TestClient]:
    """The API with a key and a body cap of 4 KiB, in-process."""
    monkeypatch.setenv("DOWNLOADER_API_KEY", KEY)
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path))
    monkeypatch.setenv("DOWNLOADER_MAX_BODY_BYTES", "4096")
    with TestClient(build_api()) as client:
        yield client


def test_every_error_has_the_one_shape_and_repeats_no_input(keyed: TestClient) -> None:
    """401, 404, 413 (a declared length and a chunked body), 422 from validation and from
    the server's own checks, 400: all `{"detail": str, "errors": [...]}`, none quoting what
    was sent; a 422's `errors` are the fields at fault."""
    q = "/api/v1/queue/q"
    json_type = {**HEADERS, "Content-Type": "application/json"}
    big = json.dumps({"source": "http://x/a", "dest": "d", "access_token": SECRET * 500})
    answers = {
        "no key": (401, keyed.get(f"{q}/list", params={"status": SECRET})),
        "no item": (404, keyed.get(f"{q}/i/12345", headers=HEADERS)),
        "no item to cancel": (404, keyed.post(f"{q}/i/12345/cancel", headers=HEADERS)),
        "sized": (413, keyed.post(f"{q}/enqueue", content=big, headers=json_type)),
        "sized, to a read": (413, keyed.request("GET", f"{q}/list", content=big, headers=HEADERS)),
        "chunked": (
            413,
            keyed.post(f"{q}/enqueue", content=iter([big.encode()]), headers=json_type),
        ),
        "query": (422, keyed.get(f"{q}/list", params={"status": SECRET}, headers=HEADERS)),
        "queue id": (422, keyed.get(f"/api/v1/queue/{SECRET}!/list", headers=HEADERS)),
        "absolute dest": (
            422,
            keyed.post(
                f"{q}/enqueue", json={"source": "http://x/a", "dest": f"/{SECRET}"}, headers=HEADERS
            ),
        ),
        "leaving dest": (
            422,
            keyed.post(
                f"{q}/enqueue",
                json={"source": "http://x/a", "dest": f"../{SECRET}"},
                headers=HEADERS,
            ),
        ),
        "part path": (
            422,
            keyed.post(
                f"{q}/enqueue",
                json={"parts": [{"url": "http://x/a", "path": f"a/../../{SECRET}"}], "dest": "d"},
                headers=HEADERS,
            ),
        ),
        "two forms": (
            422,
            keyed.post(
                f"{q}/enqueue",
                json={"source": "http://x/a", "repo": SECRET, "dest": "d"},
                headers=HEADERS,
            ),
        ),
        "not utf-8": (
            400,
            keyed.post(f"{q}/enqueue", content=b"{\x80" + SECRET.encode(), headers=json_type),
        ),
    }
    for case, (status, answer) in answers.items():
        assert answer.status_code == status, (case, answer.text)
        body = answer.json()
        assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str), case
        assert body["detail"] and SECRET not in answer.text, (case, answer.text)
        for error in body["errors"]:
            assert set(error) == {"type", "loc", "msg"}, (case, error)
        assert bool(body["errors"]) == (status == 422 and case != "leaving dest"), (case, body)
    (error,) = answers["part path"][1].json()["errors"]
    assert error["loc"] == ["body", "parts", 0, "path"], error
    (error,) = answers["two forms"][1].json()["errors"]
    assert error["type"] == "one_form" and error["loc"] == ["body"], error


def test_a_redis_that_refuses_is_a_503_in_the_one_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that refuses every write (full: `maxmemory` with `noeviction`), of the test's
    own: every route answers a declared 503 `ApiError` at once, saying what and not how."""
    with RedisServer("--maxmemory", "1", "--maxmemory-policy", "noeviction") as full:
        monkeypatch.setenv("DOWNLOADER_REDIS_URL", full.url)
        monkeypatch.setenv("DOWNLOADER_NAMESPACE", f"dltest-{uuid.uuid4().hex[:10]}")
        monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path))
        monkeypatch.setenv("DOWNLOADER_API_KEY", KEY)  # as `served` has it while it runs
        with TestClient(build_api(), headers=HEADERS) as api:
            status = api.get("/api/v1/queue/q/status")
            queued = api.post("/api/v1/queue/q/enqueue", json={"source": "http://x/a", "dest": "d"})
            document = api.get("/openapi.json").json()
    for answer in (status, queued):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        body = answer.json()
        assert body["errors"] == [] and "Redis refused or did not answer" in body["detail"]
        assert "OutOfMemoryError" in body["detail"] and "marker" not in body["detail"]
    for operations in document["paths"].values():
        assert all("503" in operation["responses"] for operation in operations.values())
