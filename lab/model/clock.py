"""The lab's clock: simulated time that runs `time_scale` times faster than the wall clock.

A 4 GiB VM over 1 Gbit/s takes about 35 simulated seconds to move; with a time scale of 60 the lab plays it
in under a second, so a campaign rehearsal of a hundred VMs takes minutes, not hours. Every duration the
lab models (migration jobs listed for 5 minutes after they end, Kerberos tickets cached for 15 minutes, a
fault's window) is in simulated seconds.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class LabClock:
    """Monotonic simulated time. Thread-safe; the scale can change while the lab runs."""

    def __init__(self, time_scale: float = 1.0, *, start: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self._lock = threading.Lock()
        self._scale = float(time_scale)
        self._epoch = start or datetime.now(UTC)
        self._real_anchor = time.monotonic()
        self._sim_anchor = 0.0

    @property
    def time_scale(self) -> float:
        return self._scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"time_scale must be positive, got {value}")
        with self._lock:
            # Re-anchor so simulated time never jumps when the scale changes.
            now = time.monotonic()
            self._sim_anchor += (now - self._real_anchor) * self._scale
            self._real_anchor = now
            self._scale = float(value)

    def elapsed(self) -> float:
        """Simulated seconds since the lab started."""
        with self._lock:
            return self._sim_anchor + (time.monotonic() - self._real_anchor) * self._scale

    def now(self) -> datetime:
        """Simulated wall-clock time (UTC), as a host would report it."""
        return self._epoch + timedelta(seconds=self.elapsed())

    def to_real(self, sim_seconds: float) -> float:
        """How many real seconds `sim_seconds` of simulated time take at the current scale."""
        return max(0.0, sim_seconds) / self._scale

    def sleep(self, sim_seconds: float) -> None:
        time.sleep(self.to_real(sim_seconds))

    def wait(self, event: threading.Event, sim_seconds: float) -> bool:
        """Wait on `event` for at most `sim_seconds` of simulated time; True if it was set."""
        return event.wait(self.to_real(sim_seconds))
