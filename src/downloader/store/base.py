"""What every part of the job store shares: the Redis client, the keys, the batch size and
the arguments every job script starts with."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis

from downloader.jobs.record import FIELD_NAMES, encode_value, utcnow
from downloader.store.keys import Keys

BATCH = 1000
"""Commands per pipeline round trip when writing or reading many jobs."""


class StoreBase:
    """One namespace of one Redis, as the store's parts (records, lifecycle, workers,
    retention) reach it."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.redis = client
        self.keys = Keys(namespace)

    def _args(self, job_id: int, *rest: Any) -> list[Any]:
        """The arguments every job script starts with (see `lua/library.lua`): the namespace,
        now (as JSON and as epoch seconds) and the job id."""
        return [self.keys.namespace, encode_value(utcnow()), repr(time.time()), job_id, *rest]


def flat_fields(fields: Mapping[str, Any]) -> list[str]:
    """Field, JSON value pairs for a script to set.

    Raises:
        ValueError: a name the record lacks (a bug: see `JobRecord`).
    """
    unknown = fields.keys() - FIELD_NAMES
    if unknown:
        raise ValueError(f"a job record has no field {', '.join(sorted(unknown))}")
    return [item for key, value in fields.items() for item in (key, encode_value(value))]
