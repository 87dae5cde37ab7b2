"""Log set-up for the process: plain text for people, JSON lines for log pipelines."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every failed connection attempt at ERROR; our consumer already reports them.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("aiokafka.conn").setLevel(logging.CRITICAL)


class RepeatLimiter(logging.Filter):
    """Lets the same message through at most once per ``interval`` seconds, counting the rest.

    For a library that logs every failed attempt of a retry loop (aiokafka while the broker is
    away): the first line says what is wrong; repeats within ``interval`` are held back, and the
    next line let through says how many were (``... (12 more like this in the last 60 s not
    shown)``). "The same" means the same logger, level and text. Records for which ``exempt``
    is true always pass. Attach one instance to each logger it should quiet (a logger's filters
    do not see records propagated from its children).
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        exempt: Callable[[logging.LogRecord], bool] = lambda record: False,
        clock: Callable[[], float] = time.monotonic,
        max_messages: int = 256,
    ) -> None:
        super().__init__()
        self.interval = interval
        self._exempt = exempt
        self._clock = clock
        self._max_messages = max_messages
        #: Per message: when it was last let through, and how many repeats were held back since.
        #: (Ordered: the oldest is dropped in constant time, a plain dict finds it past holes.)
        self._seen: OrderedDict[tuple[str, int, str], list[float | int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if self._exempt(record):
            return True
        text = _message_of(record)
        key = (record.name, record.levelno, text)
        now = self._clock()
        seen = self._seen.pop(key, None)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            self._seen[key] = seen  # most recently seen last
            return False
        held_back = int(seen[1]) if seen is not None else 0
        since = now - seen[0] if seen is not None else 0.0
        self._seen[key] = [now, 0]
        while len(self._seen) > self._max_messages:
            self._seen.popitem(last=False)
        if held_back:
            record.msg = f"{text} ({held_back} more like this in the last {since:.0f} s not shown)"
            record.args = None
        return True


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string is the handler's problem to report, not the filter's
        return str(record.msg)
