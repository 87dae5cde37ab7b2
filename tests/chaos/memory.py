"""Sampling a process's resident memory while a test runs."""

from __future__ import annotations

import threading

import psutil


class RssSampler:
    """Samples the RSS of process ``pid`` every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self.start_rss = self._process.memory_info().rss
        self.peak_rss = self.start_rss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak_rss - self.start_rss) / 2**20
