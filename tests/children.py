"""The processes tests start, with the signal dispositions a terminal would give them.

A shell without job control (a script, CI, `cmd &`) starts background commands with SIGINT
and SIGQUIT ignored, and an ignored disposition survives `exec`: a `downloader get` that a
test interrupts with SIGINT would then carry on and exit 0. So every child is started with
both signals back to their defaults, whatever the test run itself inherited.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def default_signals() -> None:
    """In the child, before `exec`: SIGINT and SIGQUIT as a terminal delivers them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def popen(args: Any, **options: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` with `default_signals` in the child."""
    return subprocess.Popen(args, preexec_fn=default_signals, **options)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 15 s: a process whose Redis the test stopped first would
    retry it, and on a loaded machine an orderly exit can take longer than a test should
    wait (Flower waits for its inspect broadcasts: a second when idle). The callers' tests
    are not about the exit."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
