"""Source positions: where each field path appears in a text, JSON or YAML config file."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Optional

import yaml
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from recforge.config._schema import find_field, is_map
from recforge.config._util import INDEX_SUFFIX, PathLike, Position, format_of, join, parent_path
from recforge.config.errors import ConfigError


def _last_at(entries: list[tuple[Position, str]], pos: Position) -> Optional[str]:
    """Return the path of the last entry at or before ``pos`` (entries sorted by position)."""
    i = bisect.bisect_right([p for p, _ in entries], pos)
    return entries[i - 1][1] if i else None


@dataclass
class SourceIndex:
    """Where each field path appears in a config file.

    Attributes:
        lines: the file's lines (for quoting).
        first: field path -> position of its first occurrence.
        entries: (position, field path) in file order, every occurrence.
        scopes: (position, enclosing message path) from that position on (text format only).
        unknown: (position, field path, descriptor) of names the schema does not know.
        duplicate_keys: (position, field path) of keys repeated in one JSON/YAML mapping.
        unclosed: the innermost message still open when the text ended (text format).

    """

    lines: list[str]
    first: dict[str, Position] = field(default_factory=dict)
    entries: list[tuple[Position, str]] = field(default_factory=list)
    scopes: list[tuple[Position, str]] = field(default_factory=list)
    unknown: list[tuple[Position, str, Descriptor]] = field(default_factory=list)
    duplicate_keys: list[tuple[Position, str]] = field(default_factory=list)
    unclosed: Optional[str] = None

    def add(self, path: str, pos: Position) -> None:
        """Record one occurrence of ``path`` at ``pos``."""
        self.first.setdefault(path, pos)
        self.entries.append((pos, path))

    def locate(self, path: Optional[str]) -> Optional[Position]:
        """Return the position of ``path`` or, failing that, of its closest recorded ancestor."""
        while path:
            if path in self.first:
                return self.first[path]
            path = parent_path(path)
        return None

    def field_at(self, pos: Position) -> Optional[str]:
        """Return the path of the last field that starts at or before ``pos``."""
        return _last_at(self.entries, pos)

    def scope_at(self, pos: Position) -> Optional[str]:
        """Return the message path enclosing ``pos`` (text format), or None when unknown."""
        return _last_at(self.scopes, pos)

    def snippet(self, line: Optional[int], column: Optional[int]) -> Optional[str]:
        """Return the source line ``line`` quoted, with a caret under ``column``."""
        if line is None or not 1 <= line <= len(self.lines):
            return None
        text = self.lines[line - 1].rstrip("\r").expandtabs(1)
        gutter = f"{line:5d} | "
        quoted = gutter + text
        if column is not None and column >= 1:
            quoted += "\n" + " " * (len(gutter) - 2) + "| " + " " * (column - 1) + "^"
        return quoted

    def error(
        self, message: str, path: Optional[PathLike], fld: Optional[str], pos: Optional[Position]
    ) -> ConfigError:
        """Build a ConfigError at ``pos`` (or at the recorded position of ``fld``)."""
        pos = pos or self.locate(fld)
        line, column = pos if pos else (None, None)
        snippet = self.snippet(line, column) if path else None
        return ConfigError(message, path, line, column, fld, snippet=snippet)


class TextScanner:
    """Walks protobuf text format, recording the field path of every field name.

    It follows the schema to name fields and number repeated ones (``feature_groups[1]``), and
    stops quietly at the first syntax error (the parser reports those).

    Args:
        text: the text-format source.
        root: the descriptor of the top-level message.

    """

    def __init__(self, text: str, root: Descriptor) -> None:
        self.index = SourceIndex(lines=text.split("\n"))
        self.index.scopes.append(((1, 1), ""))
        self._tok = text_format.Tokenizer(self.index.lines)
        self._root = root

    def scan(self) -> SourceIndex:
        """Scan the whole text and return the index built so far."""
        try:
            self._message(self._root, "", None)
        except Exception:  # noqa: BLE001  (syntax errors are reported by the real parser)
            pass
        return self.index

    def _pos(self) -> Position:
        return (self._tok._line + 1, self._tok._column + 1)

    def _name(self) -> str:
        tok = self._tok
        if tok.TryConsume("["):  # extension or Any type URL: [a.b/c.D]
            parts = []
            while not tok.TryConsume("]"):
                if tok.AtEnd():
                    raise tok.ParseError('Expected "]".')
                parts.append(tok.token)
                tok.NextToken()
            return "[" + "".join(parts) + "]"
        return tok.ConsumeIdentifierOrNumber()

    def _message(self, desc: Optional[Descriptor], prefix: str, close: Optional[str]) -> None:
        tok = self._tok
        counts: dict[str, int] = {}
        while not (close and tok.LookingAt(close)):
            if tok.AtEnd():
                if close and self.index.unclosed is None:
                    self.index.unclosed = prefix
                return
            pos = self._pos()
            name = self._name()
            fd = desc.fields_by_name.get(name) if desc is not None else None
            base = join(prefix, name)
            if desc is not None and fd is None and not name.startswith("["):
                self.index.unknown.append((pos, base, desc))
            repeated = fd is not None and fd.is_repeated
            tok.TryConsume(":")
            if repeated and tok.LookingAt("["):
                self.index.add(base, pos)
                self._list(fd, base, counts)
            else:
                path = self._indexed(base, counts) if repeated else base
                self.index.add(path, pos)
                if repeated:
                    self.index.first.setdefault(base, pos)
                self._value(fd, path)
            if not tok.TryConsume(","):
                tok.TryConsume(";")

    def _indexed(self, base: str, counts: dict[str, int]) -> str:
        i = counts.get(base, 0)
        counts[base] = i + 1
        return f"{base}[{i}]"

    def _list(self, fd: FieldDescriptor, base: str, counts: dict[str, int]) -> None:
        tok = self._tok
        tok.Consume("[")
        while not tok.TryConsume("]"):
            if tok.AtEnd():
                raise tok.ParseError('Expected "]".')
            path = self._indexed(base, counts)
            self.index.add(path, self._pos())
            self._value(fd, path)
            tok.TryConsume(",")

    def _value(self, fd: Optional[FieldDescriptor], path: str) -> None:
        tok = self._tok
        if tok.LookingAt("{") or tok.LookingAt("<"):
            close = "}" if tok.token == "{" else ">"
            tok.NextToken()
            self.index.scopes.append((self._pos(), path))
            sub = fd.message_type if fd is not None else None
            self._message(sub, path, close)
            tok.Consume(close)
            self.index.scopes.append((self._pos(), parent_path(INDEX_SUFFIX.sub("", path))))
            return
        token = tok.token
        tok.NextToken()
        if token == "-":
            tok.NextToken()
        elif token[:1] in ("'", '"'):
            while tok.token[:1] in ("'", '"'):  # adjacent strings concatenate
                tok.NextToken()


class NodeIndexer:
    """Records field paths and positions of a JSON/YAML document (via ``yaml.compose``).

    Args:
        text: the JSON or YAML source.
        root: the descriptor of the top-level message.

    """

    def __init__(self, text: str, root: Descriptor) -> None:
        self.index = SourceIndex(lines=text.split("\n"))
        self._text = text
        self._root = root

    def scan(self) -> SourceIndex:
        """Indexes the document (an empty index when YAML cannot compose it)."""
        try:
            node = yaml.compose(self._text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return self.index
        if node is not None:
            self._node(node, self._root, "")
        return self.index

    @staticmethod
    def _pos(node: yaml.Node) -> Position:
        return (node.start_mark.line + 1, node.start_mark.column + 1)

    def _node(self, node: yaml.Node, desc: Optional[Descriptor], prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        seen = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            fd = find_field(desc, key) if desc is not None else None
            path = join(prefix, fd.name if fd is not None else key)
            pos = self._pos(key_node)
            if path in seen:
                self.index.duplicate_keys.append((pos, path))
            seen.add(path)
            self.index.add(path, pos)
            sub = fd.message_type if fd is not None and not is_map(fd) else None
            if isinstance(value_node, yaml.SequenceNode):
                for i, item in enumerate(value_node.value):
                    self.index.add(f"{path}[{i}]", self._pos(item))
                    self._node(item, sub, f"{path}[{i}]")
            else:
                self._node(value_node, sub, path)


def read_source_index(path: Optional[PathLike], root: Descriptor) -> SourceIndex:
    """Indexes the config file at ``path`` according to its format.

    Args:
        path: the config file, or None.
        root: the descriptor of the top-level message.

    Returns:
        The index; an empty one when there is no file or it cannot be read.

    """
    if path is None or not os.path.isfile(path):
        return SourceIndex(lines=[])
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return SourceIndex(lines=[])
    scanner = TextScanner if format_of(path) == "text" else NodeIndexer
    return scanner(text, root).scan()
