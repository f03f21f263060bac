"""Progress of fedsafe's long loops (generation batches, federated rounds, fine-tune steps) with
rate and time left.

On a terminal it is one status line that rewrites itself (fedsafe/logs.py keeps log lines from
tearing it). Elsewhere (CI logs, Ray actors, `flwr run --stream`) it is a plain log line every
`every` seconds and one at the end, so a log shows progress without a line per batch.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from fedsafe import logs

PLAIN_EVERY = 15.0  # seconds between plain progress lines
LIVE_EVERY = 0.2  # seconds between redraws of the terminal line


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def describe(label: str, done: int, total: int, elapsed: float, unit: str) -> str:
    """'label: 64/140 prompts, 3.2 prompts/s, 24 s left'; a slow unit reads as time per unit
    ('52 s/round'); no rate before the first unit is done, and the total time once all are."""
    text = f"{label}: {done}/{total} {unit}{'s' if total != 1 else ''}"
    if done <= 0 or elapsed <= 0:
        return text
    rate = done / elapsed
    speed = f"{rate:.1f} {unit}s/s" if rate >= 1 else f"{duration(elapsed / done)}/{unit}"
    if done >= total:
        return f"{text}, {speed}, {duration(elapsed)}"
    return f"{text}, {speed}, {duration((total - done) / rate)} left"


class Progress:
    """Counts `total` units of work; `advance()` after each batch of them, `close()` when stopped
    early (a completed count closes itself)."""

    def __init__(self, label: str, total: int, unit: str, *, logger: logging.Logger,
                 clock: Callable[[], float] = time.monotonic, live: bool | None = None,
                 every: float = PLAIN_EVERY):
        self.label, self.total, self.unit, self.logger, self.clock = label, total, unit, logger, clock
        self.live = logs.live_console() if live is None else live
        self.every = LIVE_EVERY if self.live else every
        self.done = 0
        self.started = self.shown = clock()
        self.closed = False

    def text(self) -> str:
        return describe(self.label, self.done, self.total, self.clock() - self.started, self.unit)

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.done >= self.total:
            self.close()
        elif self.clock() - self.shown >= self.every:
            self.shown = self.clock()
            if self.live:
                logs.show_status(self.text())
            else:
                self.logger.info(self.text(), extra={"progress": True})

    def close(self) -> None:
        """The final line, once: on a terminal the status line becomes an ordinary log line."""
        if self.closed:
            return
        self.closed = True
        if self.live:
            logs.show_status(None)
        self.logger.info(self.text())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
