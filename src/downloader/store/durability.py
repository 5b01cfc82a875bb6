"""Writes that must survive a failover wait for a replica to have them.

Redis replicates asynchronously: a write the primary acknowledged can be gone after a failover
that promotes a replica which had not received it yet. The writes that make a job exist (the
records and their broker messages) or end it (the end script, a multi-file parent's end, a
cancel) are therefore followed by `Durability.confirm` or `Durability.settle`, one round trip:
a small write of our own, then `WAIT numreplicas timeout` on that same connection. The
replication stream is ordered, so a replica that acknowledged our write has every write that
completed before it, from any connection of any process: the records, the dispatch notes and
the kombu messages alike. (WAIT counts only its own connection's writes, and a pooled client
may send the next command on another one: hence the write of its own.)

How many replicas: `DOWNLOADER_REDIS_MIN_REPLICAS`, or, unset, 1 when the primary reports a
connected replica in `INFO replication` (read at the first such write and at most every
`AUTO_REFRESH` seconds after, so a failover or a replica added is seen within that), else 0,
which costs nothing. When the count is automatic and a replica does not confirm, the primary is
asked again: a replica that has left (it died, or the failover promoted it) is not waited for.
A count set by the operator is a requirement: fewer confirmations are an error.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)

AUTO_REFRESH = 30.0
"""Seconds between looks at how many replicas the primary has, when the count is automatic."""


class NotReplicatedError(RuntimeError):
    """Fewer replicas than required confirmed a write within the timeout."""


class Durability:
    """The wait for replicas after the writes that make a job exist or end."""

    def __init__(
        self, client: redis.Redis, namespace: str, required: int | None, timeout: float
    ) -> None:
        self.redis = client
        self.key = f"{namespace}:replicated"
        """What the probe write sets: a key of the namespace, so the ACL allows it."""
        self.required = required
        self.timeout_ms = max(1, round(timeout * 1000))
        self._auto = 0
        self._next_look = 0.0
        self._lock = threading.Lock()

    def needed(self) -> int:
        """Replicas a write waits for now."""
        if self.required is not None:
            return self.required
        with self._lock:
            if time.monotonic() >= self._next_look:
                self._auto = min(1, self._connected())
                self._next_look = time.monotonic() + AUTO_REFRESH
            return self._auto

    def _connected(self) -> int:
        try:
            info = self.redis.info("replication")
        except redis.exceptions.NoPermissionError:
            log.warning(
                "cannot read INFO replication (the ACL forbids it): writes wait for no replica; "
                "set DOWNLOADER_REDIS_MIN_REPLICAS to require one"
            )
            return 0
        return int(info.get("connected_slaves", 0))

    def wait(self) -> tuple[int, int]:
        """(replicas that confirmed every write so far, replicas needed), one round trip."""
        needed = self.needed()
        if not needed:
            return 0, 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.key, "1")
        pipe.execute_command("WAIT", needed, self.timeout_ms)
        acked = int(pipe.execute()[1])
        if acked < needed and self.required is None:
            with self._lock:
                self._next_look = 0.0  # a replica left? ask again
            needed = min(needed, self.needed())
        return acked, needed

    def confirm(self, what: str) -> None:
        """Raise `NotReplicatedError` unless enough replicas have every write so far."""
        acked, needed = self.wait()
        if acked < needed:
            raise NotReplicatedError(
                f"{what}: only {acked} of {needed} Redis replica(s) confirmed within "
                f"{self.timeout_ms / 1000:g} s (DOWNLOADER_REDIS_WAIT_TIMEOUT), so a failover "
                "could lose it; nothing was queued. Check the replicas (INFO replication), or "
                "set DOWNLOADER_REDIS_MIN_REPLICAS=0 to queue without them"
            )

    def settle(self, what: str) -> bool:
        """Wait for the replicas after a write that cannot be taken back (a job's end): a
        shortfall is logged, and a failover within it may bring the job back to be run again
        (its file is then reused from its stamp). Answers whether the replicas confirmed."""
        try:
            acked, needed = self.wait()
        except redis.RedisError as exc:
            log.warning("%s: could not wait for the replicas: %s", what, exc)
            return False
        if acked < needed:
            log.warning(
                "%s: only %d of %d Redis replica(s) confirmed within %g s",
                what,
                acked,
                needed,
                self.timeout_ms / 1000,
            )
            return False
        return True
