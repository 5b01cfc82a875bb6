"""What a queue id may be.

A queue id goes into Redis keys (`<namespace>:queue:<id>:...`), pub/sub channels and Celery
queue names (`<namespace>.<id>`), and REST callers name it in a path: so it is short and
plain — letters, digits, `_`, `.` and `-` — and checked wherever one comes in (the service,
the CLI, `DOWNLOADER_QUEUE_ID`, the REST API's paths), never quoted back in full.
"""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_QUEUE_ID = 100
QUEUE_ID_PATTERN = rf"^[A-Za-z0-9_.-]{{1,{MAX_QUEUE_ID}}}$"
QUEUE_ID_RULE = f"letters, digits, `_`, `.` and `-`, 1 to {MAX_QUEUE_ID} of them"
_QUEUE_ID = re.compile(QUEUE_ID_PATTERN)


def is_queue_id(queue_id: object) -> TypeGuard[str]:
    """Whether `queue_id` is a queue id (a caller's answer that must not quote it)."""
    return isinstance(queue_id, str) and _QUEUE_ID.fullmatch(queue_id) is not None


def check_queue_id(queue_id: object) -> str:
    """`queue_id` as it is, or a `ValueError` that says what a queue id may be (and shows no
    more than the start of what it got)."""
    if is_queue_id(queue_id):
        return queue_id
    if isinstance(queue_id, str):
        shown = repr(queue_id[:40]) + ("..." if len(queue_id) > 40 else "")
    else:
        shown = type(queue_id).__name__
    raise ValueError(f"a queue id is {QUEUE_ID_RULE}; got {shown}")
