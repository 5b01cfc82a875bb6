"""The operator's page (`/`), in a real browser: Playwright driving Debian's Chromium against a
real `downloader api` and a real `downloader worker` on the test's namespace, downloading from
the local origin. The tests assert what the page shows and what its buttons do to the queue.

Each test has its own browser context, namespace, API and worker, so tests run side by side under
xdist. Nothing waits a fixed time: every check is Playwright's auto-waiting `expect` (or
`wait_for_function`) with a deadline generous enough for a loaded machine.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from downloader.jobs.record import JobRecord
from downloader.store.jobs import JobStore
from tests.children import stop_process
from tests.conftest import WorkerProcess
from tests.hub_origin import HubOrigin
from tests.origin import Origin
from tests.test_api import ApiProcess, api, root, start_api  # noqa: F401 (fixtures)
from tests.test_hub import REPO, digest, hub, repo_files  # noqa: F401 (hub: a fixture)
from tests.wheel import ROOT, build_wheel

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY = "page-test-key"
KEY_ITEM = "downloader.apiKey"
WAIT = 60_000
"""Milliseconds any one thing the page should show may take on a loaded machine."""
KiB, MiB = 1 << 10, 1 << 20

expect.set_options(timeout=WAIT)
pytestmark = pytest.mark.timeout(240)  # an API, a worker and a browser context in each test


@dataclass
class Fleet:
    api: ApiProcess
    worker: WorkerProcess | None
    origin: Origin
    root: Path
    store: JobStore

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """The REST API with the key, as a script would call it; answers the JSON."""
        answer = requests.request(
            method, f"{self.api.url}{path}", headers={"X-API-Key": KEY}, timeout=30, **kwargs
        )
        assert answer.ok, answer.text
        return answer.json()

    def enqueue(self, body: dict[str, Any], queue: str = "default") -> list[dict[str, Any]]:
        return self.rest("POST", f"/api/v1/queue/{queue}/enqueue", json=body)["items"]


def _fleet(
    start: Callable[..., ApiProcess],
    spawn_worker: Callable[..., WorkerProcess] | None,
    origin: Origin,
    downloads: Path,
    namespace: str,
    redis_url: str,
) -> Iterator[Fleet]:
    """A keyed API and, with `spawn_worker`, one worker (`w1`, two downloads at once) on the
    `default` queue, started side by side (each takes seconds on a loaded machine)."""
    with ThreadPoolExecutor(2) as pool:
        started = pool.submit(start, key=KEY)
        spawned = pool.submit(spawn_worker, "w1", concurrency=2) if spawn_worker else None
        api, worker = started.result(), spawned.result() if spawned else None
    client = redis.Redis.from_url(redis_url)
    yield Fleet(api, worker, origin, downloads, JobStore(client, namespace))
    client.close()


@pytest.fixture
def fleet(
    start_api: Callable[..., ApiProcess],  # noqa: F811
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    root: Path,  # noqa: F811
    namespace: str,
    redis_url: str,
) -> Iterator[Fleet]:
    """The API and a worker."""
    yield from _fleet(start_api, spawn_worker, origin, root, namespace, redis_url)


@pytest.fixture
def bare(
    start_api: Callable[..., ApiProcess],  # noqa: F811
    origin: Origin,
    root: Path,  # noqa: F811
    namespace: str,
    redis_url: str,
) -> Iterator[Fleet]:
    """The API and no worker: jobs stay where they are put."""
    yield from _fleet(start_api, None, origin, root, namespace, redis_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright (its own browser download needs the internet).
    One per module: starting it took seconds per test, and each test's page gets a context of
    its own (its own storage, cookies and key), so tests share nothing through it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield found
        found.close()


@dataclass
class Seen:
    """What a page did: its requests, and any script error it raised."""

    requests: list[Request]
    errors: list[str]


@pytest.fixture
def seen() -> Seen:
    return Seen([], [])


@pytest.fixture
def page(browser: Browser, seen: Seen, request: pytest.FixtureRequest) -> Iterator[Page]:
    for servers in ("fleet", "bare"):  # started first, so they stop after the page is closed
        if servers in request.fixturenames:
            request.getfixturevalue(servers)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.on("request", lambda request: seen.requests.append(request))
    opened.on("pageerror", lambda error: seen.errors.append(str(error)))
    yield opened
    context.close()
    assert not seen.errors, seen.errors  # the page's scripts never threw


def open_page(page: Page, fleet: Fleet, hash_: str = "") -> None:
    """Open the page and give it the key, as an operator does."""
    page.goto(f"{fleet.api.url}/{hash_}")
    page.fill("#login-key", KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("live")


def row(page: Page, job_id: int) -> Any:
    return page.locator(f"#jobs tr[data-job-id='{job_id}']")


def progress_of(page: Page, job_id: int) -> float:
    """The value of job `job_id`'s progress bar, once it has one above 0 and below its max."""
    handle = page.wait_for_function(
        """id => {
            const bar = document.querySelector(`#jobs tr[data-job-id='${id}'] progress`);
            return bar && bar.hasAttribute('value') && bar.value > 0 && bar.value < bar.max
                && bar.value;
        }""",
        arg=job_id,
        timeout=WAIT,
    )
    return float(handle.json_value())


def wait_for_progress_beyond(page: Page, job_id: int, value: float) -> None:
    page.wait_for_function(
        """([id, value]) => {
            const bar = document.querySelector(`#jobs tr[data-job-id='${id}'] progress`);
            return bar && bar.value > value;
        }""",
        arg=[job_id, value],
        timeout=WAIT,
    )


def slow_file(fleet: Fleet, name: str, size: int, rate: int) -> tuple[str, str]:
    """A file the origin sends at `rate` bytes/s: its URL and SHA-256."""
    data = os.urandom(size)
    return fleet.origin.url(f"/files/{name}?rate={rate}"), fleet.origin.add(name, data)


# -- the key ---------------------------------------------------------------------------------


def test_the_page_asks_for_the_key_and_shows_no_data_without_it(
    page: Page, bare: Fleet, seen: Seen
) -> None:
    fleet = bare
    page.goto(fleet.api.url)
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    before = [r for r in seen.requests if "/api/" in r.url]
    assert before, "the page asks the API whether it needs a key"
    for request in before:
        answer = request.response()
        assert answer is not None and answer.status == 401, request.url

    page.fill("#login-key", "not-the-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("The API refused this key.")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") is None

    page.fill("#login-key", KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#queue-name")).to_have_text("default")
    expect(page.locator("#connection")).to_have_text("live")
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") == KEY

    page.reload()  # the tab keeps the key
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("live")

    # Every request went to the API itself (no internet needed), and every API request after
    # the key was given carried it in a header, the event stream's too.
    origin = urlsplit(fleet.api.url)
    assert {urlsplit(r.url).netloc for r in seen.requests} == {origin.netloc}
    keyed = [r for r in seen.requests if "/api/" in r.url and r not in before]
    assert any(r.url.endswith("/api/v1/queue/default/events") for r in keyed)
    wrong = [r for r in keyed if r.headers.get("x-api-key") == "not-the-key"]
    assert all(r.headers.get("x-api-key") == KEY for r in keyed if r not in wrong)
    assert len(wrong) == 1

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") is None


def test_the_page_and_its_assets_are_served_without_the_key_under_a_strict_policy(
    bare: Fleet,
) -> None:
    url = bare.api.url
    index = requests.get(f"{url}/", timeout=30)
    assert index.status_code == 200 and "<title>downloader</title>" in index.text
    policy = index.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    for asset in ("app.js", "api.js", "sse.js", "jobs.js", "style.css"):
        answer = requests.get(f"{url}/ui/{asset}", timeout=30)
        assert answer.status_code == 200, asset
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    for data in ("/api/v1/queues", "/api/v1/workers", "/api/v1/queue/default/list"):
        assert requests.get(f"{url}{data}", timeout=30).status_code == 401, data
    # The open prefix leads to the page's files only, however the path is spelt.
    for sneaky in ("/ui/../api/v1/queues", "/ui/%2e%2e/api/v1/queues", "/ui/../../etc/passwd"):
        answer = requests.get(f"{url}{sneaky}", timeout=30)
        assert answer.status_code in (401, 404), (sneaky, answer.status_code)


def test_the_wheel_carries_the_page(tmp_path: Path) -> None:
    """A built wheel holds every file of the page, so an installed API serves it."""
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    ui = ROOT / "src" / "downloader" / "api" / "ui"
    expected = {f"downloader/api/ui/{path.name}" for path in ui.iterdir()}
    assert expected and expected <= names, sorted(expected - names)


def test_the_event_stream_parser_reads_frames_however_they_are_cut(page: Page, bare: Fleet) -> None:
    """The page parses SSE itself (it reads the stream with fetch() to send the key in a
    header): frames cut at any byte, CRLF or LF, several data lines, comments."""
    page.goto(bare.api.url)
    found = page.evaluate(
        r"""async () => {
            const { parseFrames } = await import('/ui/sse.js');
            const text = ': subscribed\r\n\r\nevent: download_progress\r\ndata: {"a":'
                + '\r\ndata: 1}\r\n\r\n: keep-alive\n\nevent: x\ndata:2\n\nevent: y\ndata: 3';
            const whole = parseFrames(text);
            const cut = [];
            let buffer = '';
            for (const char of text) {
                const { frames, rest } = parseFrames(buffer + char);
                cut.push(...frames);
                buffer = rest;
            }
            return { whole: whole.frames, rest: whole.rest, cut, left: buffer };
        }"""
    )
    expected = [
        {"comment": "subscribed"},
        {"event": "download_progress", "data": '{"a":\n1}'},
        {"comment": "keep-alive"},
        {"event": "x", "data": "2"},
    ]
    assert found["whole"] == expected and found["cut"] == expected
    assert found["rest"] == found["left"] == "event: y\ndata: 3"  # not ended yet


# -- live ------------------------------------------------------------------------------------


def test_jobs_and_parts_are_followed_live_to_their_end(page: Page, fleet: Fleet) -> None:
    open_page(page, fleet)
    page.evaluate("window.notReloaded = true")
    url, single_digest = slow_file(fleet, "slow.bin", 512 * KiB, 96 * KiB)
    (single,) = fleet.enqueue({"source": url, "dest": "live", "priority": 10})
    parts = [
        {"url": fleet.origin.url("/files/p0.bin"), "path": "set/p0.bin"},
        {"url": fleet.origin.url("/files/p1.bin"), "path": "set/p1.bin"},
    ]
    fleet.origin.add("p0.bin", os.urandom(100 * KiB))
    fleet.origin.add("p1.bin", os.urandom(200 * KiB))
    parent, *part_items = fleet.enqueue({"parts": parts, "dest": "live"})
    job = single["item_id"]

    first = progress_of(page, job)
    wait_for_progress_beyond(page, job, first)
    expect(row(page, job).locator(".rate")).to_contain_text("/s")
    expect(row(page, job).locator(".status")).to_have_text("completed")
    expect(row(page, job).locator(".bytes")).to_have_text("512.0 KiB / 512.0 KiB")
    assert (
        page.evaluate(f"document.querySelector(\"#jobs tr[data-job-id='{job}'] progress\").value")
        == 512 * KiB
    )

    expect(row(page, parent["item_id"]).locator(".status")).to_have_text("completed")
    expect(row(page, parent["item_id"]).locator(".bytes")).to_have_text("300.0 KiB / 300.0 KiB")
    for part in part_items:
        expect(row(page, part["item_id"]).locator(".status")).to_have_text("completed")
        expect(row(page, part["item_id"]).locator(".note")).to_have_text(
            f"part of #{parent['item_id']}"
        )
    expect(page.locator("#queue-counts [data-count=completed]")).to_have_text("4")
    page.wait_for_function(  # a function, not an expression: Playwright evals an expression,
        # which the page's Content-Security-Policy (no 'unsafe-eval') refuses once it polls
        "() => Number(document.querySelector('#throughput-chart').dataset.peak) > 0",
        timeout=WAIT,
    )
    expect(page.locator("#totals [data-total='seen here']")).not_to_have_text("0 B")
    assert page.evaluate("window.notReloaded") is True
    assert (fleet.root / "live" / "slow.bin").exists()
    assert digest((fleet.root / "live" / "slow.bin").read_bytes()) == single_digest


@pytest.mark.slow
def test_the_page_follows_the_queue_again_after_the_api_restarts(
    page: Page,
    fleet: Fleet,
    start_api: Callable[..., ApiProcess],  # noqa: F811
) -> None:
    open_page(page, fleet)
    url, _ = slow_file(fleet, "through.bin", 2 * MiB, 128 * KiB)
    (item,) = fleet.enqueue({"source": url, "dest": "r"})
    job = item["item_id"]
    progress_of(page, job)
    stop_process(fleet.api.process)
    expect(page.locator("#connection")).to_contain_text("reconnecting")
    fleet.api = start_api(key=KEY, port=fleet.api.port)
    expect(page.locator("#connection")).to_have_text("live")
    expect(row(page, job).locator(".status")).to_have_text("completed")
    expect(row(page, job).locator(".bytes")).to_have_text("2.00 MiB / 2.00 MiB")


def test_cancel_from_the_page_cancels_the_job(page: Page, fleet: Fleet) -> None:
    open_page(page, fleet)
    url, _ = slow_file(fleet, "long.bin", 8 * MiB, 64 * KiB)
    (item,) = fleet.enqueue({"source": url, "dest": "c"})
    job = item["item_id"]
    progress_of(page, job)  # running
    row(page, job).locator("button[data-action=cancel]").click()
    expect(row(page, job).locator(".status")).to_have_text("canceled")
    expect(page.locator("#queue-message")).to_have_text(f"cancel #{job}: done")
    record = fleet.store.record(job)
    assert record is not None and record.cancelled is True and record.status == "error"
    assert fleet.rest("GET", f"/api/v1/queue/default/i/{job}")["status"] == "canceled"


def test_the_workers_panel_lists_the_worker_and_what_it_runs(page: Page, fleet: Fleet) -> None:
    open_page(page, fleet)
    worker = page.locator("#workers tr[data-worker^='w1@']")
    expect(worker).to_have_count(1)
    expect(worker.locator(".queues")).to_have_text("default")
    url, _ = slow_file(fleet, "busy.bin", 4 * MiB, 128 * KiB)
    (item,) = fleet.enqueue({"source": url, "dest": "w"})
    expect(worker.locator(f".jobs li[data-job-id='{item['item_id']}']")).to_be_visible()
    expect(worker.locator(".count")).to_have_text("1")
    page.wait_for_function(
        """() => {
            const cell = document.querySelector("#workers tr[data-worker^='w1@'] .rate");
            return cell && /\\/s$/.test(cell.textContent) && !cell.textContent.startsWith('0 B');
        }""",
        timeout=WAIT,
    )
    expect(page.locator("#totals [data-total=workers]")).to_have_text("1")
    expect(page.locator("#totals [data-total=downloading]")).to_have_text("1")
    answer = fleet.rest("GET", "/api/v1/workers")["workers"]
    assert [w["name"].split("@")[0] for w in answer] == ["w1"]
    assert [j["item_id"] for j in answer[0]["running"]] == [item["item_id"]]
    fleet.rest("POST", f"/api/v1/queue/default/i/{item['item_id']}/cancel")
    expect(worker.locator(".jobs li")).to_have_count(0)


# -- the queue's controls --------------------------------------------------------------------


def test_pause_resume_prune_and_clear_the_queue_from_the_page(page: Page, fleet: Fleet) -> None:
    open_page(page, fleet)
    page.click("#queue-pause")
    expect(page.locator("#queue-paused")).to_be_visible()
    expect(page.locator("#queue-message")).to_contain_text("paused")
    assert fleet.rest("GET", "/api/v1/queue/default/status")["processor"]["is_paused"] is True

    fleet.origin.add("after.bin", os.urandom(64 * KiB))
    (item,) = fleet.enqueue({"source": fleet.origin.url("/files/after.bin"), "dest": "p"})
    expect(row(page, item["item_id"]).locator(".status")).to_have_text("pending")
    expect(page.locator("#queue-list [data-queue-row=default] .badge")).to_have_text("paused")

    page.click("#queue-resume")
    expect(page.locator("#queue-paused")).to_be_hidden()
    expect(row(page, item["item_id"]).locator(".status")).to_have_text("completed")
    assert fleet.rest("GET", "/api/v1/queue/default/status")["processor"]["is_paused"] is False

    page.click("#queue-prune")
    expect(page.locator("#queue-message")).to_have_text("pruned: 1 finished jobs removed")
    expect(row(page, item["item_id"])).to_have_count(0)
    assert fleet.store.record(item["item_id"]) is None

    page.click("#queue-pause")
    expect(page.locator("#queue-paused")).to_be_visible()
    waiting = fleet.enqueue(
        {
            "items": [
                {"source": fleet.origin.url("/files/after.bin"), "dest": f"q{i}"} for i in range(3)
            ]
        }
    )
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    page.click("#queue-clear")
    expect(page.locator("#queue-clear")).to_have_text("Really clear?")
    page.click("#queue-clear")
    expect(page.locator("#queue-message")).to_have_text(
        "cleared: 3 unfinished jobs cancelled and removed"
    )
    expect(page.locator("#jobs tbody tr")).to_have_count(0)
    assert all(fleet.store.record(w["item_id"]) is None for w in waiting)
    page.click("#queue-resume")
    expect(page.locator("#queue-paused")).to_be_hidden()


def test_the_enqueue_form_queues_real_downloads(
    hub: HubOrigin,  # noqa: F811 (the fixture of tests/test_hub.py; before the API starts)
    page: Page,
    fleet: Fleet,
) -> None:
    files = repo_files()
    hub.add_repo(REPO, files)
    open_page(page, fleet)
    data = os.urandom(300 * KiB)
    expected = fleet.origin.add("form.bin", data)
    page.click("#enqueue-box summary")
    page.fill("#enqueue-sources", fleet.origin.url("/files/form.bin"))
    page.fill("#enqueue-dest", "from-form")
    page.fill("#enqueue-priority", "5")
    page.fill("#enqueue-sha256", expected)
    page.click("#enqueue button[type=submit]")
    expect(page.locator("#enqueue-message")).to_have_text("queued #0")
    expect(row(page, 0).locator(".status")).to_have_text("completed")
    expect(row(page, 0).locator(".priority")).to_have_text("5")
    assert digest((fleet.root / "from-form" / "form.bin").read_bytes()) == expected
    assert fleet.rest("GET", "/api/v1/queue/default/i/0")["priority"] == 5

    # A hub repo with patterns is one multi-file job of the matching files.
    page.fill("#enqueue-sources", f"hf://{REPO}")
    page.fill("#enqueue-dest", "models")
    page.fill("#enqueue-include", "*.safetensors unet/*.json")
    page.fill("#enqueue-exclude", "vae/*")
    page.click("#enqueue button[type=submit]")
    expect(page.locator("#enqueue-message")).to_have_text("queued #1: 3 files")
    expect(row(page, 1).locator(".status")).to_have_text("completed")
    got = sorted(
        str(p.relative_to(fleet.root / "models" / "tiny-diffusion"))
        for p in (fleet.root / "models" / "tiny-diffusion").rglob("*")
        if p.is_file()
    )
    assert got == [
        "text_encoder/model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    for path in got:
        assert (fleet.root / "models" / "tiny-diffusion" / path).read_bytes() == files[path]

    # What the API refuses is shown as it says it, and nothing is queued.
    page.fill("#enqueue-include", "")
    page.fill("#enqueue-exclude", "")
    page.fill("#enqueue-sources", fleet.origin.url("/files/form.bin"))
    page.fill("#enqueue-dest", "/etc")
    page.click("#enqueue button[type=submit]")
    expect(page.locator("#enqueue-message")).to_contain_text("not queued: 422")
    expect(page.locator("#enqueue-message")).to_contain_text("download root")
    assert fleet.rest("GET", "/api/v1/queue/default/status")["queue"]["total"] == 5


# -- finding jobs ----------------------------------------------------------------------------


def test_filters_and_paging_through_a_queue_larger_than_a_page(page: Page, bare: Fleet) -> None:
    """60 jobs on a queue, 7 of them cancelled: pages of 25 by cursor, and
    the status filter."""
    fleet = bare
    fleet.origin.add("never.bin", b"x")
    items = fleet.enqueue(
        {
            "items": [
                {"source": fleet.origin.url(f"/files/never.bin?n={i}"), "dest": "bulk"}
                for i in range(60)
            ]
        },
        queue="bulk",
    )
    ids = [item["item_id"] for item in items]
    cancelled = ids[3:60:9]
    for job in cancelled:
        fleet.rest("POST", f"/api/v1/queue/bulk/i/{job}/cancel")
    open_page(page, fleet)
    expect(page.locator("#jobs tbody tr")).to_have_count(0)  # `default` is empty
    page.click("#queue-list button[data-queue=bulk]")
    expect(page.locator("#queue-name")).to_have_text("bulk")
    page.select_option("#page-size", "25")

    def shown() -> list[int]:
        return [
            int(x)
            for x in page.locator("#jobs tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.jobId)"
            )
        ]

    expect(page.locator("#jobs tbody tr")).to_have_count(25)
    assert shown() == ids[:25]
    expect(page.locator("#page-prev")).to_be_disabled()
    page.click("#page-next")
    expect(page.locator(f"#jobs tr[data-job-id='{ids[25]}']")).to_be_visible()
    assert shown() == ids[25:50]
    page.click("#page-next")
    expect(page.locator("#jobs tbody tr")).to_have_count(10)
    assert shown() == ids[50:]
    expect(page.locator("#page-next")).to_be_disabled()
    page.click("#page-prev")
    expect(page.locator(f"#jobs tr[data-job-id='{ids[25]}']")).to_be_visible()
    assert shown() == ids[25:50]

    page.select_option("#status-filter", "canceled")
    expect(page.locator("#jobs tbody tr")).to_have_count(len(cancelled))
    assert shown() == cancelled
    expect(page.locator("#page-info")).to_contain_text(f"{len(cancelled)} canceled")
    page.select_option("#status-filter", "pending")
    expect(page.locator("#jobs tbody tr")).to_have_count(25)
    assert shown() == [job for job in ids if job not in cancelled][:25]
    expect(page.locator("#queue-counts [data-count=pending]")).to_have_text("53")

    page.click("#queue-list button[data-queue=default]")
    expect(page.locator("#queue-name")).to_have_text("default")
    expect(page.locator("#jobs tbody tr")).to_have_count(0)


# -- one job's controls ----------------------------------------------------------------------


def test_each_job_control_calls_its_route_and_shows_the_apis_answer(
    page: Page, bare: Fleet
) -> None:
    """Pause, resume, retry and priority call the per-job routes (`POST .../i/{id}/pause` and
    so on, `PATCH .../i/{id}`); until the API has them, the page shows the API's refusal."""
    fleet = bare
    fleet.origin.add("held.bin", b"held")
    (item,) = fleet.enqueue(
        {"source": fleet.origin.url("/files/held.bin"), "dest": "h"}, queue="held"
    )
    job = item["item_id"]
    open_page(page, fleet, "#queue=held")
    expect(row(page, job).locator(".status")).to_have_text("pending")
    base = f"/api/v1/queue/held/i/{job}"

    def check(
        click: Callable[[], None],
        method: str,
        path: str,
        shown_in: str,
        what: str,
        body: object = None,
    ) -> None:
        with page.expect_response(lambda r: urlsplit(r.url).path == path) as answered:
            click()
        request = answered.value.request
        assert request.method == method
        assert request.headers.get("x-api-key") == KEY
        if body is not None:
            assert request.post_data_json == body
        status = answered.value.status
        if status >= 400:
            reason = answered.value.json()["detail"]
            expect(page.locator(shown_in)).to_have_text(f"{what} failed: {status} {reason}")
        else:
            expect(page.locator(shown_in)).to_have_text(f"{what}: done")

    check(
        lambda: row(page, job).locator("button[data-action=pause]").click(),
        "POST",
        f"{base}/pause",
        "#queue-message",
        f"pause #{job}",
    )
    row(page, job).locator("button[data-action=details]").click()
    expect(page.locator("#job-dialog")).to_be_visible()
    expect(page.locator("#job-title")).to_have_text(f"#{job}")
    dialog = page.locator("#job-dialog")
    for action in ("pause", "resume", "retry"):
        check(
            lambda action=action: dialog.locator(f"button[data-action={action}]").click(),
            "POST",
            f"{base}/{action}",
            "#job-message",
            f"{action} #{job}",
        )
    page.fill("#priority-value", "3")
    check(
        lambda: page.click("#priority-form button[type=submit]"),
        "PATCH",
        base,
        "#job-message",
        f"priority 3 for #{job}",
        {"priority": 3},
    )
    check(
        lambda: dialog.locator("button[data-action=cancel]").click(),
        "POST",
        f"{base}/cancel",
        "#job-message",
        f"cancel #{job}",
    )
    page.click("#job-close")
    expect(row(page, job).locator(".status")).to_have_text("canceled")


# -- the fleet's reads -----------------------------------------------------------------------


def test_the_queue_list_pages_through_every_queue_in_bounded_steps(
    api: TestClient,  # noqa: F811
    namespace: str,
    redis_url: str,
) -> None:
    """300 queues, read 50 at a time by `SSCAN` cursor: every one listed, with its counts and
    pause flag, each page sorted and about `limit` long."""
    store = JobStore(redis.Redis.from_url(redis_url), namespace)
    names = [f"q{i:03d}" for i in range(300)]
    for name, job_id in zip(names, store.new_ids(len(names)), strict=True):
        store.create(name, [JobRecord(id=job_id, source="http://x/y", dest=Path("/d"))])
    assert api.post("/api/v1/queue/q007/processor/pause").status_code == 200
    listed: dict[str, dict[str, Any]] = {}
    cursor, pages = 0, 0
    while True:
        answer = api.get(f"/api/v1/queues?limit=50&cursor={cursor}").json()
        names_here = [queue["queue_id"] for queue in answer["queues"]]
        assert names_here == sorted(names_here) and len(names_here) <= 100
        listed.update((queue["queue_id"], queue) for queue in answer["queues"])
        pages += 1
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert sorted(listed) == names and pages >= 3
    assert answer["default_queue"] == "default"
    assert listed["q007"]["is_paused"] is True and listed["q008"]["is_paused"] is False
    assert {(q["pending"], q["total"]) for q in listed.values()} == {(1, 1)}
    assert api.get("/api/v1/queues?limit=0").status_code == 422
    assert api.get("/api/v1/queues?limit=1001").status_code == 422
    assert api.post("/api/v1/queue/q007/processor/resume").status_code == 200


# -- the README's pictures -------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("DOWNLOADER_SCREENSHOTS"),
    reason="makes the README's screenshots: DOWNLOADER_SCREENSHOTS=docs pytest -n 0 -k screenshots",
)
def test_screenshots(page: Page, fleet: Fleet, spawn_worker: Callable[..., WorkerProcess]) -> None:
    """The page in use, as the README shows it: a worker busy with a file and a multi-file
    job, finished and failed jobs, one waiting, and a second queue."""
    out = Path(os.environ["DOWNLOADER_SCREENSHOTS"])
    spawn_worker("w2", concurrency=2)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(fleet.api.url)
    page.fill("#login-key", "•" * 12)
    page.screenshot(
        path=out / "page-login.png", clip={"x": 0, "y": 0, "width": 1400, "height": 420}
    )
    open_page(page, fleet)
    fleet.origin.add("config.json", os.urandom(3 * KiB))
    done = fleet.enqueue({"source": fleet.origin.url("/files/config.json"), "dest": "models"})
    fleet.enqueue({"source": fleet.origin.url("/status/404"), "dest": "models"})
    url, _ = slow_file(fleet, "sd-turbo.safetensors", 64 * MiB, 900 * KiB)
    fleet.enqueue({"source": f"{url}&norange=1", "dest": "models", "priority": 5})  # 1 stream
    parts = []
    for name, size, rate in (("unet.safetensors", 48, 700), ("vae.safetensors", 24, 500)):
        part_url, _ = slow_file(fleet, name, size * MiB, rate * KiB)
        parts.append({"url": part_url, "path": f"tiny-diffusion/{name}"})
    fleet.enqueue({"parts": parts, "dest": "models"})
    fleet.origin.add("later.bin", os.urandom(KiB))
    fleet.enqueue(
        {"source": fleet.origin.url("/files/later.bin"), "dest": "models", "priority": 50}
    )
    fleet.enqueue(
        {
            "items": [
                {"source": fleet.origin.url(f"/files/later.bin?n={i}"), "dest": "x"}
                for i in range(4)
            ]
        },
        queue="nightly",
    )
    expect(row(page, done[0]["item_id"]).locator(".status")).to_have_text("completed")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#throughput-chart polyline')]
            .some(line => line.getAttribute('points').split(' ')
                .filter(p => Number(p.split(',')[1]) < 110).length >= 6)""",
        timeout=120_000,
    )
    page.screenshot(path=out / "page.png", full_page=True)
    row(page, 1).locator("button[data-action=details]").click()
    expect(page.locator("#job-dialog")).to_be_visible()
    page.locator("#job-dialog").screenshot(path=out / "page-job.png")


# -- the fleet's limits ------------------------------------------------------------------------


def test_the_limits_panel_shows_and_sets_the_fleets_limits(page: Page, bare: Fleet) -> None:
    open_page(page, bare)
    expect(page.locator("#limits-fleet")).to_have_text(
        "fleet bandwidth unlimited; 16 connections per host not named"
    )
    page.fill("#limits-host", "huggingface.co")
    page.fill("#limits-connections", "8")
    page.fill("#limits-bandwidth", "100MiB")
    page.click("#limits-form button[type=submit]")
    row = page.locator("#limits tr[data-host='huggingface.co']")
    expect(row.locator(".connections")).to_have_text("8")
    expect(row.locator(".bandwidth")).to_have_text("100.0 MiB/s")
    expect(row.locator(".in-use")).to_have_text("0")
    hosts = bare.rest("GET", "/api/v1/limits")["limits"]["hosts"]
    assert hosts["huggingface.co"] == {
        "connections": 8,
        "bandwidth": 100 * MiB,
        "requests_per_second": None,
    }
    page.fill("#limits-host", "")
    page.fill("#limits-connections", "")
    page.fill("#limits-bandwidth", "fast")
    page.click("#limits-form button[type=submit]")
    expect(page.locator("#limits-message")).to_contain_text("not a rate")
    assert bare.rest("GET", "/api/v1/limits")["limits"]["bandwidth"] == 0
