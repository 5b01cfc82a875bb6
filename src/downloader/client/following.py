"""What a service's live jobs share with the listener thread that applies their events: the
jobs, which of them are finished, which channels are still to follow or to leave, and the
condition both sides wait on. `LiveJobs` is the callers' side of it, `Listener` the thread's;
each imports this module only, so neither needs the other."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from downloader.jobs.models import DownloadJob, MultiFileDownloadJob

Job = DownloadJob | MultiFileDownloadJob


class EventBus(Protocol):
    def emit(self, event_name: str, payload: dict[str, Any]) -> None: ...


class Following:
    """The state of one service's followed jobs; guarded by `changed` where both sides write."""

    def __init__(
        self,
        namespace: str,
        queue_id: str,
        client_channel: str,
        event_bus: EventBus | Callable[[str, dict[str, Any]], None] | None,
    ) -> None:
        self.namespace = namespace
        self.queue_id = queue_id
        self.client_channel = client_channel
        """This client's own channel: it wakes the listener to follow new jobs at once."""
        self.event_bus = event_bus
        self.jobs: dict[int, Job] = {}
        self.finalised: set[int] = set()
        self.inferred: set[int] = set()
        """Finalised from the store because their final event may have been missed."""
        self.to_follow: list[int] = []
        """Jobs queued here whose channels the listener has still to subscribe to."""
        self.awaited: set[int] = set()
        """Jobs `track` waits to see followed before it lets them be queued."""
        self.unfollow: list[int] = []
        """Finished jobs whose channels the listener leaves (it alone touches this list)."""
        self.watched: deque[int] = deque()
        """Jobs whose records were written, in the order the listener looks whether their
        records still exist (`Listener.look_for_vanished`); finished ones drop out as it goes."""
        self.changed = threading.Condition()
        self.stopping = threading.Event()
