"""One job's controls on the page, doing what they say to real downloads: Playwright driving
Debian's Chromium against a real `downloader api` and `downloader worker` (see
`test_page.py`, whose fixtures these are). A paused row shows `paused` and its file stays
partial; Resume finishes it with a Range request; Retry runs a failed job again; the dialog's
priority moves a pending job and the row shows it."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.test_api import api, root, start_api  # noqa: F401 (fixtures)
from tests.test_hub import digest
from tests.test_page import (  # noqa: F401 (fixtures)
    Fleet,
    KiB,
    bare,
    browser,
    fleet,
    open_page,
    page,
    progress_of,
    row,
    seen,
    slow_file,
)


def test_pause_then_resume_a_running_download_from_its_row(page: Page, fleet: Fleet) -> None:  # noqa: F811
    open_page(page, fleet)
    url, sha = slow_file(fleet, "paused.bin", 768 * KiB, 96 * KiB)
    (item,) = fleet.enqueue({"source": url, "dest": "ctl"})
    job = item["item_id"]
    progress_of(page, job)  # it runs
    expect(row(page, job).locator("button[data-action=pause]")).to_be_visible()

    row(page, job).locator("button[data-action=pause]").click()
    expect(page.locator("#queue-message")).to_have_text(f"pause #{job}: done")
    expect(row(page, job).locator(".status")).to_have_text("paused")
    expect(page.locator("#queue-counts [data-count=paused]")).to_have_text("1")
    assert fleet.rest("GET", f"/api/v1/queue/default/i/{job}")["status"] == "paused"
    assert (fleet.root / "ctl" / "paused.bin.downloading").exists()
    assert not (fleet.root / "ctl" / "paused.bin").exists()

    row(page, job).locator("button[data-action=resume]").click()
    expect(page.locator("#queue-message")).to_have_text(f"resume #{job}: done")
    expect(row(page, job).locator(".status")).to_have_text("completed")
    assert digest((fleet.root / "ctl" / "paused.bin").read_bytes()) == sha
    ranges = [r.headers.get("Range") for r in fleet.origin.gets("/files/paused.bin")]
    assert ranges[0] is None and ranges[-1] is not None


def test_retry_a_failed_download_from_its_row(page: Page, fleet: Fleet) -> None:  # noqa: F811
    open_page(page, fleet)
    sha = fleet.origin.add("flaky.bin", b"f" * (64 * KiB))
    url = fleet.origin.url("/files/flaky.bin?fail=1&code=404")
    (item,) = fleet.enqueue({"source": url, "dest": "ctl"})
    job = item["item_id"]
    expect(row(page, job).locator(".status")).to_have_text("failed")

    row(page, job).locator("button[data-action=retry]").click()
    expect(page.locator("#queue-message")).to_have_text(f"retry #{job}: done")
    expect(row(page, job).locator(".status")).to_have_text("completed")
    assert digest((fleet.root / "ctl" / "flaky.bin").read_bytes()) == sha
    expect(row(page, job).locator("button[data-action=retry]")).to_have_count(0)


def test_priority_and_pause_of_a_pending_job_from_its_dialog(page: Page, bare: Fleet) -> None:  # noqa: F811
    bare.origin.add("later.bin", b"l" * 100)  # no worker: the job stays pending
    (item,) = bare.enqueue({"source": bare.origin.url("/files/later.bin"), "dest": "p"})
    job = item["item_id"]
    open_page(page, bare)
    expect(row(page, job).locator(".priority")).to_have_text("10")

    row(page, job).locator("button[data-action=details]").click()
    expect(page.locator("#job-dialog")).to_be_visible()
    page.fill("#priority-value", "2")
    page.click("#priority-form button[type=submit]")
    expect(page.locator("#job-message")).to_have_text(f"priority 2 for #{job}: done")
    page.click("#job-close")
    expect(row(page, job).locator(".priority")).to_have_text("2")
    assert bare.rest("GET", f"/api/v1/queue/default/i/{job}")["priority"] == 2

    row(page, job).locator("button[data-action=pause]").click()
    expect(row(page, job).locator(".status")).to_have_text("paused")
    page.select_option("#status-filter", "paused")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    row(page, job).locator("button[data-action=resume]").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(0)  # pending again: filtered out
    assert bare.rest("GET", f"/api/v1/queue/default/i/{job}")["status"] == "pending"
