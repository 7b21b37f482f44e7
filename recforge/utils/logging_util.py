"""Logging set-up and the training progress line."""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from typing import Optional

_configured = False


def setup_logging(level: int = logging.INFO) -> None:
    """Logs recforge's ``time level name: message`` lines to stderr (once per process)."""
    global _configured
    if not _configured:
        _configured = True
        # our own handler: torch/torchrec may have configured the root logger already
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package_logger = logging.getLogger("recforge")
        package_logger.addHandler(handler)
        package_logger.setLevel(level)
        package_logger.propagate = False
        # torchrec's planner is chatty about things a user cannot act on
        for name in (
            "torchrec.distributed.planner",
            "torchrec.distributed.utils",
            "torch.fx._symbolic_trace",
            "root",
        ):
            logging.getLogger(name).setLevel(logging.ERROR)


class Throughput:
    """Samples/s and ETA between two log points.

    Args:
        total_steps: steps the run will take, if known (for the ETA).

    """

    def __init__(self, total_steps: Optional[int] = None) -> None:
        self.total_steps = total_steps
        self._last_time = time.perf_counter()
        self._samples = 0

    def add(self, samples: int) -> None:
        """Counts a finished batch."""
        self._samples += samples

    def report(self, step: int, samples_per_step: float) -> tuple:
        """Returns ``(samples/s, eta text)`` since the last report and restarts the clock."""
        now = time.perf_counter()
        rate = self._samples / max(now - self._last_time, 1e-9)
        self._last_time, self._samples = now, 0
        eta = "?"
        if self.total_steps and rate > 0 and samples_per_step > 0:
            seconds = (self.total_steps - step) * samples_per_step / rate
            eta = str(timedelta(seconds=int(max(seconds, 0))))
        return rate, eta
