"""Ending a child process politely, then firmly: used by the dev broker, tests and benchmarks."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` unless the process has exited, wait up to ``timeout``, then SIGKILL.

    Returns the exit status (negative for a signal, so a process that had to be killed shows -9).
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
