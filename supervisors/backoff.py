"""The pause before a restart, computed by a tenacity wait strategy."""

from __future__ import annotations

import tenacity
import tenacity.wait

__all__ = ["RestartBackoff", "default_backoff"]


def default_backoff() -> tenacity.wait.wait_base:
    """50 ms, doubling with each restart of the same child, at most 2 s, plus up to 50 ms jitter."""
    return tenacity.wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05)


class RestartBackoff:
    """Asks a tenacity wait strategy how long to pause before the ``attempt``-th restart.

    A restart is a retry of the child's ``run()``, so the strategy is given the state tenacity
    itself would give it: tenacity evaluates ``wait`` after attempt N has ended, on a
    ``RetryCallState`` whose ``attempt_number`` is N and whose ``outcome`` holds that attempt's
    exception or result (see ``BaseRetrying._run_wait`` and ``RetryCallState.set_exception`` /
    ``set_result`` in tenacity/__init__.py, tenacity 9.2). Strategies that read the outcome, such
    as ``wait_exception``, therefore see the crash.
    """

    def __init__(self, wait: tenacity.wait.wait_base) -> None:
        self._retrying = tenacity.Retrying(wait=wait)

    def delay(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait before restarting a child that ended with ``error`` (None: returned)."""
        state = tenacity.RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        if error is None:
            state.set_result(None)
        else:
            state.set_exception((type(error), error, error.__traceback__))
        return max(0.0, float(self._retrying.wait(state)))
