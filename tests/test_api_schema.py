"""The REST API tried with what its own OpenAPI document allows and does not: schemathesis
generates requests for every operation (valid ones and broken ones, a bounded number each,
the same ones every run) and sends them, with the key, to a real server on a real Redis and a
local hub. Whatever a caller sends, the answer is never a 5xx, its status is one the document
declares for that operation, and its body and content type are the declared ones: the
document is the API."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from downloader import DownloadQueueService
from downloader.api import build_api
from tests.hub_origin import HubOrigin
from tests.test_api import _free_port
from tests.test_hub import hub  # noqa: F401 (a fixture)
from tests.test_queue import wait_until

KEY = "schema-key"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture
def served(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    namespace: str,
    hub: HubOrigin,  # noqa: F811 (repos resolve on the local hub, never on the internet)
    make_service: Callable[..., DownloadQueueService],
) -> Iterator[str]:
    """`downloader api` as an operator runs it (the key set), on uvicorn in a thread, with a
    live worker (so `/health` is 200) on a queue of its own (so it downloads nothing)."""
    make_service(start_worker=True, max_parallel_dl=1, queue_id="idle-worker")
    monkeypatch.setenv("DOWNLOADER_API_KEY", KEY)
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    app = build_api(keep_alive=0.2)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning")
    )

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


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
