"""Training progress on a terminal: a tqdm bar with samples/s, loss and ETA.

On a terminal (stderr is a TTY) the bar replaces the per-step log lines, and recforge's other
log lines are printed above it; otherwise (a file, a pipe, a scheduler's log) nothing changes:
plain log lines every ``log_step_count_steps`` and one per epoch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import IO, Optional

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from recforge.utils.logging_util import PACKAGE_LOGGER


def is_terminal(stream: Optional[IO[str]] = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class TrainProgress:
    """A progress bar over training steps, or nothing.

    Args:
        enabled: show the bar (the chief rank, on a terminal).
        initial: the step training starts at (resumed runs).
        total: the step training ends at, if known.
        stream: where the bar goes (default stderr).

    """

    def __init__(
        self,
        enabled: bool,
        initial: int = 0,
        total: Optional[int] = None,
        stream: Optional[IO[str]] = None,
    ) -> None:
        self.bar: Optional[tqdm] = None
        if enabled:
            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                file=stream if stream is not None else sys.stderr,
                leave=True,
            )

    @property
    def active(self) -> bool:
        """Whether a bar is shown (then per-step log lines are not)."""
        return self.bar is not None

    def step(self, total: Optional[int] = None) -> None:
        """Advances one step; ``total`` updates the expected number of steps once known."""
        if self.bar is None:
            return
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(1)

    def show(self, epoch: int, loss: float, samples_per_second: float, extra: str = "") -> None:
        """Shows the latest epoch, loss and throughput next to the bar."""
        if self.bar is not None:
            text = f"epoch {epoch} | loss {loss:.5f} | {samples_per_second:.0f} samples/s{extra}"
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """Removes nothing: the finished bar stays on screen."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @contextlib.contextmanager
    def logs_above(self) -> Iterator[None]:
        """While the bar is shown, recforge's log lines are printed above it."""
        if self.bar is None:
            yield
            return
        with logging_redirect_tqdm(loggers=[logging.getLogger(PACKAGE_LOGGER)]):
            yield
