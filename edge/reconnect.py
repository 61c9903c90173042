"""Reconnecting a lost live source (camera or stream): bounded back-off, then give up with a reason.

`Reconnect` is the policy of one source: the delays between attempts (`backoff_delays`), the
attempts made since the last good frame, how many times the source came back, and the error
when it did not. The reader thread (`edge/frames.py: FrameSource`) calls `reopen` when a read
fails and `frame_arrived` after each good frame. Video files are not reconnected: their end is
the end of the run (or, with `--loop`, they are opened again from the start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from .sources import Capture, SourceSpec


def backoff_delays(attempts: int, first: float = 0.5, cap: float = 4.0) -> tuple[float, ...]:
    """Reconnect delays: first, doubling, capped (4 attempts: 0.5, 1, 2, 4 s)."""
    return tuple(min(first * 2**i, cap) for i in range(attempts))


class Reconnect:
    """Reopen a lost source with `delays` between attempts (`open`: the source, or None when it
    does not open); `reconnects` counts the times it came back."""

    def __init__(self, spec: SourceSpec, delays: Sequence[float], open: Callable[[], Capture | None],
                 log: Callable[[str], None] = print):
        self.spec, self.delays, self._open, self.log = spec, tuple(delays), open, log
        self.attempt = 0  # attempts since the last good frame
        self.reconnects = 0

    def reopen(self, stop: threading.Event) -> tuple[Capture | None, str | None]:
        """(the source reopened, None), or (None, why) when out of attempts; (None, None) when
        `stop` is set while waiting."""
        t_lost = time.perf_counter()
        n = len(self.delays)
        while self.attempt < n and not stop.is_set():
            delay = self.delays[self.attempt]
            self.attempt += 1
            self.log(f"{self.spec} lost; reopening in {delay:g} s (attempt {self.attempt}/{n})")
            if stop.wait(delay):
                return None, None
            cap = self._open()
            if cap is not None:
                return cap, None
        if stop.is_set():
            return None, None
        return None, (f"{self.spec} lost and not recovered after {n} reconnect attempt{'s' * (n != 1)} "
                      f"over {time.perf_counter() - t_lost:.1f} s")  # opening may take longer than the waits

    def frame_arrived(self) -> None:
        """A good frame: a source being reconnected is back (logged, counted), attempts start over."""
        if self.attempt:
            self.log(f"{self.spec} is back")
            self.reconnects += 1
            self.attempt = 0
