"""One progress-bar helper for every loop: a tqdm bar on a terminal, sparse lines in a log.

tqdm redraws its bar with carriage returns. Written to a file (``python train.py > log 2>&1``)
every redraw stays in the file, so a log gets one "line" per update. `progress_bar` returns a
tqdm bar when its stream is a terminal, and otherwise a `LineProgress` that writes a whole
line only when a new 10 % of the total is reached or `LINE_INTERVAL_S` seconds have passed
since the last line (and once at the end), never more than one line per update.

Every call site in the project uses `progress_bar`; a test checks that nothing else imports
tqdm.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

from tqdm import tqdm

# Seconds between two progress lines when the output is not a terminal (a new 10 % of the
# total also writes a line).
LINE_INTERVAL_S = 10.0


class LineProgress:
    """The part of tqdm's interface the project uses, writing plain lines to a log.

    Args:
        iterable: iterate over this (None: the caller calls `update`).
        total: expected number of updates (None: unknown; then only the time rule applies).
        desc: label at the start of each line.
        initial: starting count (a resumed epoch).
        unit: what is counted, for the rate.
        file: the stream (default sys.stderr).
        interval_s: seconds between lines when no new 10 % was reached.
        clock: monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", initial: int = 0, unit: str = "it",
                 file: TextIO | None = None, interval_s: float = LINE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.n = int(initial)
        self.unit = unit
        self.file = file
        self.interval_s = float(interval_s)
        self.clock = clock
        self.postfix = ""
        self._initial = self.n
        self._start = clock()
        self._last_line_t = self._start
        self._last_line_n = self.n
        self._last_tenth = self._tenth(self.n)
        self._closed = False

    def _tenth(self, n: int) -> int:
        return int(10 * n / self.total) if self.total else -1

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress was built without an iterable; call update()")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Values shown at the end of the next line (like tqdm's)."""
        items = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        """Count `n` more; write a line if a new 10 % was reached or the interval passed."""
        self.n += n
        now = self.clock()
        tenth = self._tenth(self.n)
        if tenth > self._last_tenth or now - self._last_line_t >= self.interval_s:
            self._write(now)

    def close(self) -> None:
        """Write the final count if it was not the last line written."""
        if self._closed:
            return
        self._closed = True
        if self.n != self._last_line_n:
            self._write(self.clock())

    def line(self, now: float) -> str:
        """The text of a progress line at time `now`."""
        elapsed = now - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: " if self.desc else "", count]
        if self.total:
            parts.append(f" ({100 * self.n / self.total:.0f} %)")
        parts.append(f" {tqdm.format_interval(elapsed)} elapsed")
        if rate > 0:
            parts.append(f", {rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f", {tqdm.format_interval((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _write(self, now: float) -> None:
        stream = self.file if self.file is not None else sys.stderr
        stream.write(self.line(now) + "\n")
        stream.flush()
        self._last_line_t = now
        self._last_line_n = self.n
        self._last_tenth = self._tenth(self.n)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", initial: int = 0, unit: str = "it", disable: bool = False,
                 leave: bool = False, file: TextIO | None = None,
                 **tqdm_kwargs: Any) -> tqdm | LineProgress:  # fmt: skip
    """A progress bar for `iterable` (or for `update` calls): tqdm on a terminal, else lines.

    Args:
        iterable: iterate over this (None: call `update`).
        total: number of updates expected (default: len(iterable) when it has one).
        desc: label.
        initial: starting count.
        unit: what is counted.
        disable: show nothing (a disabled tqdm, which still iterates and counts).
        leave: keep the tqdm bar on screen when done (terminal only).
        file: the stream (default sys.stderr); its isatty() picks the kind.
        **tqdm_kwargs: further tqdm options (terminal only), e.g. dynamic_ncols.

    Returns:
        An object with tqdm's `update`, `set_postfix`, `close` and iteration.
    """
    stream = file if file is not None else sys.stderr
    if disable or _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit,
                    disable=disable, leave=leave, file=file, **tqdm_kwargs)  # fmt: skip
    return LineProgress(iterable, total=total, desc=desc, initial=initial, unit=unit,
                        file=file)  # fmt: skip
