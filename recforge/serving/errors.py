"""The errors of the server: one for bad settings, one for bad requests (with a status)."""

from __future__ import annotations

from recforge.errors import PredictError, RecforgeError


class ServeError(RecforgeError):
    """``recforge serve`` cannot start: a missing extra or a bad flag (one line, exit 2)."""


class RequestError(PredictError):
    """A ``/predict`` request the model cannot answer; the server replies ``status``.

    Args:
        message: names the bad field or row, what was expected and what was found.
        status: the HTTP status of the reply (400 bad input, 413 too many rows).

    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
