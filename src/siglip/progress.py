"""A minimal progress bar on stderr (items, rate, ETA) so long jobs show life without an extra dependency."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(total, "embedding", unit="img") as bar: bar.update(n)``; silent when ``disable`` or when
    there is nothing to do (``total == 0``). Call ``bar.clear()`` before printing other lines on the same stream."""

    def __init__(
        self, total: int | None, desc: str = "", unit: str = "it", disable: bool = False, stream: TextIO | None = None
    ) -> None:
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable or total == 0
        self.stream = stream or sys.stderr
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = 0  # the widest line drawn on the current terminal line, for clear() and shorter redraws

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        self._draw()

    def _line(self) -> str:
        rate = self.rate
        if self.total:
            frac = min(self.count / self.total, 1.0)
            line = f"{self.desc} [{'#' * int(frac * 24):<24}] {self.count}/{self.total} {self.unit}"
            if not self.count or rate <= 0:  # nothing measured yet: no rate, no made-up time left
                return line
            left = f", {(self.total - self.count) / rate:.0f}s left" if self.count < self.total else ""
            return f"{line} {rate:.1f} {self.unit}/s{left}"
        return f"{self.desc} {self.count} {self.unit} {rate:.1f} {self.unit}/s"

    def _draw(self, force: bool = False) -> None:
        if self.disable:
            return
        now = time.perf_counter()
        # Redraw in place on a terminal; in logs, write a line at most every 10 s.
        interval = 0.1 if self._interactive else 10.0
        if not force and now - self._last_draw < interval:
            return
        self._last_draw = now
        line = self._line()
        if self._interactive:  # padded over what a longer earlier line left on the screen
            self._drawn = max(self._drawn, len(line))
            self.stream.write(line.ljust(self._drawn) + "\r")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar from a terminal line, so that a message printed next starts on a clean line; the next
        update draws the bar again (below the message)."""
        if self._drawn:
            self.stream.write(" " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0
            self._last_draw = 0.0

    def close(self) -> None:
        if self.disable:
            return
        self.stream.write(self._line().ljust(self._drawn) + "\n")
        self.stream.flush()
        self.disable = True
