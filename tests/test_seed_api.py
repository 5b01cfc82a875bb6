"""The seed's own test cases, with the seed's calls unchanged, against a real Redis and worker.

Code written for InvokeAI's download queue tests itself with a `requests_session` whose
mounted test adapters serve canned answers, header values as integers included (as
`requests_testadapter` does). The same calls must work here; only the assertions differ
where this design differs (a cancelled job is `error` with `cancelled` set, as the seed's
text says). The rest of the file holds the seed-API cases the issues found: services opened
and closed many times in one process, and the live parts of a multi-file job.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from pydantic import AnyHttpUrl
from requests import PreparedRequest, Response, Session
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from downloader import (
    DownloadJob,
    DownloadJobStatus,
    DownloadQueueService,
    MultiFileDownloadJob,
    RemoteModelFile,
)
from downloader.client.lifecycle import _open_services
from tests.conftest import WorkerProcess
from tests.origin import Origin
from tests.test_queue import sha256


class TestAdapter(BaseAdapter):
    """Serves one canned answer for every request, as `requests_testadapter.TestAdapter` does:
    the headers go into the response exactly as given, integers and all."""

    __test__ = False  # not a pytest class

    def __init__(
        self, body: bytes, status: int = 200, headers: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.body, self.status, self.headers = body, status, headers or {}

    def send(self, request: PreparedRequest, stream: bool = False, **kwargs: Any) -> Response:
        import io

        response = Response()
        response.status_code = self.status
        response.reason = HTTPStatus(self.status).phrase
        response.headers = CaseInsensitiveDict(self.headers)
        response.raw = io.BytesIO(self.body)
        response.url = request.url or ""
        response.request = request
        response.connection = self
        return response

    def close(self) -> None:
        pass


class TestEventService:
    """The seed's event bus as its tests use it: records every event in order."""

    __test__ = False

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_name: str, payload: dict[str, Any]) -> None:
        self.events.append((event_name, payload))


@pytest.fixture
def session() -> Session:
    """The seed's session: three models, one without Content-Length, one not found."""
    sess = Session()
    for i in ["12345", "9999", "54321"]:
        content = b"I am a safetensors file " + bytearray(i, "utf-8") * 1000
        sess.mount(
            f"http://www.civitai.com/models/{i}",
            TestAdapter(
                content,
                headers={
                    "Content-Length": len(content),
                    "Content-Disposition": f'filename="mock{i}.safetensors"',
                },
            ),
        )
    sess.mount(
        "http://www.civitai.com/models/missing",
        TestAdapter(
            b"Missing content length", headers={"Content-Disposition": 'filename="missing.txt"'}
        ),
    )
    sess.mount("http://www.civitai.com/models/broken", TestAdapter(b"Not found", status=404))
    return sess


@pytest.fixture
def seed_queues(namespace: str) -> Any:
    """Closes the services a seed test opened the seed's way, even when an assertion fails."""
    yield
    for queue in list(_open_services):
        queue.close()


pytestmark = pytest.mark.usefixtures("seed_queues")


def test_basic_queue_download(tmp_path: Path, session: Session) -> None:
    events = set()

    def event_handler(job: DownloadJob) -> None:
        events.add(job.status)

    queue = DownloadQueueService(requests_session=session)
    queue.start()
    job = queue.download(
        source=AnyHttpUrl("http://www.civitai.com/models/12345"),
        dest=tmp_path,
        on_start=event_handler,
        on_progress=event_handler,
        on_complete=event_handler,
        on_error=event_handler,
    )
    assert isinstance(job, DownloadJob)
    assert isinstance(job.id, int)
    queue.join()
    assert job.status == DownloadJobStatus("completed")
    assert Path(tmp_path, "mock12345.safetensors").exists()
    assert events == {DownloadJobStatus.RUNNING, DownloadJobStatus.COMPLETED}
    queue.stop()


def test_errors(tmp_path: Path, session: Session) -> None:
    queue = DownloadQueueService(requests_session=session)
    queue.start()
    for bad_url in [
        "http://www.civitai.com/models/broken",
        "http://www.civitai.com/models/missing",
    ]:
        queue.download(AnyHttpUrl(bad_url), dest=tmp_path)
    queue.join()
    jobs = queue.list_jobs()
    assert len(jobs) == 2
    jobs_dict = {str(x.source): x for x in jobs}
    assert jobs_dict["http://www.civitai.com/models/broken"].status == DownloadJobStatus.ERROR
    assert jobs_dict["http://www.civitai.com/models/broken"].error_type == "HTTPError(Not Found)"
    assert jobs_dict["http://www.civitai.com/models/missing"].status == DownloadJobStatus.COMPLETED
    missing = jobs_dict["http://www.civitai.com/models/missing"]
    assert missing.bytes == len(b"Missing content length")
    assert Path(tmp_path, "missing.txt").read_bytes() == b"Missing content length"
    queue.stop()


def test_event_bus(tmp_path: Path, session: Session) -> None:
    event_bus = TestEventService()
    queue = DownloadQueueService(requests_session=session, event_bus=event_bus)
    queue.start()
    queue.download(source=AnyHttpUrl("http://www.civitai.com/models/12345"), dest=tmp_path)
    queue.join()
    names = [name for name, _ in event_bus.events]
    assert names[0] == "download_started" and names[-1] == "download_complete"
    assert set(names[1:-1]) == {"download_progress"}
    stamps = [payload["timestamp"] for _, payload in event_bus.events]
    assert stamps == sorted(stamps)
    progress = event_bus.events[-2][1]
    assert 0 < progress["current_bytes"] <= progress["total_bytes"]
    assert event_bus.events[-1][1]["total_bytes"] == 5024  # the seed session's mock12345
    assert all(payload["source"] for _, payload in event_bus.events)

    event_bus.events = []
    queue.download(source=AnyHttpUrl("http://www.civitai.com/models/broken"), dest=tmp_path)
    queue.join()
    assert [name for name, _ in event_bus.events] == ["download_error"]
    payload = event_bus.events[0][1]
    assert payload["error_type"] == "HTTPError(Not Found)"
    assert re.search(r"requests.exceptions.HTTPError: Not Found", payload["error"])
    queue.stop()


def test_broken_callbacks(tmp_path: Path, session: Session) -> None:
    queue = DownloadQueueService(requests_session=session)
    queue.start()
    callback_ran = False

    def broken_callback(job: DownloadJob) -> None:
        nonlocal callback_ran
        callback_ran = True
        print(1 / 0)  # deliberate error here

    job = queue.download(
        source=AnyHttpUrl("http://www.civitai.com/models/12345"),
        dest=tmp_path,
        on_progress=broken_callback,
    )
    queue.join()
    assert job.status == DownloadJobStatus.COMPLETED
    assert Path(tmp_path, "mock12345.safetensors").exists()
    assert callback_ran
    queue.stop()


def test_cancel(tmp_path: Path, session: Session) -> None:
    event_bus = TestEventService()
    queue = DownloadQueueService(requests_session=session, event_bus=event_bus)
    queue.start()
    cancelled = False

    def slow_callback(job: DownloadJob) -> None:
        time.sleep(2)

    def cancelled_callback(job: DownloadJob) -> None:
        nonlocal cancelled
        cancelled = True

    job = queue.download(
        source=AnyHttpUrl("http://www.civitai.com/models/12345"),
        dest=tmp_path,
        on_start=slow_callback,
        on_cancelled=cancelled_callback,
    )
    queue.cancel_job(job)
    queue.join()
    assert job.status == DownloadJobStatus.ERROR and job.cancelled
    assert cancelled
    name, payload = event_bus.events[-1]
    assert name == "download_cancelled"
    assert payload["source"] == "http://www.civitai.com/models/12345"
    queue.stop()


def test_services_open_and_close_many_times_in_one_process(
    origin: Origin, tmp_path: Path, redis_url: str
) -> None:
    """A notebook or a fixture reopens its queue; the last service's connections were closed
    with it, and the next one must not inherit them."""
    digest = origin.add("again.bin", os.urandom(2048))
    for round_ in range(3):
        with DownloadQueueService(redis_url=redis_url) as queue:
            job = queue.download(origin.url("/files/again.bin"), tmp_path / str(round_))
            queue.wait_for_job(job, timeout=30)
            assert job.status == DownloadJobStatus.COMPLETED, job.error
            assert sha256(job.download_path) == digest


def test_two_services_on_one_url_close_independently(
    make_service: Callable[..., DownloadQueueService], origin: Origin, tmp_path: Path
) -> None:
    origin.add("left.bin", b"left")
    first = make_service(start_worker=False)
    second = make_service()
    first.close()
    job = second.download(origin.url("/files/left.bin"), tmp_path)
    second.wait_for_job(job, timeout=30)
    assert (tmp_path / "left.bin").read_bytes() == b"left"


def test_live_multifile_parts_follow_their_parts(
    make_service: Callable[..., DownloadQueueService],
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    tmp_path: Path,
) -> None:
    """The parts run in a worker process of their own; the client's live parts follow them."""
    spawn_worker("parts", concurrency=2)
    service = make_service(start_worker=False)
    for name in ("a", "b"):
        origin.add(f"{name}.bin", os.urandom(100_000))
    job = service.multifile_download(
        [
            RemoteModelFile(url=origin.url(f"/files/{name}.bin"), path=f"m/{name}.bin")
            for name in ("a", "b")
        ],
        tmp_path,
    )
    assert isinstance(job, MultiFileDownloadJob)
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED
    for part in job.download_parts:
        assert part.status == DownloadJobStatus.COMPLETED
        assert part.bytes == part.total_bytes == 100_000
        assert part.download_path == tmp_path / "m" / Path(part.download_path or "").name


def test_the_simple_example_verbatim_saves_into_a_directory_it_creates(
    tmp_path: Path, origin: Origin, make_service: Callable[..., DownloadQueueService]
) -> None:
    """The seed's Simple Example names `dest='/tmp/downloads'`, a directory that does not
    exist yet, for several URLs: a missing `dest` whose last component has no suffix is a
    directory, created; one with a suffix stays the file's own path."""
    origin.add("a.png", b"first image")
    origin.add("b.png", b"second image")
    origin.add("c.bin", b"a file")
    downloads, named = tmp_path / "downloads", tmp_path / "saved" / "model.v2.bin"
    queue = make_service(max_parallel_dl=2)
    jobs = [
        queue.download(source=origin.url(f"/files/{name}"), dest=str(downloads))
        for name in ("a.png", "b.png")
    ]
    single = queue.download(source=origin.url("/files/c.bin"), dest=named)
    queue.join()
    assert [job.status for job in [*jobs, single]] == [DownloadJobStatus.COMPLETED] * 3
    assert sorted(p.name for p in downloads.iterdir()) == ["a.png", "b.png"]
    assert (downloads / "a.png").read_bytes() == b"first image"
    assert (downloads / "b.png").read_bytes() == b"second image"
    assert [job.download_path for job in jobs] == [downloads / "a.png", downloads / "b.png"]
    assert named.read_bytes() == b"a file" and single.download_path == named
