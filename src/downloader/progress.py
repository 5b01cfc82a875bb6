"""`TqdmProgress`: a console bar per job, fed by `on_progress` callbacks."""

from __future__ import annotations

import threading

from tqdm import tqdm

from downloader.models import DownloadJob, MultiFileDownloadJob


class TqdmProgress:
    """Use `on_progress=TqdmProgress().update`; one bar per job id, closed when it is full."""

    def __init__(self, **tqdm_options: object) -> None:
        self._bars: dict[int, tqdm] = {}
        self._lock = threading.Lock()
        self._options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, **tqdm_options}

    def update(self, job: DownloadJob | MultiFileDownloadJob) -> None:
        with self._lock:
            bar = self._bars.get(job.id)
            if bar is None:
                name = job.download_path.name if job.download_path else str(job.dest)
                bar = self._bars[job.id] = tqdm(
                    desc=name, total=job.total_bytes or None, **self._options
                )
            if job.total_bytes and bar.total != job.total_bytes:
                bar.total = job.total_bytes
            bar.update(job.bytes - bar.n)
            if job.total_bytes and job.bytes >= job.total_bytes:
                bar.close()

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
