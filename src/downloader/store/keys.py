"""The Redis schema: every key and channel name the project uses, defined once.

Every name starts with the namespace (`DOWNLOADER_NAMESPACE`), so several deployments share a
Redis. Python code gets a name from `Keys`; the Lua scripts get theirs from the same methods
(`store.scripts.key_templates` renders them with `%s` in place of the namespace and the
arguments). Nothing else spells a key.

Priorities live here too: the broker's lists and the dispatch notes are per priority level,
and `celery_priority` is the one mapping from a job's priority onto those levels.
"""

from __future__ import annotations

from dataclasses import dataclass

from downloader.jobs.models import DownloadJobStatus

STATUSES = tuple(status.value for status in DownloadJobStatus)
"""The statuses a queue keeps an index of (`Keys.queue_status`)."""
CANCELLED = "cancelled"
"""Not a status (a cancelled job is an `error` with `cancelled` set) but indexed apart too."""

PRIORITY_LEVELS = 10
"""Celery's Redis transport serves levels 0 (first) .. 9 (last), FIFO within a level."""


DURATION_BUCKETS = (1, 5, 15, 60, 300, 1800, 3600)
"""Upper bounds (seconds) of the job-duration histogram in the stats hash (`Keys.stats`:
a field `duration_le:<bound>` per bound and `+Inf`, as `metrics` exports them)."""


def celery_priority(priority: int) -> int:
    """Map InvokeAI's priority (lower runs first, default 10) onto the transport's 0..9.

    Steps of ten: below 10 is level 0, 10..19 level 1 (the default), ..., 90 and above level
    9. Monotonic, so a lower priority never starts after a higher one queued at the same time.
    The store writes each job's level into its record, so the scripts never compute it.
    """
    return min(max(priority // 10, 0), PRIORITY_LEVELS - 1)


@dataclass(frozen=True)
class Keys:
    """Every Redis key and channel the project uses, under one namespace."""

    namespace: str

    # -- one job -------------------------------------------------------------------------

    def job(self, job_id: int | str) -> str:
        """The job's record: a hash of JSON values (see `jobs.record.JobRecord`)."""
        return f"{self.namespace}:job:{job_id}"

    def secret(self, job_id: int | str) -> str:
        """The job's access token, apart from its record so that reading a job never reads
        it; deleted when the job ends."""
        return f"{self.namespace}:job:{job_id}:secret"

    def lease(self, job_id: int | str) -> str:
        """The lease of the attempt running the job: its owner, with a time to live."""
        return f"{self.namespace}:job:{job_id}:lease"

    def progress_gate(self, job_id: int | str) -> str:
        """Set for a progress interval: a multi-file parent's summed progress went out."""
        return f"{self.namespace}:job:{job_id}:gate"

    def path(self, path: str) -> str:
        """Who owns a final path (an absolute path, see `store.reservations`)."""
        return f"{self.namespace}:path:{path}"

    # -- one queue -----------------------------------------------------------------------

    def queue_jobs(self, queue_id: str) -> str:
        """Every job of the queue, by id."""
        return f"{self.namespace}:queue:{queue_id}:jobs"

    def queue_status(self, queue_id: str, status: str) -> str:
        """The queue's jobs in one status (or `cancelled`), by id."""
        return f"{self.namespace}:queue:{queue_id}:status:{status}"

    def queue_ended(self, queue_id: str) -> str:
        """The queue's finished jobs, scored by when they ended (epoch seconds)."""
        return f"{self.namespace}:queue:{queue_id}:ended"

    def paused(self, queue_id: str) -> str:
        """Set while the queue is paused (see `celery_app.control`)."""
        return f"{self.namespace}:queue:{queue_id}:paused"

    def dispatched(self, queue_id: str, level: int | str) -> str:
        """Waiting jobs of a queue and priority level, scored by when they were last sent."""
        return f"{self.namespace}:dispatched:{queue_id}:{level}"

    def events(self, queue_id: str) -> str:
        """The channel of every event of the queue (`*`: a pattern for every queue)."""
        return f"{self.namespace}:events:{queue_id}"

    # -- channels ------------------------------------------------------------------------

    def job_events(self, job_id: int | str) -> str:
        """The events of one job no client follows (one queued with `follow=False`)."""
        return f"{self.namespace}:job-events:{job_id}"

    def client_channel(self, client_id: str) -> str:
        """A client's own channel: the events of every job it queued and follows (the job's
        record names the client: `JobRecord.follower`), and the wake-up of its listener."""
        return f"{self.namespace}:client:{client_id}"

    def job_channel(self, job_id: int | str, follower: str | None) -> str:
        """Where a job's own events go, beside its queue's channel: its follower's channel,
        so that a client subscribes once rather than once per job; else the job's own."""
        return self.job_events(job_id) if follower is None else self.client_channel(follower)

    # -- the broker (kombu's keys, named as kombu names them) ------------------------------

    def celery_queue(self, queue_id: str) -> str:
        """The Celery queue of a job queue."""
        return f"{self.namespace}.{queue_id}"

    def queue_of_celery(self, celery_queue: str) -> str | None:
        """The job queue of a Celery queue (`celery_queue`'s inverse); None for another's."""
        prefix = self.celery_queue("")
        return celery_queue[len(prefix) :] if celery_queue.startswith(prefix) else None

    @property
    def celery_prefix(self) -> str:
        """What kombu puts before every key of the broker and the result backend."""
        return f"{self.namespace}:celery:"

    def broker_list(self, queue_id: str, level: int) -> str:
        """The Redis list kombu keeps a queue's messages of one priority level in."""
        name = f"{self.celery_prefix}{self.celery_queue(queue_id)}"
        return f"{name}:{level}" if level else name

    # -- limits shared by the fleet (see store.limits, store.pacing) ----------------------

    @property
    def limits(self) -> str:
        """The limits set at run time: a hash of JSON values, the fleet's under `fleet` and
        each host's under its name; they win over the settings' until unset."""
        return f"{self.namespace}:limits"

    def host_slots(self, host: str) -> str:
        """The connections open to a host: holder -> when its lease runs out (server ms)."""
        return f"{self.namespace}:limits:slots:{host}"

    def host_waiters(self, host: str) -> str:
        """Who waits for a slot of a host: holder -> rank (priority first, then arrival)."""
        return f"{self.namespace}:limits:waiters:{host}"

    def host_waiters_until(self, host: str) -> str:
        """The same waiters by when they stop counting unless they try again (server ms)."""
        return f"{self.namespace}:limits:waiters-until:{host}"

    def host_pause(self, host: str) -> str:
        """Set while the fleet leaves a host alone (a 429 or 503), with the pause's length."""
        return f"{self.namespace}:limits:pause:{host}"

    def host_probe(self, host: str) -> str:
        """Set from a host's pause until one connection after it got an answer: until then
        connections to it go one at a time (the requests resume gradually)."""
        return f"{self.namespace}:limits:probe:{host}"

    def host_prober(self, host: str) -> str:
        """The holder of the one connection probing a host after its pause, with a TTL."""
        return f"{self.namespace}:limits:prober:{host}"

    def host_strikes(self, host: str) -> str:
        """How many pauses a host asked for lately: the next backoff's exponent."""
        return f"{self.namespace}:limits:strikes:{host}"

    def host_requests(self, host: str) -> str:
        """A host's bucket of request tokens (its requests per second)."""
        return f"{self.namespace}:limits:requests:{host}"

    def host_recent(self, host: str) -> str:
        """Bytes read from a host per period of a few seconds: its recent rate."""
        return f"{self.namespace}:limits:recent:{host}"

    def bandwidth_bucket(self, scope: str) -> str:
        """A bucket of byte tokens: `fleet`, `host:<host>` or `job:<id>`."""
        return f"{self.namespace}:limits:bucket:{scope}"

    @property
    def limit_hosts(self) -> str:
        """The hosts connected to lately, scored by when (epoch seconds): what
        `downloader limits` reports usage for."""
        return f"{self.namespace}:limits:hosts"

    @property
    def limit_stats(self) -> str:
        """Counters per host label (`bytes:<label>`, `waits:<label>`, `pauses:<label>`)
        that `metrics` exports."""
        return f"{self.namespace}:limits:stats"

    # -- the namespace -------------------------------------------------------------------

    def worker(self, name: str) -> str:
        """A worker's heartbeat: what it runs and consumes, with a time to live."""
        return f"{self.namespace}:worker:{name}"

    @property
    def workers(self) -> str:
        """Worker names scored by when their heartbeat expires."""
        return f"{self.namespace}:workers"

    @property
    def queues(self) -> str:
        """The names of the queues that hold a job."""
        return f"{self.namespace}:queues"

    @property
    def paused_queues(self) -> str:
        """The ids of the paused queues, to count them."""
        return f"{self.namespace}:paused"

    @property
    def stats(self) -> str:
        """The counters `metrics` exports (jobs ended, bytes, retries, durations)."""
        return f"{self.namespace}:stats"

    @property
    def next_id(self) -> str:
        return f"{self.namespace}:next_id"

    @property
    def job_sequence(self) -> str:
        """Counts claims: each claimed job's `job_sequence`."""
        return f"{self.namespace}:job_sequence"

    @property
    def running(self) -> str:
        """The running jobs of every queue, which the orphan watch looks at."""
        return f"{self.namespace}:running"

    @property
    def sweep_gate(self) -> str:
        """Set for a sweep interval: some process swept the finished jobs past their TTL."""
        return f"{self.namespace}:sweep:gate"

    @property
    def marker(self) -> str:
        """A random value the first process of the namespace writes (see `JobStore.mark`)."""
        return f"{self.namespace}:redis-marker"

    @property
    def resumable(self) -> str:
        """A hash from `<dest>\\n<url>` (a repo's file: `<dest>\\n<its final path>`) to the job
        a stopped `downloader get` left waiting, which the same `get` resumes."""
        return f"{self.namespace}:cli:resumable"
