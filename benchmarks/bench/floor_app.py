"""The Celery floor: a no-op task on a bare Celery app, nothing of this project's in the path.

`celery -A benchmarks.bench.floor_app worker -P threads -c 8 -E` with `FLOOR_BROKER_URL` set
to the Redis the job path uses; the floor comparison (`benchmarks/jobpath.py --floor`) sends
it `noop` messages and measures the workers' CPU per message: what one Celery task costs on
its own, with task events on as the project's workers have them. `fetch` is both floors in
one task (a GET and a write in the task), to see whether they add up under concurrency.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import requests
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
app.conf.update(json.loads(os.environ.get("FLOOR_CONF", "{}")))
"""Celery settings of the project's app, to measure what each costs on the bare task."""
if os.environ.get("FLOOR_QUIET_TASK_LINES"):
    for name in ("celery.worker.strategy", "celery.app.trace"):  # "received", "succeeded"
        logging.getLogger(name).setLevel(logging.WARNING)


@app.task(name="floor.noop")
def noop(job_id: int) -> None:
    """Nothing: what is measured is Celery's path to it and back."""


_local = threading.local()


@app.task(name="floor.fetch")
def fetch(url: str, dest: str) -> None:
    """The GET floor inside the Celery floor: one GET and one write, a session per thread."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    answer = session.get(url)
    answer.raise_for_status()
    with open(dest, "wb") as handle:
        handle.write(answer.content)
