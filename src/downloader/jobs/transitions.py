"""The typed refusal of a job control a job's state does not allow.

Pausing, resuming, retrying and reprioritising one job (`DownloadQueueService.pause_job` and
its siblings, the REST API's `/pause`, `/resume`, `/retry` and `PATCH`, the CLI) are refused
with `InvalidTransitionError` when the job cannot make that move now: a completed job is
not resumed, a running one is not retried. The REST API answers it as a 409.
"""

from __future__ import annotations


class InvalidTransitionError(Exception):
    """Job `job_id` cannot `action` in its current state; the message says why.

    Attributes:
        job_id: the job.
        action: `pause`, `resume`, `retry` or `priority`.
        state: the job's state as the refusal saw it (`completed`, `running`, ...).
    """

    def __init__(self, job_id: int, action: str, state: str, why: str) -> None:
        super().__init__(f"cannot {action} job {job_id}: {why}")
        self.job_id = job_id
        self.action = action
        self.state = state
