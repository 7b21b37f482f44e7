"""Turning known bad-input errors into one clear line instead of a stack trace."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator

logger = logging.getLogger("recforge")


class RecforgeError(ValueError):
    """Base of every error caused by the user's input (config, data, checkpoint, flag).

    The CLI prints these as one line, ``recforge: error: WHERE: what was expected, what was
    found``, and exits with status 2; any other exception is a bug in recforge and keeps its
    traceback. This module imports nothing from recforge, so every module can raise these.
    """


class DataError(RecforgeError):
    """Input data does not match the config: the message names the file, row and column."""


class CheckpointError(RecforgeError):
    """A checkpoint is missing, damaged, or does not fit the model."""


class ExportError(RecforgeError):
    """An export directory, its files or an export request is missing or invalid."""


class PredictError(RecforgeError):
    """A prediction request does not fit the exported model (outputs, columns, input)."""


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; ``--continue_train`` resumes it.

    Attributes:
        signum: the signal.
        step: the global step of the saved checkpoint.
        checkpoint: the saved checkpoint's directory.
        exit_code: ``128 + signum``.

    """

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        super().__init__(
            f"training stopped by {signal.Signals(signum).name} at step {step}, checkpoint"
            f" {checkpoint} saved: resume with --continue_train"
        )


def _message(error: Exception) -> str:
    """The error's message, without the worker traceback a DataLoader wraps around it."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


@contextlib.contextmanager
def user_facing_errors(
    show_traceback: bool = False, shown: Callable[[str], str] = str
) -> Iterator[None]:
    """Exits with status 2 and a one-line message for errors caused by the user's input.

    Training stopped by a signal (:class:`Preempted`) exits with
    its own status and line, with or without ``show_traceback``.

    Args:
        show_traceback: re-raise instead (the CLI's ``--traceback``).
        shown: rewrites the message before it is printed (the CLI names a remote
            ``model_dir``'s local working copy by its URL).

    """
    try:
        yield
    except Exception as e:
        if isinstance(e, Preempted):
            print(f"recforge: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        if show_traceback or not isinstance(e, (RecforgeError, FileNotFoundError)):
            raise
        print(f"recforge: error: {shown(_message(e))}", file=sys.stderr)
        sys.exit(2)
