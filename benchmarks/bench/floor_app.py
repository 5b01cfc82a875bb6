"""The Celery floor: a no-op task on a bare Celery app, nothing of this project's in the path.

`celery -A benchmarks.bench.floor_app worker -P threads -c 8 -E` with `FLOOR_BROKER_URL` set
to the Redis the job path uses; the floor comparison (`benchmarks/jobpath.py --floor`) sends
it `noop` messages and measures the workers' CPU per message: what one Celery task costs on
its own, with task events on as the project's workers have them.
"""

from __future__ import annotations

import json
import os

from celery import Celery

app = Celery("floor", broker=os.environ.get("FLOOR_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.broker_transport_options = json.loads(os.environ.get("FLOOR_TRANSPORT_OPTIONS", "{}"))
"""kombu's options, to measure what one of the project's own costs on the bare task."""
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="floor",
    worker_hijack_root_logger=False,
)


@app.task(name="floor.noop")
def noop(job_id: int) -> None:
    """Nothing: what is measured is Celery's path to it and back."""
