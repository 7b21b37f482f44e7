"""Turning known bad-input errors into one clear line instead of a stack trace."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

logger = logging.getLogger("recforge")


class ExportError(ValueError):
    """An export directory, its files or an export request is missing or invalid."""


class PredictError(ValueError):
    """A prediction request does not fit the exported model (outputs, columns, input)."""


def _user_error_types() -> tuple:
    from recforge.config import ConfigError
    from recforge.datasets import DataError
    from recforge.features import FeatureError
    from recforge.modules.embedding import EmbeddingGroupError
    from recforge.retrieval import RetrievalError
    from recforge.utils.checkpoint import CheckpointError
    from recforge.utils.registry import PluginError, RegistryError

    return (
        ExportError,
        PredictError,
        ConfigError,
        DataError,
        FeatureError,
        EmbeddingGroupError,
        RetrievalError,
        CheckpointError,
        RegistryError,
        PluginError,
        FileNotFoundError,
    )


def _message(error: Exception) -> str:
    """The error's message, without the worker traceback a DataLoader wraps around it."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


@contextlib.contextmanager
def user_facing_errors(show_traceback: bool = False) -> Iterator[None]:
    """Exits with status 2 and a one-line message for errors caused by the user's input.

    Training stopped by a signal (:class:`~recforge.utils.preemption.Preempted`) exits with
    its own status and line, with or without ``show_traceback``.

    Args:
        show_traceback: re-raise instead (the CLI's ``--traceback``).

    """
    try:
        yield
    except Exception as e:
        from recforge.utils.preemption import Preempted

        if isinstance(e, Preempted):
            print(f"recforge: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        if show_traceback or not isinstance(e, _user_error_types()):
            raise
        print(f"recforge: error: {_message(e)}", file=sys.stderr)
        sys.exit(2)
