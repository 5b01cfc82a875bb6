"""The cases, by number: how each runs, whether it needs the machine's Redis, and the table
rows it contributes, in the order the table shows them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import (
    case_batch_enqueue,
    case_big_get,
    case_capped,
    case_capped_default,
    case_enqueue,
    case_multifile,
    case_queue_size,
    case_single_stream,
    case_small_files,
    case_small_get,
    case_startup,
)
from .context import Context


@dataclass(frozen=True)
class Case:
    run: Callable[[Context], dict[str, Any]]  # result name -> result
    needs_redis: bool


CASES: dict[str, Case] = {
    "1": Case(case_single_stream.run, False),  # also case 5, worker RSS
    "2": Case(case_capped.run, True),
    "3": Case(case_small_files.run, True),
    "4": Case(case_enqueue.run, True),
    "6": Case(case_startup.run, False),
    "7": Case(case_big_get.run, False),
    "8": Case(case_multifile.run, True),
    "9": Case(case_queue_size.run, True),
    "10": Case(case_batch_enqueue.run, True),
    "11": Case(case_small_get.run, False),
    "12": Case(case_capped_default.run, True),
}

# Result name -> its table rows, in table order.
ROWS: dict[str, Callable[[dict[str, Any] | None], list[list[str]]]] = {
    "1_single_stream": case_single_stream.rows,
    "2_capped": case_capped.rows,
    "3_small_files": case_small_files.rows,
    "4_enqueue": case_enqueue.rows,
    "5_worker_rss": case_single_stream.rss_rows,
    "6_startup": case_startup.rows,
    "7_big_get": case_big_get.rows,
    "8_multifile": case_multifile.rows,
    "9_queue_size": case_queue_size.rows,
    "10_batch_enqueue": case_batch_enqueue.rows,
    "11_small_get": case_small_get.rows,
    "12_capped_default": case_capped_default.rows,
}
