"""What a person sees while files download: bars, plain lines, retries, errors and a summary.

`TqdmProgress` is InvokeAI's progress bar (`on_progress=TqdmProgress().update`). `Console` is
the command line's view of a whole run: one bar per file on a terminal, plain periodic lines
otherwise (a log file or a pipe has no use for carriage returns), one short line per retry
naming its URL, and a summary at the end. Errors are told as people know them (`404 Not
Found`, `connection refused`), not as exception reprs.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

from downloader.jobs.failure import Failure, describe

if TYPE_CHECKING:
    from downloader.jobs.models import DownloadJob, MultiFileDownloadJob
    from downloader.worker.notices import RetryNotice

    Job = DownloadJob | MultiFileDownloadJob


def describe_error(error_type: str | None, failure: Failure | None = None) -> str:
    """A job's failure said shortly (`404 Not Found`, `connection refused`): from its
    structured `failure` when it has one, else from its `error_type` (see `jobs.failure`)."""
    return describe(failure, error_type)


def job_label(job: Job) -> str:
    """The file's name once known, else the last part of its URL."""
    if job.download_path is not None:
        return job.download_path.name
    source = str(getattr(job, "source", "") or "")
    return unquote(urlsplit(source).path.rstrip("/").rsplit("/", 1)[-1]) or source or str(job.id)


def human_bytes(count: float) -> str:
    """`count` bytes as tqdm's bars show sizes (three significant digits in steps of 1024,
    `tqdm.format_sizeof`), with the binary unit spelled out: `512 B`, `1.50 KiB`, `135 MiB`."""
    text = tqdm.format_sizeof(count, divisor=1024)
    if not text[-1].isalpha():
        return f"{count:.0f} B"
    return f"{text[:-1]} {text[-1].upper()}iB"


class TqdmProgress:
    """Progress bars for jobs, as InvokeAI's download queue offers them.

    One bar per job id, labelled with its file name (or what `label` says), finished exactly
    once: a job that completes after its last progress adds no second line. Bars that finish
    out of order are written above the live ones, so none is drawn over another.

    Args:
        label: names a job's bar; default: its file's name once known, else the last part
            of its URL.
        **tqdm_options: passed to each `tqdm` bar (`file=`, `leave=`, `disable=`...); the
            defaults count bytes in binary multiples (`unit="B"`, `unit_scale=True`,
            `unit_divisor=1024`).

    Example:
        ```python
        >>> progress = TqdmProgress()
        >>> job = queue.download(url, "models/", on_progress=progress.update,
        ...                      on_complete=progress.update)
        ```
    """

    def __init__(self, label: Callable[[Job], str] = job_label, **tqdm_options: Any) -> None:
        self._bars: dict[int, tqdm] = {}
        self._done: set[int] = set()
        self._lock = threading.Lock()
        self._label = label
        self._options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, **tqdm_options}

    def update(self, job: Job) -> None:
        """Draw `job`'s bar as it is now (any callback: `on_progress`, `on_complete`...).

        Args:
            job: the job a callback was called with; its bar starts at the bytes it already
                had (a resumed download's are not counted in the rate).
        """
        with self._lock:
            if job.id in self._done:
                return
            label = self._label(job)
            bar = self._bars.get(job.id)
            if bar is None:
                # What a resumed download already had is not counted in its rate and ETA.
                bar = self._bars[job.id] = tqdm(
                    desc=label, total=job.total_bytes or None, initial=job.bytes, **self._options
                )
            if bar.desc != label:
                bar.set_description_str(label, refresh=False)
            if job.total_bytes and bar.total != job.total_bytes:
                bar.total = job.total_bytes
            bar.update(job.bytes - bar.n)
            if job.in_terminal_state or (job.total_bytes and job.bytes >= job.total_bytes):
                self._finish(job.id)

    def _finish(self, job_id: int) -> None:
        """A finished bar that stays is written as a line above the live ones, and only then
        cleared: closed in place, tqdm keeps the positions of bars that finish out of order,
        and a later bar or line is drawn over their leftovers."""
        self._done.add(job_id)
        bar = self._bars.pop(job_id)
        if not bar.leave or bar.disable:
            bar.close()
            return
        line = str(bar)
        bar.leave = False
        bar.close()
        # From the line's start: clearing a lower bar leaves the cursor at the end of a line.
        tqdm.write("\r" + line, file=self._options.get("file") or sys.stderr)

    def close(self) -> None:
        """Finish every bar still open (jobs that ended without a last update)."""
        with self._lock:
            for job_id in list(self._bars):
                self._finish(job_id)


class Console:
    """The command line's output for one run of downloads (everything goes to `stream`)."""

    def __init__(
        self, stream: IO[str] | None = None, quiet: bool = False, interval: float = 5.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interval = interval
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last_line: dict[int, float] = {}
        self._ended: set[int] = set()
        """Jobs whose end was told (a last line, a closed bar or an error)."""
        self._labels: dict[int, str] = {}
        self._waits: dict[int, str | None] = {}
        """Why each job waited when last told (a line says so when it changes)."""
        self._bars = (
            TqdmProgress(label=self.label, leave=True, file=self.stream) if self._is_tty() else None
        )

    def _is_tty(self) -> bool:
        return not self.quiet and bool(getattr(self.stream, "isatty", lambda: False)())

    def say(self, line: str) -> None:
        if not self.quiet:
            self._write(line, self.stream)

    def _write(self, line: str, stream: IO[str]) -> None:
        """One whole line at a time: callbacks and the main thread both write."""
        with self._lock:
            if self._bars is not None:
                tqdm.write(line, file=stream)
            else:
                stream.write(line + "\n")
                stream.flush()

    def name(self, job: Job, label: str) -> None:
        """Label `job` with `label` rather than its file name (a repo's files share names)."""
        self._labels[job.id] = label

    def label(self, job: Job) -> str:
        return self._labels.get(job.id) or job_label(job)

    def progress(self, job: Job) -> None:
        """`on_progress` and `on_complete` of every job of the run."""
        with self._lock:
            done = job.in_terminal_state
            if self.quiet or job.id in self._ended:
                return
            if done:
                self._ended.add(job.id)
            waits = job.waiting_for if not done else None
            told, self._waits[job.id] = self._waits.get(job.id), waits
        if waits and waits != told:
            self.say(f"{self.label(job)}: {waits}")
        if self._bars is not None:
            self._bars.update(job)
            return
        now = time.monotonic()
        if not done and now - self._last_line.get(job.id, self.started) < self.interval:
            return
        self._last_line[job.id] = now
        total = f"/{human_bytes(job.total_bytes)}" if job.total_bytes else ""
        percent = f" {100 * job.bytes // job.total_bytes}%" if job.total_bytes else ""
        self.say(f"{self.label(job)}:{percent} {human_bytes(job.bytes)}{total}")

    def retry(self, notice: RetryNotice) -> None:
        """`on_retry`: `retry 2/5 in 4 s: https://host/file: connection refused`."""
        self.say(
            f"retry {notice.attempt}/{notice.of} in {notice.delay:.0f} s: {notice.url}: "
            f"{describe_error(notice.error_type, notice.failure)}"
        )

    def error(self, job: Job) -> None:
        """`on_error`: one line naming the source and what went wrong."""
        with self._lock:
            if job.id in self._ended:
                return
            self._ended.add(job.id)
        if self._bars is not None:
            self._bars.update(job)
        source = getattr(job, "source", job.dest)
        self._write(f"error: {source}: {describe_error(job.error_type, job.failure)}", sys.stderr)

    def finish(self, jobs: list[Job]) -> None:
        """The end of the run: tell the end of every job not told yet (its callbacks may have
        been set after it ended), then the summary."""
        for job in jobs:
            (self.error if job.errored else self.progress)(job)
        self.summary(jobs)

    def summary(self, jobs: list[Job]) -> None:
        if self._bars is not None:
            self._bars.close()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = [job for job in jobs if job.complete]
        size = sum(job.bytes for job in done)
        self.say(
            f"{len(done)} of {len(jobs)} file{'s' if len(jobs) != 1 else ''}, "
            f"{human_bytes(size)} in {elapsed:.1f} s ({human_bytes(size / elapsed)}/s)"
        )


class WarningLines(logging.Handler):
    """Shows the in-process worker's warnings on the console, one line each (retries come as
    `RetryNotice`s to `Console.retry` instead)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.say(record.getMessage().splitlines()[0])
