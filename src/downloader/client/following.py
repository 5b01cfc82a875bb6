"""What a service's live jobs share with the listener thread that applies their events: the
jobs, which of them are finished, which the listener is to look at in the store, and the
condition both sides wait on. `LiveJobs` is the callers' side of it, `Listener` the thread's;
each imports this module only, so neither needs the other."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from downloader.jobs.models import DownloadJob, MultiFileDownloadJob
from downloader.store.keys import Keys

Job = DownloadJob | MultiFileDownloadJob


class EventBus(Protocol):
    def emit(self, event_name: str, payload: dict[str, Any]) -> None: ...


class Following:
    """The state of one service's followed jobs; guarded by `changed` where both sides write."""

    def __init__(
        self,
        namespace: str,
        queue_id: str,
        client_id: str,
        event_bus: EventBus | Callable[[str, dict[str, Any]], None] | None,
    ) -> None:
        self.namespace = namespace
        self.queue_id = queue_id
        self.client_id = client_id
        """Named by the records of the jobs this client follows (`JobRecord.follower`)."""
        self.client_channel = Keys(namespace).client_channel(client_id)
        """This client's own channel: its jobs' events, and the listener's wake-up."""
        self.event_bus = event_bus
        self.jobs: dict[int, Job] = {}
        self.finalised: set[int] = set()
        self.inferred: set[int] = set()
        """Finalised from the store because their final event may have been missed."""
        self.to_check: list[int] = []
        """Unfinished jobs the listener asks the store about once its subscription is
        confirmed again (after a reconnection): their events meanwhile were not heard."""
        self.watched: deque[int] = deque()
        """Jobs whose records were written, in the order the listener looks whether their
        records still exist (`Listener.look_for_vanished`); finished ones drop out as it goes."""
        self.changed = threading.Condition()
        self.stopping = threading.Event()
