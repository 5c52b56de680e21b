"""Fixed-window counters in this process's memory: the subscriber limits' fallback
without Redis.

A window is `floor(now / window_s)`; when it rolls over, every count is forgotten at
once, so memory is bounded by the keys seen in one window (no per-key timers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class WindowCounter:
    """Counts hits per key within the current window of `window_s` seconds."""

    def __init__(self, window_s: float, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 1_000_000) -> None:
        self.window_s = window_s
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}
        self._max_keys = max_keys

    def hit(self, key: str) -> int:
        """Count one hit for `key`; returns the count so far in this window."""
        window = math.floor(self._clock() / self.window_s)
        if window != self._window or len(self._counts) >= self._max_keys:
            self._window = window
            self._counts = {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    def retry_after_s(self) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        now = self._clock()
        return max(1, math.ceil((math.floor(now / self.window_s) + 1) * self.window_s - now))
