"""Logging set-up and the training progress line.

Used as a library, recforge configures only its own ``recforge`` logger
(:func:`setup_logging`); the ``recforge`` command, which owns its process, also quiets
third-party loggers (:func:`setup_cli_logging`).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from typing import Optional

PACKAGE_LOGGER = "recforge"
#: the name of the stderr handler :func:`setup_logging` adds to the ``recforge`` logger
HANDLER_NAME = "recforge-stderr"
#: loggers whose messages a command-line user cannot act on; torchrec logs some through the
#: root logger (``logging.warning``)
QUIET_LOGGERS = (
    "torchrec.distributed.planner",
    "torchrec.distributed.utils",
    "torch.fx._symbolic_trace",
    "",
)


def setup_logging(level: int = logging.INFO, force: bool = False) -> None:
    """Gives the ``recforge`` logger ``time level name: message`` lines on stderr.

    Touches no other logger. Does nothing when the ``recforge`` logger already has a handler
    (set up earlier, or by the application) or, unless ``force``, when the root logger has one:
    an application that configured logging receives recforge's records through propagation,
    at the levels it chose.

    Args:
        level: the ``recforge`` logger's level, when it has none yet (or ``force``).
        force: set up even when the root logger has handlers (the command line).

    """
    package_logger = logging.getLogger(PACKAGE_LOGGER)
    if package_logger.handlers or (logging.getLogger().handlers and not force):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger.addHandler(handler)
    if force or package_logger.level == logging.NOTSET:
        package_logger.setLevel(level)
    package_logger.propagate = False  # our handler prints it; the root's would print it twice


def setup_cli_logging(level: int = logging.INFO) -> None:
    """Logging of the ``recforge`` command: recforge's lines, third-party chatter off.

    Only for a process that recforge's command line owns: it sets the levels of the root
    logger and of torch/torchrec loggers (:data:`QUIET_LOGGERS`) to ``ERROR``.
    """
    setup_logging(level, force=True)
    for name in QUIET_LOGGERS:
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
