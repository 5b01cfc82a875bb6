"""What a `downloader worker` logs per task: only what says something.

Celery logs two INFO lines per task, "Task ... received" and "Task ... succeeded in ...s":
for a small file they cost 0.2 to 0.5 ms of the worker's CPU (a record built, formatted and
written, twice; the first in the consumer's thread, which every message waits for), and they
tell nothing the job store and Flower do not. So, at the default level (INFO), a worker
leaves both out; a task that fails still logs (Celery logs an unexpected error at ERROR,
`tasks.download` logs a job that ended badly at INFO), and `--loglevel DEBUG` brings Celery's
lines back.
"""

from __future__ import annotations

import logging

TASK_LINE_LOGGERS = ("celery.worker.strategy", "celery.app.trace")
"""Celery's loggers of the per-task lines: "received" and "succeeded" (and expected failures,
which `tasks.download` logs itself)."""


def quiet_task_lines(loglevel: str | int) -> None:
    """Leave Celery's per-task lines out unless the worker logs at DEBUG (or below)."""
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(loglevel.upper())
    if isinstance(level, int) and level > logging.DEBUG:
        for name in TASK_LINE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
