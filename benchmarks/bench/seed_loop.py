"""The seed API's own loop on the embedded default, as a script a user writes: one
`DownloadQueueService()` (no Redis configured), one `download()` per URL of a list, then
`wait_for_job` for each; exits non-zero unless every job completed. Case 11 runs it as
`python seed_loop.py LIST DEST PARALLEL`."""

from __future__ import annotations

import sys
from pathlib import Path

from downloader import DownloadQueueService


def main(listing: str, dest: str, parallel: str) -> int:
    urls = Path(listing).read_text().split()
    with DownloadQueueService(max_parallel_dl=int(parallel)) as queue:
        jobs = [queue.download(url, dest) for url in urls]
        for job in jobs:
            queue.wait_for_job(job)
        failed = [job for job in jobs if not job.complete]
    for job in failed[:3]:
        print(f"job {job.id} ({job.source}): {job.status.value} {job.error_type}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
