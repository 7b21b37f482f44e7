"""Small helpers shared by the config modules: listing names, "did you mean", field paths."""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable
from typing import Optional, Union

# one logger for the whole package, named after its public module
logger = logging.getLogger("recforge.config")

PathLike = Union[str, "os.PathLike[str]"]
Position = tuple[int, int]

JSON_EXTENSIONS = (".json",)
YAML_EXTENSIONS = (".yaml", ".yml")

MAX_LISTED = 12

INDEX_SUFFIX = re.compile(r"\[[^\]]*\]$")


def listing(names: Iterable[str], limit: int = MAX_LISTED) -> str:
    """Join names with ", ", eliding all but the first ``limit``.

    Args:
        names: the names to list.
        limit: how many to show before eliding the rest as ``... (N more)``.

    Returns:
        The joined names ("" when there are none).

    """
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def closest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """Return the candidate closest to ``name`` (difflib), or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or "" when none is close."""
    match = closest(name, candidates)
    return f"; did you mean {match!r}?" if match else ""


def join(prefix: str, name: str) -> str:
    """Append a field name to a dotted field path."""
    return f"{prefix}.{name}" if prefix else name


def parent_path(path: str) -> str:
    """``a.b[1]`` -> ``a.b``; ``a.b`` -> ``a``; ``a`` -> ""."""
    if INDEX_SUFFIX.search(path):
        return INDEX_SUFFIX.sub("", path)
    return path.rsplit(".", 1)[0] if "." in path else ""


def format_of(path: PathLike) -> str:
    """``"text"``, ``"json"`` or ``"yaml"`` from a file name (text format when unrecognised)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in JSON_EXTENSIONS:
        return "json"
    if ext in YAML_EXTENSIONS:
        return "yaml"
    return "text"
