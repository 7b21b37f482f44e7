"""The error type of pipeline configs, and how it renders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional

from recforge.config._util import PathLike
from recforge.errors import RecforgeError


class ConfigError(RecforgeError):
    """A problem in a pipeline config, with where it is and what was expected.

    Attributes:
        message: what was expected and what was found.
        path: the config (or data) file, when known.
        line: 1-based line in ``path``, when known.
        column: 1-based column in ``path``, when known.
        field: dotted field path, e.g. ``model_config.feature_groups[1].feature_names[0]``.
        snippet: the offending source line with a caret under ``column``, when known.
        errors: every problem found, when several were collected (``[self]`` otherwise); the
            attributes above are those of the first one.

    """

    def __init__(
        self,
        message: str,
        path: Optional[PathLike] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        field: Optional[str] = None,
        *,
        snippet: Optional[str] = None,
        errors: Optional[list[ConfigError]] = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.column = column
        self.field = field
        self.snippet = snippet
        self.errors: list[ConfigError] = errors if errors else [self]
        super().__init__(self.render())

    @classmethod
    def collect(cls, errors: Sequence[ConfigError], summary: Optional[str] = None) -> ConfigError:
        """Combine problems into one error (the error itself when there is only one).

        Args:
            errors: the problems, in the order they were found (at least one).
            summary: the first line of the combined message (default: "N problems in the
                config").

        Returns:
            The single error, or one whose ``str()`` lists them all and whose location
            attributes are those of the first.

        """
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        summary = summary or f"{len(errors)} problems in the config"
        return cls(summary, first.path, first.line, first.column, first.field, errors=list(errors))

    def location(self) -> str:
        """Render ``path:line:column`` with whatever parts are known ("" when none)."""
        parts = [self.path] if self.path else []
        if self.path and self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def headline(self) -> str:
        """Render ``location: field: message`` without the source snippet."""
        parts = [p for p in (self.location(), self.field) if p]
        return ": ".join(parts + [self.message])

    def render(self) -> str:
        """Render the full message (all problems when several were collected)."""
        if len(self.errors) > 1:
            head = f"{self.path}: " if self.path else ""
            lines = [f"{head}{self.message}:"]
            lines += [f"  - {e.headline()}" for e in self.errors]
            return "\n".join(lines)
        if self.snippet:
            return f"{self.headline()}\n{self.snippet}"
        return self.headline()

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"snippet": self.snippet, "errors": self.errors}
        return (
            self.__class__,
            (self.message, self.path, self.line, self.column, self.field),
            state,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        self.snippet = state.get("snippet")
        errors = state.get("errors")
        self.errors = errors if errors else [self]
