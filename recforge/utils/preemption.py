"""Preemption: SIGTERM and SIGINT stop training at the next step boundary, after a checkpoint.

A cluster scheduler that preempts a job sends SIGTERM and, after a grace period, SIGKILL.
While :class:`StopSignals` is installed, the first SIGTERM or SIGINT only records a request;
the training loop sees it at the next step boundary, saves a checkpoint and raises
:class:`Preempted`, which the CLI turns into one line and exit status ``128 + signal``
(143 for SIGTERM, 130 for SIGINT: the shell's convention for a process ended by that signal,
so that a scheduler retries the job and ``recforge train ... && recforge export ...`` stops).
A second signal ends the process at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Optional

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Turns SIGTERM and SIGINT into a stop request while installed (a context manager).

    Only the main thread can install signal handlers; elsewhere this does nothing and the
    signals keep their usual effect. DataLoader workers forked while it is installed inherit
    the handler, which ignores the signal there: the trainer shuts its workers down itself.

    Attributes:
        signum: the first signal received (0: none).

    """

    def __init__(self) -> None:
        self.signum = 0
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker
        if self.signum:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        logger.warning(
            "received %s: stopping after this step with a checkpoint (send it again to stop"
            " at once, without one)",
            signal.Signals(signum).name,
        )
