"""The demo's live view: a few sample predictions, then one rolling progress line (not one line per spectrum).

On a terminal the progress line is redrawn in place (at most 5 times a second); elsewhere (a log file, CI) it
is printed at each quarter of the stream, so a run leaves a handful of lines whatever its length.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LiveView"]


class LiveView:
    """Collect prediction events and print a compact view of the stream.

    Parameters
    ----------
    total : int
        Spectra expected.
    samples : int
        Predictions printed in full at the start (label, probability, true label).
    enabled : bool
        False: print nothing (``--no-live``).
    stream : file, optional
        Where to print (default ``sys.stdout``).
    """

    def __init__(self, total: int, samples: int = 5, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = max(int(total), 0)
        self.samples = samples
        self.enabled = enabled
        self.out = stream or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.received = self.correct = self.lost = 0
        self._t0: float | None = None  # the first answer: the rate excludes start-up
        self._last_draw = 0.0
        self._next_quarter = 1
        self._drawn = False

    def prediction(self, msg: dict[str, Any], where: str) -> None:
        """Record one prediction message (``labels``, ``probabilities``, ``label``); ``where`` names it (id or seq)."""
        self._start()
        self.received += 1
        ok = msg["labels"][0] == msg.get("label")
        self.correct += int(ok)
        if not self.enabled:
            return
        if self.received <= self.samples:
            mark = "ok" if ok else "--"
            self._print(f"  {mark} {where:>14s} → {msg['labels'][0]:<24s} p={msg['probabilities'][0]:.2f}  "
                        f"(true: {msg.get('label')})")
        self._progress()

    def lost_spectrum(self, what: str) -> None:
        """Record a spectrum reported lost (printed: losses are rare and matter)."""
        self._start()
        self.lost += 1
        if self.enabled:
            self._print(f"  LOST {what}")
            self._progress()

    def event(self, text: str) -> None:
        """Print a one-off event (e.g. a serial link state change)."""
        if self.enabled:
            self._print(f"  [{text}]")

    def close(self) -> None:
        """Draw the final progress line and end it."""
        if self.enabled and self.received + self.lost:
            self._draw(final=True)

    # -- internals -------------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def _line(self) -> str:
        done = self.received + self.lost
        rate = self.received / max(time.perf_counter() - (self._t0 or 0.0), 1e-3)
        acc = f"{100 * self.correct / self.received:.1f} %" if self.received else "n/a"
        return f"[demo] {done}/{self.total} answered · top-1 {acc} · lost {self.lost} · {rate:.0f} spectra/s"

    def _print(self, text: str) -> None:
        if self.tty and self._drawn:
            self.out.write("\r\033[K")
            self._drawn = False
        print(text, file=self.out, flush=True)

    def _progress(self) -> None:
        done = self.received + self.lost
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw >= 0.2 or done >= self.total:
                self._last_draw = now
                self._draw()
        elif self.total and done * 4 >= self._next_quarter * self.total and self._next_quarter <= 3:
            self._next_quarter += 1
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if self.tty:
            self.out.write("\r\033[K" + self._line() + ("\n" if final else ""))
            self.out.flush()
            self._drawn = not final
        else:
            print(self._line(), file=self.out, flush=True)
