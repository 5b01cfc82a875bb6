"""`JobStore`: the Redis job store, the only copy of a job's state, shared by clients and
workers. One facade over the store's parts, each a module with one job:

- `records`: creating jobs with their index entries, reading them at any queue size;
- `lifecycle`: claims, leases, updates, the end of a job and cancels, a script call each;
- `steering`: a caller's pause, resume, retry and priority of one job, a script call each;
- `workers`: worker heartbeats;
- `retention`: removal, the result TTL's sweep, shared gates.

The schema (every key) is `keys`, the Lua `lua/` (loaded by `scripts`), a job's record
`jobs.record.JobRecord`. The store knows nothing about HTTP or Celery.
"""

from __future__ import annotations

from downloader.store.lifecycle import JobLifecycle
from downloader.store.records import JobRecords
from downloader.store.retention import Retention
from downloader.store.steering import JobSteering
from downloader.store.workers import WorkerBeats


class JobStore(JobRecords, JobLifecycle, JobSteering, WorkerBeats, Retention):
    """Reads and writes the jobs of one namespace of one Redis (`JobStore(client, ns)`)."""
