"""The names of the lifecycle events every job publishes (InvokeAI's download-queue events).

Workers publish them, clients and the REST event stream receive them; the payloads carry
`event`, `job_id`, `queue_id` and `timestamp` beside each event's own fields (see
`downloader.store.bus`, which publishes them on Redis pub/sub).
"""

DOWNLOAD_STARTED = "download_started"
DOWNLOAD_PROGRESS = "download_progress"
DOWNLOAD_COMPLETE = "download_complete"
DOWNLOAD_ERROR = "download_error"
DOWNLOAD_CANCELLED = "download_cancelled"
DOWNLOAD_PAUSED = "download_paused"
"""A caller paused the job: its worker stopped, its partial file stays for the resume."""
DOWNLOAD_RESUMED = "download_resumed"
"""A paused job (`retried`: false) or a failed or cancelled one (`retried`: true) waits again."""
DOWNLOAD_WAITING = "download_waiting"
"""A running job waits for the fleet's limits (`reason`), or no longer does (`reason` null)."""
HOST_PAUSED = "host_paused"
"""A job's host answered 429 or 503 and the fleet leaves it alone for `seconds` (`host`)."""

MULTIFILE_STARTED = "multifile_download_started"
MULTIFILE_PROGRESS = "multifile_download_progress"
MULTIFILE_COMPLETE = "multifile_download_complete"
MULTIFILE_ERROR = "multifile_download_error"
MULTIFILE_CANCELLED = "multifile_download_cancelled"
MULTIFILE_PAUSED = "multifile_download_paused"
MULTIFILE_RESUMED = "multifile_download_resumed"
