"""The book's small utilities: a stopwatch and running sums."""
from __future__ import annotations

import numbers
import time
from typing import List

import numpy as np

__all__ = ["Timer", "Accumulator"]


class Timer:
    """Records the durations of start()/stop() intervals; starts on creation."""

    def __init__(self):
        self.times: List[float] = []
        self.start()

    def start(self) -> None:
        """Start a new interval (the one running, if any, is dropped unrecorded)."""
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Stop the current interval and return its length in seconds."""
        self.times.append(time.perf_counter() - self._t0)
        return self.times[-1]

    def avg(self) -> float:
        """The mean recorded interval in seconds (0.0 before the first stop)."""
        return sum(self.times) / len(self.times) if self.times else 0.0

    def sum(self) -> float:
        """The total of the recorded intervals in seconds."""
        return sum(self.times)

    def cumsum(self) -> List[float]:
        """The running totals of the recorded intervals: the time at the end of each."""
        return np.cumsum(self.times).tolist()


class Accumulator:
    """Running sums over `n` variables: ``add(*values)``, ``reset()``, ``acc[i]``."""

    def __init__(self, n: int):
        # A NumPy int is a count like any other (every other int argument takes one); a bool
        # or a float is not.
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        self.data = [0.0] * int(n)

    def add(self, *args: float) -> None:
        """Add one value to each running sum (exactly `n` values, in order)."""
        if len(args) != len(self.data):
            raise ValueError(f"add() takes {len(self.data)} values, got {len(args)}")
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self) -> None:
        """Set every sum back to zero."""
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]

    def __len__(self) -> int:
        return len(self.data)
