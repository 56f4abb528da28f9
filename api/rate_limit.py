"""Token buckets: one per key and one per client address, each refilled at its rate."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .keys import Rate


class TokenBuckets:
    """Named token buckets. A bucket holds up to `rate.count` tokens and gains
    `rate.per_second` a second; a request takes one. At most `max_buckets` are kept (the
    least recently used go first; a forgotten bucket comes back full), so that a flood
    of client addresses cannot grow memory without bound."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, name: str, rate: Rate) -> float:
        """Take a token from bucket `name`: 0.0 when there was one, else the seconds until
        there will be (the request is refused and takes nothing)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(name, (float(rate.count), now))
            tokens = min(float(rate.count), tokens + (now - at) * rate.per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / rate.per_second
            self._buckets[name] = (tokens, now)
            while len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        return wait


__all__ = ["TokenBuckets"]
