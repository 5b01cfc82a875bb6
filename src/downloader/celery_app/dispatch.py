"""Jobs sent to other processes' workers as broker messages, and messages lost on the way.

`BrokerDispatcher` is the runtime's way to any queue: it sends (job id, queue, priority)
triples as ordinary Celery messages of the `downloader.download` task, made from a template
(`celery_app.messages`) and pushed in pipelines beside the dispatch notes. Every dispatch
is noted in the store by time first (its `dispatched` key), and the time is in the task id
too, which is how `redispatch_lost` finds a waiting job whose message left the broker and was
never claimed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu import Queue
from kombu.common import maybe_declare
from redis.client import Pipeline

from downloader.celery_app.messages import TaskMessages
from downloader.jobs.models import DownloadJobStatus
from downloader.store.base import BATCH
from downloader.store.keys import PRIORITY_LEVELS, celery_priority
from downloader.worker.runtime import Dispatch, Runtime

log = logging.getLogger(__name__)

MAX_DECLARED = 1024
"""Queue declarations kombu remembers per broker connection, and the dispatcher's own list of
queues declared, before they are forgotten (and made again when next needed): a process that
sends for callers' queues (the REST API) would otherwise remember every queue id it was ever
given."""


class BrokerDispatcher:
    """Sends any queue's jobs, and discards, to the broker of one Celery app."""

    def __init__(self, app: Celery, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        # Celery would work out the same origin for every message.
        self.messages = TaskMessages(app, runtime.keys, anon_nodename())
        self._declared: OrderedDict[str, None] = OrderedDict()
        """The queue ids declared lately, the least recently used first (see `declare`)."""
        self._lock = threading.Lock()

    def takes(self, queue_id: str) -> bool:
        return True

    def broker_queue(self, queue_id: str) -> Queue:
        """The kombu queue messages for `queue_id` are sent to, made afresh each time.

        Celery's registry (`amqp.queues`) would keep every queue name it is asked for, and a
        queue of its own exchange leaves a binding key in Redis for ever: a process that
        sends for callers' queues (the REST API) would grow with the names. On the default
        exchange a message goes straight to the queue's list, where its workers take it.
        """
        name = self.runtime.keys.celery_queue(queue_id)
        return Queue(name, routing_key=name)

    def submit(self, jobs: Sequence[Dispatch]) -> None:
        """Send (job id, queue id, priority) triples to the broker, `BATCH` per round trip.

        Each batch notes its dispatches in the store by time (so a message lost on the way
        is found again by the orphan watch) before it pushes the messages, in the same
        pipeline: one ZADD and one LPUSH per queue and level. The time goes into the task
        id too: the watch compares it with the oldest message still in the broker. The
        messages are Celery's own, made from a template (`celery_app.messages`); no result
        is stored: clients follow the job store, and Flower reads task events.
        """
        now = time.time()
        self.declare({queue_id for _, queue_id, _ in jobs})
        for start in range(0, len(jobs), BATCH):
            pipe = self.runtime.redis.pipeline(transaction=False)
            self.push(pipe, jobs[start : start + BATCH], now)
            pipe.execute()

    def push(self, pipe: Pipeline, jobs: Sequence[Dispatch], now: float) -> None:
        """Add to `pipe` the dispatch notes and then the messages of `jobs`, sent at `now`.

        Messages of one list go in one LPUSH, in order: kombu takes from the other end, so
        the first job sent is the first taken, as with one LPUSH each.
        """
        keys, messages = self.runtime.keys, self.messages
        notes: dict[str, dict[int, float]] = {}
        lists: dict[str, list[str]] = {}
        for job_id, queue_id, priority in jobs:
            level = celery_priority(priority)
            notes.setdefault(keys.dispatched(queue_id, level), {})[job_id] = now
            key, message = messages.message(job_id, queue_id, level, dispatch_task_id(job_id, now))
            lists.setdefault(key, []).append(message)
        for key, members in notes.items():
            pipe.zadd(key, members)
        for key, values in lists.items():
            pipe.lpush(key, *values)

    def declare(self, queue_ids: set[str]) -> None:
        """Declare the queues as kombu would before publishing, once per queue id while it
        is among the last `MAX_DECLARED` declared here.

        A queue on the default exchange is declared on the channel only: kombu's Redis
        transport writes nothing for it, so declaring it again on another connection
        changes nothing a worker sees. Remembering the ids here spares a `download()` the
        producer taken from the pool and the kombu queue built and bound for each call
        (a fifth of its client time); the ids kept are bounded, as queue ids are callers'.
        """
        with self._lock:
            fresh = [queue_id for queue_id in queue_ids if queue_id not in self._declared]
            for queue_id in queue_ids.difference(fresh):
                self._declared.move_to_end(queue_id)
        if not fresh:
            return
        with self.app.producer_or_acquire() as producer:
            declared = producer.channel.connection.client.declared_entities
            if len(declared) > MAX_DECLARED:
                declared.clear()
            for queue_id in fresh:
                maybe_declare(self.broker_queue(queue_id), producer.channel)
        with self._lock:
            for queue_id in fresh:
                self._declared[queue_id] = None
            while len(self._declared) > MAX_DECLARED:
                self._declared.popitem(last=False)

    def discard(self, job_id: int, queue_id: str) -> None:
        self.app.tasks["downloader.discard"].si(job_id).apply_async(
            queue=self.broker_queue(queue_id), priority=0, ignore_result=True
        )

    def oldest_dispatch(self, queue_id: str, levels: Iterable[int]) -> list[float | None]:
        """When the oldest message still in the broker for each level was sent (None: the
        level's list is empty). Anything sent before it has left the list."""
        runtime = self.runtime
        pipe = runtime.redis.pipeline(transaction=False)
        for level in levels:
            pipe.lindex(runtime.keys.broker_list(queue_id, level), -1)
        return [_dispatch_time(raw) for raw in pipe.execute()]


def dispatch_task_id(job_id: int, sent: float) -> str:
    """`<job id>-<send time in ms>-<random>`: readable in Flower, and dated for the watch."""
    return f"{job_id}-{int(sent * 1000)}-{os.urandom(4).hex()}"


def _dispatch_time(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        task_id = json.loads(raw)["headers"]["id"]
        return int(task_id.split("-")[1]) / 1000
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return 0.0  # a message not sent by `submit`: treat every job as possibly behind it


def redispatch_lost(broker: BrokerDispatcher) -> list[int]:
    """Queue again the waiting jobs whose message left the broker and was never claimed.

    Every dispatch is noted in a sorted set per queue and priority level, by time, and the
    task id carries the same time. A level's list in the broker is FIFO, so a job sent
    before the oldest message still in it has been popped; if it is still waiting a
    visibility timeout after it was sent, its message was lost (or a live worker holds it
    unacknowledged, and the claim drops the duplicate). Answers the ids sent again.
    """
    runtime = broker.runtime
    store, keys = runtime.store, runtime.keys
    deadline = time.time() - runtime.settings.visibility_timeout
    due: list[tuple[int, str, int]] = []
    levels = range(PRIORITY_LEVELS)
    for queue_id in _with_dispatches(runtime):
        oldest = broker.oldest_dispatch(queue_id, levels)
        pipe = store.redis.pipeline(transaction=False)
        for level, head in zip(levels, oldest, strict=True):
            bound = deadline if head is None else min(deadline, head)
            pipe.zrangebyscore(keys.dispatched(queue_id, level), "-inf", f"({bound}", 0, BATCH)
        for level, ids in zip(levels, pipe.execute(), strict=True):
            due.extend((int(job_id), queue_id, level) for job_id in ids)
    if not due:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for job_id, _, _ in due:
        pipe.hmget(keys.job(job_id), "status", "cancel_requested", "priority")
    resend, stale = [], store.redis.pipeline(transaction=False)
    for (job_id, queue_id, level), (status, cancel, priority) in zip(
        due, pipe.execute(), strict=True
    ):
        waiting = status is not None and json.loads(status) == DownloadJobStatus.WAITING.value
        if waiting and cancel != b"true":
            resend.append((job_id, queue_id, int(json.loads(priority or b"10"))))
            continue
        stale.zrem(keys.dispatched(queue_id, level), job_id)
    stale.execute()
    if resend:
        log.warning("%d waiting jobs were never claimed; queued again", len(resend))
        broker.submit(resend)
    return [job_id for job_id, _, _ in resend]


def _with_dispatches(runtime: Runtime) -> list[str]:
    """The queues with a job sent and not yet claimed: the only ones whose messages can be
    lost. One round trip for every queue."""
    store, keys = runtime.store, runtime.keys
    names = store.queue_names()
    pipe = store.redis.pipeline(transaction=False)
    for queue_id in names:
        pipe.exists(*(keys.dispatched(queue_id, level) for level in range(PRIORITY_LEVELS)))
    return [queue_id for queue_id, found in zip(names, pipe.execute(), strict=True) if found]
