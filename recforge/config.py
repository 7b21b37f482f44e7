"""Loading, saving, editing and validating pipeline configs.

A pipeline config is one :class:`~recforge.protos.pipeline_pb2.EasyRecConfig` message, written in
protobuf text format (``.config``, ``.pbtxt``, ``.txt``, ``.prototxt``), JSON (``.json``, both
``lowerCamel`` and ``snake_case`` field names) or YAML (``.yaml``, ``.yml``; the JSON mapping).

Every problem is reported as a :class:`ConfigError` that says where (file, line, column and the
dotted field path) and what was expected, with a "did you mean" suggestion where one exists::

    examples/x.config:12:5: model_config.feature_groups[1].feature_names[0]: feature 'usr' is not
    defined; did you mean 'user'? (defined: user, item, ...)

Example:
    >>> from recforge.config import load_pipeline_config, validate_config, which_msg
    >>> config = load_pipeline_config("tests/configs/frappe_deepfm.config")
    >>> validate_config(config, "tests/configs/frappe_deepfm.config")
    >>> which_msg(config.model_config, "model")
    'DeepFM'

Relative paths inside a config (``train_input_path``, ``model_dir``, ...) are never resolved
against the config file's folder: they stay relative to the current directory, as in
TorchEasyRec.

"""

from __future__ import annotations

import bisect
import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml
from google.protobuf import descriptor_pool, json_format, message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

import recforge.protos  # noqa: F401  (generates the *_pb2 modules when stale)
from recforge.protos import data_pb2, loss_pb2, metric_pb2, pipeline_pb2

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Position = tuple[int, int]

TEXT_EXTENSIONS = (".config", ".pbtxt", ".txt", ".prototxt")
JSON_EXTENSIONS = (".json",)
YAML_EXTENSIONS = (".yaml", ".yml")

_MAX_LISTED = 12


# --------------------------------------------------------------------------------------------
# The error type
# --------------------------------------------------------------------------------------------


class ConfigError(ValueError):
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

    def __reduce__(self):
        state = {"snippet": self.snippet, "errors": self.errors}
        return (
            self.__class__,
            (self.message, self.path, self.line, self.column, self.field),
            state,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.snippet = state.get("snippet")
        errors = state.get("errors")
        self.errors = errors if errors else [self]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _listing(names: Iterable[str], limit: int = _MAX_LISTED) -> str:
    """Join names with ", ", eliding all but the first ``limit``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _closest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """Return the candidate closest to ``name`` (difflib), or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or "" when none is close."""
    match = _closest(name, candidates)
    return f"; did you mean {match!r}?" if match else ""


def _join(prefix: str, name: str) -> str:
    """Append a field name to a dotted field path."""
    return f"{prefix}.{name}" if prefix else name


def _type_name(fd: FieldDescriptor) -> str:
    """Return a readable name of a field's type, e.g. ``uint32``, ``message MLP``."""
    if fd.message_type is not None:
        return f"message {fd.message_type.name}"
    if fd.enum_type is not None:
        return f"enum {fd.enum_type.name} ({_listing(v.name for v in fd.enum_type.values)})"
    names = {
        FieldDescriptor.TYPE_DOUBLE: "double",
        FieldDescriptor.TYPE_FLOAT: "float",
        FieldDescriptor.TYPE_INT64: "int64",
        FieldDescriptor.TYPE_UINT64: "uint64",
        FieldDescriptor.TYPE_INT32: "int32",
        FieldDescriptor.TYPE_UINT32: "uint32",
        FieldDescriptor.TYPE_BOOL: "bool",
        FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_BYTES: "bytes",
    }
    return names.get(fd.type, "scalar")


def _is_map(fd: FieldDescriptor) -> bool:
    """Whether a field is a ``map<...>``."""
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _find_field(desc: Descriptor, name: str) -> Optional[FieldDescriptor]:
    """Look a field up by its proto name or its JSON (lowerCamel) name."""
    fd = desc.fields_by_name.get(name)
    if fd is not None:
        return fd
    return next((f for f in desc.fields if f.json_name == name), None)


def _unknown_field_message(desc: Descriptor, name: str, json_names: bool = False) -> str:
    """Explains an unknown field name and suggests the closest valid one.

    A name that looks like one of a oneof's members (e.g. ``deep_fm`` in ``ModelConfig``) also
    lists that oneof's choices; a message with a ``model`` oneof lists the known models when
    nothing is close.
    """
    candidates = [f.name for f in desc.fields]
    if json_names:
        candidates += [f.json_name for f in desc.fields if f.json_name != f.name]
    match = _closest(name, candidates)
    text = f"unknown field {name!r} in {desc.name}"
    if match:
        text += f"; did you mean {match!r}?"
        oneof = _find_field(desc, match).containing_oneof
        if oneof is not None:
            text += f" (choices for {oneof.name!r}: {_listing(f.name for f in oneof.fields)})"
        return text
    model = desc.oneofs_by_name.get("model")
    if model is not None:
        text += f"; known models: {_listing((f.name for f in model.fields), 100)}"
    return text + f" (fields: {_listing(f.name for f in desc.fields)})"


def _message_class(desc: Descriptor) -> type:
    """Return the generated message class of a descriptor."""
    return message_factory.GetMessageClass(desc)


def _format_of(path: PathLike) -> str:
    """``"text"``, ``"json"`` or ``"yaml"`` from a file name (text format when unrecognised)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in JSON_EXTENSIONS:
        return "json"
    if ext in YAML_EXTENSIONS:
        return "yaml"
    return "text"


# --------------------------------------------------------------------------------------------
# Source positions: field path -> (line, column), for any of the three formats
# --------------------------------------------------------------------------------------------


@dataclass
class _SourceIndex:
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
            path = _parent_path(path)
        return None

    def field_at(self, pos: Position) -> Optional[str]:
        """Return the path of the last field that starts at or before ``pos``."""
        keys = [p for p, _ in self.entries]
        i = bisect.bisect_right(keys, pos)
        return self.entries[i - 1][1] if i else None

    def scope_at(self, pos: Position) -> Optional[str]:
        """Return the message path enclosing ``pos`` (text format), or None when unknown."""
        keys = [p for p, _ in self.scopes]
        i = bisect.bisect_right(keys, pos)
        return self.scopes[i - 1][1] if i else None

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


_INDEX_SUFFIX = re.compile(r"\[[^\]]*\]$")


def _parent_path(path: str) -> str:
    """``a.b[1]`` -> ``a.b``; ``a.b`` -> ``a``; ``a`` -> ""."""
    if _INDEX_SUFFIX.search(path):
        return _INDEX_SUFFIX.sub("", path)
    return path.rsplit(".", 1)[0] if "." in path else ""


class _TextScanner:
    """Walks protobuf text format, recording the field path of every field name.

    It follows the schema to name fields and number repeated ones (``feature_groups[1]``), and
    stops quietly at the first syntax error (the parser reports those).
    """

    def __init__(self, text: str, root: Descriptor) -> None:
        self.index = _SourceIndex(lines=text.split("\n"))
        self.index.scopes.append(((1, 1), ""))
        self._tok = text_format.Tokenizer(self.index.lines)
        self._root = root

    def scan(self) -> _SourceIndex:
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
            base = _join(prefix, name)
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
            self.index.scopes.append((self._pos(), _parent_path(_INDEX_SUFFIX.sub("", path))))
            return
        token = tok.token
        tok.NextToken()
        if token == "-":
            tok.NextToken()
        elif token[:1] in ("'", '"'):
            while tok.token[:1] in ("'", '"'):  # adjacent strings concatenate
                tok.NextToken()


class _NodeIndexer:
    """Records field paths and positions of a JSON/YAML document (via ``yaml.compose``)."""

    def __init__(self, text: str, root: Descriptor) -> None:
        self.index = _SourceIndex(lines=text.split("\n"))
        self._text = text
        self._root = root

    def scan(self) -> _SourceIndex:
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
            fd = _find_field(desc, key) if desc is not None else None
            path = _join(prefix, fd.name if fd is not None else key)
            pos = self._pos(key_node)
            if path in seen:
                self.index.duplicate_keys.append((pos, path))
            seen.add(path)
            self.index.add(path, pos)
            sub = fd.message_type if fd is not None and not _is_map(fd) else None
            if isinstance(value_node, yaml.SequenceNode):
                for i, item in enumerate(value_node.value):
                    self.index.add(f"{path}[{i}]", self._pos(item))
                    self._node(item, sub, f"{path}[{i}]")
            else:
                self._node(value_node, sub, path)


def _source_index(path: PathLike, text: str, root: Descriptor) -> _SourceIndex:
    """Indexes a config file's text according to its format."""
    if _format_of(path) == "text":
        return _TextScanner(text, root).scan()
    return _NodeIndexer(text, root).scan()


def _read_source_index(path: Optional[PathLike], root: Descriptor) -> _SourceIndex:
    """Indexes the file at ``path``; an empty index when there is none or it is unreadable."""
    if path is None or not os.path.isfile(path):
        return _SourceIndex(lines=[])
    try:
        with open(path, encoding="utf-8") as f:
            return _source_index(path, f.read(), root)
    except (OSError, UnicodeDecodeError):
        return _SourceIndex(lines=[])


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_pipeline_config(
    path: PathLike, allow_unknown_field: bool = False
) -> pipeline_pb2.EasyRecConfig:
    """Load a pipeline config from text format, JSON or YAML (chosen by the file extension).

    ``.config``, ``.pbtxt``, ``.txt`` and ``.prototxt`` (and any other extension) are protobuf
    text format; ``.json`` is the protobuf JSON mapping (``snake_case`` or ``lowerCamel`` names);
    ``.yaml``/``.yml`` is the same mapping written in YAML. The config is not validated: call
    :func:`validate_config` for that.

    Args:
        path: the config file.
        allow_unknown_field: skip (and log a warning for) fields the schema does not know,
            instead of failing.

    Returns:
        The parsed config.

    Raises:
        ConfigError: the file is missing or unreadable, has a syntax error (with line, column
            and the line quoted), names an unknown field (with the closest valid name), sets
            two members of a oneof, or holds a value of the wrong type.

    """
    text = _read_text(path)
    fmt = _format_of(path)
    if fmt == "text":
        return _parse_text(text, path, allow_unknown_field)
    data, index = _load_structured(text, path, fmt)
    return _parse_structured(data, index, path, allow_unknown_field)


def _read_text(path: PathLike) -> str:
    """Read a config file, turning OS errors into ConfigError."""
    if not os.path.exists(path):
        raise ConfigError(f"config file not found (looked in {os.getcwd()})", path)
    if os.path.isdir(path):
        raise ConfigError("expected a config file, found a directory", path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file: {e}", path) from e


_UNKNOWN_FIELD_RE = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)"')
_ONEOF_RE = re.compile(
    r'Field "(\w+)" is specified along with field "(\w+)", another member of oneof "(\w+)"'
)
_DUPLICATE_RE = re.compile(r'should not have multiple "(\w+)" fields')
_ENUM_RE = re.compile(r'Enum type "([\w.]+)" has no value named ([^\s.]+)')
_QUOTED_LINE_PREFIX = re.compile(r"^'.*': (?=[A-Z])")
_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")


def _parse_text(text: str, path: PathLike, allow_unknown_field: bool) -> pipeline_pb2.EasyRecConfig:
    """Parse protobuf text format into a config, explaining any error."""
    config = pipeline_pb2.EasyRecConfig()
    try:
        text_format.Parse(text, config, allow_unknown_field=allow_unknown_field)
    except text_format.ParseError as e:
        index = _TextScanner(text, config.DESCRIPTOR).scan()
        raise _text_parse_error(e, index, path) from None
    if allow_unknown_field:
        index = _TextScanner(text, config.DESCRIPTOR).scan()
        for pos, fld, desc in index.unknown:
            name = fld.rsplit(".", 1)[-1]
            where = index.error(_unknown_field_message(desc, name), path, fld, pos).headline()
            logger.warning("ignored %s", where)
    return config


def _text_parse_error(
    err: text_format.ParseError, index: _SourceIndex, path: PathLike
) -> ConfigError:
    """Turn a text-format ParseError into a ConfigError with field path and suggestion."""
    line, column = err.GetLine(), err.GetColumn()
    raw = _QUOTED_LINE_PREFIX.sub("", _POSITION_PREFIX.sub("", str(err)))
    pos = (line, column) if line is not None else None
    fld = index.field_at(pos) if pos else None
    message = raw
    if m := _UNKNOWN_FIELD_RE.search(raw):
        message = _describe_unknown_text_field(m.group(1), m.group(2))
        message += _missing_brace_hint(fld, m.group(2))
    elif m := _ONEOF_RE.search(raw):
        message = _describe_oneof_conflict(m.group(3), m.group(2), m.group(1), fld, index)
    elif m := _DUPLICATE_RE.search(raw):
        first = index.locate(fld)
        at = f" (first set at line {first[0]})" if first and first != pos else ""
        message = f"field {m.group(1)!r} is set more than once{at}; it takes a single value"
    elif m := _ENUM_RE.search(raw):
        message = _describe_bad_enum(m.group(1), m.group(2))
    elif raw.startswith(('Expected "}"', 'Expected ">"')) and index.unclosed:
        fld = index.unclosed
        opened = index.locate(fld)
        at = f" (opened at line {opened[0]})" if opened else ""
        message = f"the file ends before {fld!r}{at} is closed: a closing '}}' is missing"
    elif raw.startswith("Expected") and pos:
        fld = index.scope_at(pos)
    error = index.error(message, path, fld, pos)
    return error


def _describe_unknown_text_field(type_name: str, name: str) -> str:
    """Explains an unknown field reported by the text-format parser."""
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return f"unknown field {name!r} in {type_name}"
    return _unknown_field_message(desc, name)


def _missing_brace_hint(fld: Optional[str], name: str) -> str:
    """Return a hint when an unknown field belongs to an enclosing message (a missing ``}``)."""
    desc: Optional[Descriptor] = pipeline_pb2.EasyRecConfig.DESCRIPTOR
    owners = []
    for part in _INDEX_SUFFIX.sub("", fld or "").split(".")[:-1]:
        if name in desc.fields_by_name:
            owners.append(desc.name)
        fd = desc.fields_by_name.get(_INDEX_SUFFIX.sub("", part))
        if fd is None or fd.message_type is None:
            return ""
        desc = fd.message_type
    if not owners:
        return ""
    return f"; {name!r} is a field of {owners[-1]}: is a closing '}}' missing above this line?"


def _describe_oneof_conflict(
    oneof: str, first: str, second: str, fld: Optional[str], index: _SourceIndex
) -> str:
    """Explains two members of one oneof being set."""
    first_pos = index.first.get(_join(_parent_path(fld), first)) if fld else None
    at = f" (line {first_pos[0]})" if first_pos else ""
    return f"two members of oneof {oneof!r} are set: {first!r}{at} and {second!r}; keep only one"


def _describe_bad_enum(type_name: str, value: str) -> str:
    """Explains an unknown enum value and suggests the closest valid one."""
    try:
        enum = descriptor_pool.Default().FindEnumTypeByName(type_name)
    except KeyError:
        return f"enum {type_name} has no value {value!r}"
    names = [v.name for v in enum.values]
    return (
        f"enum {enum.name} has no value {value!r}{_did_you_mean(value, names)} "
        f"(values: {_listing(names)})"
    )


class _DuplicateKey(Exception):
    """A JSON object repeats a key."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook that refuses repeated keys."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load_structured(text: str, path: PathLike, fmt: str) -> tuple[Any, _SourceIndex]:
    """Parse JSON/YAML text into Python data plus a position index."""
    index = _NodeIndexer(text, pipeline_pb2.EasyRecConfig.DESCRIPTOR).scan()
    try:
        if fmt == "json":
            data = json.loads(text, object_pairs_hook=_reject_duplicates)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise index.error(f"invalid JSON: {e.msg}", path, None, (e.lineno, e.colno)) from None
    except yaml.YAMLError as e:
        raise _yaml_error(e, index, path) from None
    except _DuplicateKey as e:
        dup = index.duplicate_keys[0] if index.duplicate_keys else (None, None)
        raise index.error(
            f"key {e.args[0]!r} is repeated in one object", path, dup[1], dup[0]
        ) from None
    if index.duplicate_keys:
        pos, fld = index.duplicate_keys[0]
        raise index.error("key is repeated in one mapping", path, fld, pos)
    return ({} if data is None else data), index


def _yaml_error(err: yaml.YAMLError, index: _SourceIndex, path: PathLike) -> ConfigError:
    """Turn a YAML syntax error into a ConfigError at its position."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    pos = (mark.line + 1, mark.column + 1) if mark is not None else None
    return index.error(message, path, None, pos)


def _parse_structured(
    data: Any, index: _SourceIndex, path: PathLike, allow_unknown_field: bool
) -> pipeline_pb2.EasyRecConfig:
    """Check JSON/YAML data against the schema, then parse it with ``json_format``."""
    config = pipeline_pb2.EasyRecConfig()
    checker = _StructChecker(index, path, allow_unknown_field)
    checker.message(data, config.DESCRIPTOR, "")
    try:
        json_format.ParseDict(data, config, ignore_unknown_fields=allow_unknown_field)
    except json_format.ParseError as e:  # pragma: no cover  (the checker should catch it first)
        raise ConfigError(str(e), path) from None
    return config


class _StructChecker:
    """Walks JSON/YAML data along the schema and reports the first problem precisely."""

    def __init__(self, index: _SourceIndex, path: PathLike, allow_unknown_field: bool) -> None:
        self._index = index
        self._path = path
        self._allow_unknown = allow_unknown_field

    def _fail(self, message: str, fld: str) -> ConfigError:
        return self._index.error(message, self._path, fld, None)

    def message(self, data: Any, desc: Descriptor, prefix: str) -> None:
        """Check one message-valued mapping."""
        if not isinstance(data, Mapping):
            found = type(data).__name__
            raise self._fail(f"expected a mapping for message {desc.name}, found {found}", prefix)
        oneofs: dict[str, str] = {}
        for key, value in data.items():
            fd = _find_field(desc, str(key))
            fld = _join(prefix, fd.name if fd is not None else str(key))
            if fd is None:
                self._unknown(desc, str(key), fld)
            elif value is not None:
                self._oneof(fd, oneofs, fld)
                self.field(fd, value, fld)

    def _unknown(self, desc: Descriptor, key: str, fld: str) -> None:
        message = _unknown_field_message(desc, key, json_names=True)
        if not self._allow_unknown:
            raise self._fail(message, fld)
        logger.warning("ignored %s", self._fail(message, fld).headline())

    def _oneof(self, fd: FieldDescriptor, seen: dict[str, str], fld: str) -> None:
        oneof = fd.containing_oneof
        if oneof is None:
            return
        if oneof.name in seen:
            first = seen[oneof.name]
            raise self._fail(
                f"two members of oneof {oneof.name!r} are set: {first!r} and {fd.name!r}; "
                "keep only one",
                fld,
            )
        seen[oneof.name] = fd.name

    def field(self, fd: FieldDescriptor, value: Any, fld: str) -> None:
        """Check one field's value (a list for repeated fields, a mapping for maps)."""
        if _is_map(fd):
            self._map(fd, value, fld)
        elif fd.is_repeated:
            if not isinstance(value, list):
                raise self._fail(f"expected a list of {_type_name(fd)}, found {value!r}", fld)
            for i, item in enumerate(value):
                self._single(fd, item, f"{fld}[{i}]")
        else:
            self._single(fd, value, fld)

    def _map(self, fd: FieldDescriptor, value: Any, fld: str) -> None:
        if not isinstance(value, Mapping):
            raise self._fail(f"expected a mapping for map field, found {value!r}", fld)
        value_fd = fd.message_type.fields_by_name["value"]
        for key, item in value.items():
            self._single(value_fd, item, f"{fld}[{key!r}]")

    def _single(self, fd: FieldDescriptor, value: Any, fld: str) -> None:
        if fd.message_type is not None:
            self.message(value, fd.message_type, fld)
            return
        probe = _message_class(fd.containing_type)()
        try:
            json_format.ParseDict({fd.name: [value] if fd.is_repeated else value}, probe)
        except (json_format.ParseError, TypeError, ValueError):
            hint = ""
            if fd.enum_type is not None and isinstance(value, str):
                hint = _did_you_mean(value, [v.name for v in fd.enum_type.values])
            raise self._fail(f"expected {_type_name(fd)}, found {value!r}{hint}", fld) from None


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def config_to_dict(config: Message) -> dict[str, Any]:
    """Return the JSON mapping of a message (proto field names, 64-bit integers as numbers)."""
    try:
        return json_format.MessageToDict(
            config, preserving_proto_field_name=True, unquote_int64_if_possible=True
        )
    except TypeError:  # protobuf without unquote_int64_if_possible
        return json_format.MessageToDict(config, preserving_proto_field_name=True)


def save_pipeline_config(config: Message, path: PathLike) -> None:
    """Write a config as text format, JSON or YAML, chosen by the file extension.

    The file loads back into an equal message with :func:`load_pipeline_config`. Missing
    parent folders are created.

    Args:
        config: the config to write.
        path: the file to write (``.json``, ``.yaml``/``.yml``, anything else: text format).

    """
    fmt = _format_of(path)
    if fmt == "json":
        content = json.dumps(config_to_dict(config), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "yaml":
        content = yaml.safe_dump(
            config_to_dict(config), sort_keys=False, allow_unicode=True, default_flow_style=False
        )
    else:
        content = text_format.MessageToString(config, as_utf8=True)
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)


# --------------------------------------------------------------------------------------------
# Oneofs
# --------------------------------------------------------------------------------------------


def _oneof(message: Message, oneof_name: str) -> OneofDescriptor:
    """Return the descriptor of a message's oneof, or ConfigError listing the oneofs it has."""
    desc = message.DESCRIPTOR
    oneof = desc.oneofs_by_name.get(oneof_name)
    if oneof is None:
        names = list(desc.oneofs_by_name)
        raise ConfigError(
            f"{desc.name} has no oneof {oneof_name!r}{_did_you_mean(oneof_name, names)}"
            f" (oneofs: {_listing(names) or 'none'})",
            field=oneof_name,
        )
    return oneof


def which_oneof_field(message: Message, oneof_name: str) -> str:
    """Return the name of the field set in a oneof, e.g. ``"deepfm"`` for ``"model"``.

    Args:
        message: the message holding the oneof.
        oneof_name: the oneof, e.g. ``"model"``.

    Returns:
        The field name.

    Raises:
        ConfigError: nothing is set (the error lists the choices) or there is no such oneof.

    """
    oneof = _oneof(message, oneof_name)
    name = message.WhichOneof(oneof_name)
    if name is None:
        choices = _listing(f.name for f in oneof.fields)
        raise ConfigError(
            f"no {oneof_name!r} is set in {message.DESCRIPTOR.name}; set one of: {choices}",
            field=oneof_name,
        )
    return name


def which_msg(message: Message, oneof_name: str) -> str:
    """Return the message type name of the field set in a oneof, e.g. ``"DeepFM"`` for ``deepfm``.

    This is the registry name of the class to build (``BaseModel.create_class``). For a scalar
    oneof member the field name is returned.

    Args:
        message: the message holding the oneof.
        oneof_name: the oneof, e.g. ``"model"``.

    Returns:
        The message type name (e.g. ``"DeepFM"``, ``"AdamOptimizer"``).

    Raises:
        ConfigError: nothing is set (the error lists the choices) or there is no such oneof.

    """
    name = which_oneof_field(message, oneof_name)
    fd = message.DESCRIPTOR.fields_by_name[name]
    return fd.message_type.name if fd.message_type is not None else name


# --------------------------------------------------------------------------------------------
# Editing
# --------------------------------------------------------------------------------------------


_EDIT_TOKEN = re.compile(r"(?P<dot>\.)?(?P<name>[A-Za-z_]\w*)|\[(?P<index>[^\]]*)\]")


@dataclass
class _Step:
    """One field of an edit path with its selectors (``name[0]``, ``name[:]``, ``name[k=v]``)."""

    name: str
    selectors: list[str] = field(default_factory=list)


def _parse_edit_path(key: str) -> list[_Step]:
    """Split ``a.b[0].c`` into steps; raise ConfigError when the syntax is wrong."""
    steps: list[_Step] = []
    pos = 0
    while pos < len(key):
        m = _EDIT_TOKEN.match(key, pos)
        if m is None or (m.group("name") and steps and not m.group("dot")):
            raise ConfigError(f"cannot parse edit path {key!r} at character {pos + 1}", field=key)
        if m.group("name"):
            steps.append(_Step(m.group("name")))
        elif not steps:
            raise ConfigError(f"edit path {key!r} must start with a field name", field=key)
        else:
            steps[-1].selectors.append(m.group("index").strip())
        pos = m.end()
    if not steps:
        raise ConfigError("empty edit path", field=key)
    return steps


def edit_config(config: Message, edits: Mapping[str, Any]) -> Message:
    """Apply overrides such as ``{"train_config.num_epochs": "3"}`` to a config, in place.

    Paths are dotted field names; repeated fields take ``[i]`` (negative counts from the end),
    ``[:]`` (every element) or ``[field=value]`` (elements whose field, or whose set oneof
    member's field, equals value, e.g. ``feature_configs[feature_name=user]``). Values are
    parsed by the field's type: numbers, booleans (``true``/``false``/``1``/``0``), enum names,
    strings; a repeated field without an index takes a list (``"[400, 200]"`` or a Python list);
    a message field takes a mapping, JSON or text format (``"adam_optimizer { lr: 0.01 }"``) and
    replaces the whole message.

    Args:
        config: the message to edit (usually the EasyRecConfig).
        edits: path -> value; values may be strings or already-typed (from ``json.loads``).

    Returns:
        ``config`` (edited in place).

    Raises:
        ConfigError: an unknown field (with the closest valid name), a bad index or a value of
            the wrong type; ``field`` is the path as far as it could be followed.

    """
    for key, value in edits.items():
        _apply_edit(config, key, value)
    return config


def _apply_edit(config: Message, key: str, value: Any) -> None:
    """Apply one edit."""
    steps = _parse_edit_path(key)
    targets: list[tuple[Message, str]] = [(config, "")]
    for step in steps[:-1]:
        targets = [t for msg, prefix in targets for t in _descend(msg, prefix, step)]
    last = steps[-1]
    for msg, prefix in targets:
        fd = _edit_field(msg, last.name, prefix)
        _assign(msg, fd, last.selectors, value, _join(prefix, last.name))


def _edit_field(msg: Message, name: str, prefix: str) -> FieldDescriptor:
    """Return the field ``name`` of ``msg``, or ConfigError with the closest valid name."""
    fd = msg.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:
        raise ConfigError(_unknown_field_message(msg.DESCRIPTOR, name), field=_join(prefix, name))
    return fd


def _descend(msg: Message, prefix: str, step: _Step) -> list[tuple[Message, str]]:
    """Return the sub-messages an intermediate step leads to, with their paths."""
    fd = _edit_field(msg, step.name, prefix)
    path = _join(prefix, step.name)
    if fd.message_type is None or _is_map(fd):
        raise ConfigError(
            f"{step.name!r} is a {_type_name(fd)} field; it has no sub-fields", field=path
        )
    if not fd.is_repeated:
        if step.selectors:
            raise ConfigError(f"{step.name!r} is not repeated; it takes no index", field=path)
        return [(getattr(msg, step.name), path)]
    if len(step.selectors) != 1:
        raise ConfigError(
            f"{step.name!r} is repeated: select elements with [i], [:] or [field=value]",
            field=path,
        )
    container = getattr(msg, step.name)
    return [(container[i], f"{path}[{i}]") for i in _select(container, step.selectors[0], path)]


def _select(container: Sequence[Any], selector: str, path: str) -> list[int]:
    """Return the indices of a repeated field picked by ``i``, ``:`` or ``field=value``."""
    if selector == ":":
        return list(range(len(container)))
    if "=" in selector:
        key, _, wanted = (s.strip() for s in selector.partition("="))
        wanted = wanted.strip("'\"")
        found = [i for i, item in enumerate(container) if _matches(item, key, wanted)]
        if not found:
            raise ConfigError(f"no element has {key} == {wanted!r}", field=f"{path}[{selector}]")
        return found
    try:
        index = int(selector)
    except ValueError:
        raise ConfigError(
            f"bad index {selector!r}: use an integer, ':' or field=value", field=path
        ) from None
    if not -len(container) <= index < len(container):
        raise ConfigError(
            f"index {index} is out of range: the field has {len(container)} element(s)",
            field=f"{path}[{index}]",
        )
    return [index % len(container)]


def _matches(item: Any, key: str, wanted: str) -> bool:
    """Whether ``item`` (or its set oneof members) has field ``key`` equal to ``wanted``."""
    if not isinstance(item, Message):
        return str(item) == wanted
    desc = item.DESCRIPTOR
    fd = desc.fields_by_name.get(key)
    if fd is not None and not fd.is_repeated:
        value = getattr(item, key)
        if fd.enum_type is not None:
            value = fd.enum_type.values_by_number[value].name
        return str(value) == wanted
    for oneof in desc.oneofs:
        name = item.WhichOneof(oneof.name)
        member = getattr(item, name) if name else None
        if isinstance(member, Message) and _matches(member, key, wanted):
            return True
    return False


def _assign(msg: Message, fd: FieldDescriptor, selectors: list[str], value: Any, path: str) -> None:
    """Set the last field of an edit path."""
    if not fd.is_repeated:
        if selectors:
            raise ConfigError(f"{fd.name!r} is not repeated; it takes no index", field=path)
        if fd.message_type is not None:
            _replace_message(getattr(msg, fd.name), value, path)
        else:
            _set_scalar(msg, fd, _parse_scalar(fd, value, path), path)
        return
    if not selectors:
        _replace_repeated(msg, fd, value, path)
        return
    if len(selectors) != 1:
        raise ConfigError("only one index per field is supported", field=path)
    container = getattr(msg, fd.name)
    for i in _select(container, selectors[0], path):
        if fd.message_type is not None:
            _replace_message(container[i], value, f"{path}[{i}]")
        else:
            parsed = _parse_scalar(fd, value, f"{path}[{i}]")
            try:
                container[i] = parsed
            except (TypeError, ValueError) as e:
                raise ConfigError(f"bad value {value!r}: {e}", field=f"{path}[{i}]") from None


def _set_scalar(msg: Message, fd: FieldDescriptor, value: Any, path: str) -> None:
    """``setattr`` that reports out-of-range values as ConfigError."""
    try:
        setattr(msg, fd.name, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value {value!r} for {_type_name(fd)}: {e}", field=path) from None


_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def _parse_scalar(fd: FieldDescriptor, value: Any, path: str) -> Any:
    """Convert an edit value (string or typed) to a scalar field's Python type."""
    try:
        return _convert_scalar(fd, value)
    except (TypeError, ValueError):
        hint = ""
        if fd.enum_type is not None:
            hint = _did_you_mean(str(value), [v.name for v in fd.enum_type.values])
        raise ConfigError(f"expected {_type_name(fd)}, found {value!r}{hint}", field=path) from None


def _convert_scalar(fd: FieldDescriptor, value: Any) -> Any:
    """Convert one value; raise ValueError/TypeError when it does not fit the type."""
    text = value.strip() if isinstance(value, str) else value
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if isinstance(text, bool):
            return text
        if str(text).lower() in _TRUE | _FALSE:
            return str(text).lower() in _TRUE
        raise ValueError(text)
    if fd.enum_type is not None:
        return _convert_enum(fd, text)
    if fd.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        if isinstance(text, bool):
            raise TypeError(text)
        return float(text)
    if fd.type in (FieldDescriptor.TYPE_STRING,):
        return value if isinstance(value, str) else json.dumps(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return value.encode() if isinstance(value, str) else bytes(value)
    return _convert_int(text)


def _convert_int(text: Any) -> int:
    """Return an int from an int, an integral float or a string such as ``"512"``, ``"1e3"``."""
    if isinstance(text, bool):
        raise TypeError(text)
    if isinstance(text, int):
        return text
    try:
        return int(str(text), 0)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise
        return int(number)


def _convert_enum(fd: FieldDescriptor, text: Any) -> int:
    """Return an enum number from its name or number."""
    enum = fd.enum_type
    if isinstance(text, str) and text in enum.values_by_name:
        return enum.values_by_name[text].number
    number = _convert_int(text)
    if number not in enum.values_by_number:
        raise ValueError(text)
    return number


def _as_list(value: Any, path: str) -> list[Any]:
    """Return a list from a Python list/tuple, a ``"[a, b]"`` string, or a single value."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse list {value!r}: {e}", field=path) from None
        if isinstance(parsed, list):
            return parsed
    return [value]


def _replace_repeated(msg: Message, fd: FieldDescriptor, value: Any, path: str) -> None:
    """Replace a whole repeated (or map) field."""
    if _is_map(fd):
        data = _as_mapping(value, path)
        probe = _message_class(msg.DESCRIPTOR)()
        _parse_dict_into({fd.name: data}, probe, path)
        msg.ClearField(fd.name)
        msg.MergeFrom(probe)
        return
    items = _as_list(value, path)
    msg.ClearField(fd.name)
    container = getattr(msg, fd.name)
    for i, item in enumerate(items):
        if fd.message_type is not None:
            _replace_message(container.add(), item, f"{path}[{i}]")
        else:
            parsed = _parse_scalar(fd, item, f"{path}[{i}]")
            try:
                container.append(parsed)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"bad value {item!r}: {e}", field=f"{path}[{i}]") from None


def _as_mapping(value: Any, path: str) -> dict[str, Any]:
    """Return a mapping from a dict or a JSON/YAML string."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value) if value.strip() else {}
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, Mapping):
            return dict(parsed)
    raise ConfigError(f"expected a mapping (dict or JSON object), found {value!r}", field=path)


def _replace_message(target: Message, value: Any, path: str) -> None:
    """Replace a message's content with a mapping, JSON or text-format value."""
    replacement = type(target)()
    if isinstance(value, Message):
        replacement.CopyFrom(value)
    elif isinstance(value, Mapping):
        _parse_dict_into(dict(value), replacement, path)
    elif isinstance(value, str):
        _parse_message_text(value, replacement, path)
    else:
        raise ConfigError(
            f"expected message {target.DESCRIPTOR.name} (mapping or text), found {value!r}",
            field=path,
        )
    target.Clear()
    target.MergeFrom(replacement)
    target.SetInParent()


def _parse_dict_into(data: dict[str, Any], message: Message, path: str) -> None:
    """``json_format.ParseDict`` with errors as ConfigError."""
    checker = _StructChecker(_SourceIndex(lines=[]), None, False)
    try:
        checker.message(data, message.DESCRIPTOR, path)
    except ConfigError as e:
        raise ConfigError(e.message, field=e.field) from None
    json_format.ParseDict(data, message)


def _parse_message_text(value: str, message: Message, path: str) -> None:
    """Parse text format (optionally wrapped in braces), falling back to JSON/YAML."""
    text = value.strip()
    inner = text[1:-1] if text.startswith("{") and text.endswith("}") else text
    try:
        text_format.Parse(inner, message)
        return
    except text_format.ParseError as e:
        text_error = e
    try:
        parsed = yaml.safe_load(text) if text else {}
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, Mapping):
        message.Clear()
        _parse_dict_into(dict(parsed), message, path)
        return
    raise ConfigError(
        f"cannot parse {value!r} as {message.DESCRIPTOR.name}: {text_error}", field=path
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


class _Problems:
    """Collects validation problems, placing each at its line in the config file."""

    def __init__(self, path: Optional[PathLike], index: _SourceIndex) -> None:
        self.path = path
        self.index = index
        self.errors: list[ConfigError] = []

    def add(self, fld: str, message: str) -> None:
        """Record a problem at field path ``fld``."""
        self.errors.append(self.index.error(message, self.path, fld, None))

    def raise_if_any(self) -> None:
        """Raise the problems found, if any, as one ConfigError."""
        if self.errors:
            raise ConfigError.collect(self.errors)


def validate_config(config: pipeline_pb2.EasyRecConfig, path: Optional[PathLike] = None) -> None:
    """Check a loaded config for mistakes the schema alone cannot catch.

    Every problem is collected; one is raised as is, several are raised together (each line
    naming its field path, and, when ``path`` is a text/JSON/YAML config file, its line).

    Checks: one model is set; every feature has a name (unique) and what it needs to build its
    embedding; feature groups name defined features, have unique names and are not empty;
    every tower ``input`` (any string field named ``input`` inside the model) names a feature
    group; ``data_config`` has label fields and a positive batch size; ``train_config`` has a
    sparse and a dense optimizer; every loss and metric is set, and losses suit ``num_class``.

    Args:
        config: the config to check.
        path: the file it was loaded from (for messages and line numbers).

    Raises:
        ConfigError: the problems found.

    """
    problems = _Problems(path, _read_source_index(path, config.DESCRIPTOR))
    _check_features(config, problems)
    _check_model(config, problems)
    _check_data(config, problems)
    _check_train(config, problems)
    problems.raise_if_any()


def _feature_message(feature_config: Message) -> Optional[Message]:
    """Return the message set in a FeatureConfig's ``feature`` oneof (IdFeature, ...)."""
    name = feature_config.WhichOneof("feature")
    return getattr(feature_config, name) if name else None


def _feature_names(config: pipeline_pb2.EasyRecConfig) -> list[str]:
    """Return the names of the features in ``feature_configs`` (in order; unnamed skipped)."""
    names = []
    for fc in config.feature_configs:
        feature = _feature_message(fc)
        if feature is not None and feature.feature_name:
            names.append(feature.feature_name)
    return names


def _check_features(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """Check every feature config and that feature names are unique."""
    seen: dict[str, int] = {}
    tables: dict[str, tuple[str, int]] = {}
    for i, fc in enumerate(config.feature_configs):
        prefix = f"feature_configs[{i}]"
        kind = fc.WhichOneof("feature")
        if kind is None:
            choices = _listing(f.name for f in fc.DESCRIPTOR.oneofs_by_name["feature"].fields)
            problems.add(prefix, f"no feature kind is set; set one of: {choices}")
            continue
        feature = getattr(fc, kind)
        fprefix = f"{prefix}.{kind}"
        name = feature.feature_name
        if not name:
            problems.add(f"{fprefix}.feature_name", "feature_name is missing")
        elif name in seen:
            problems.add(
                f"{fprefix}.feature_name",
                f"feature {name!r} is defined twice (also feature_configs[{seen[name]}])",
            )
        else:
            seen[name] = i
        _FEATURE_CHECKS.get(kind, _no_check)(feature, fprefix, problems)
        _check_shared_table(feature, fprefix, tables, problems)


def _no_check(feature: Message, prefix: str, problems: _Problems) -> None:
    """Check nothing (feature kinds without specific checks)."""


def _check_id_feature(feature: Message, prefix: str, problems: _Problems) -> None:
    """Check that an id feature has an embedding_dim and exactly one way to map values to ids."""
    name = feature.feature_name or "?"
    if feature.embedding_dim <= 0:
        problems.add(
            f"{prefix}.embedding_dim",
            f"id_feature {name!r} needs embedding_dim > 0 (found {feature.embedding_dim})",
        )
    sources = [
        s
        for s, is_set in (
            ("num_buckets", feature.HasField("num_buckets")),
            ("hash_bucket_size", feature.HasField("hash_bucket_size")),
            ("vocab_list", len(feature.vocab_list) > 0),
            ("vocab_dict", len(feature.vocab_dict) > 0),
        )
        if is_set
    ]
    if not sources:
        problems.add(
            prefix,
            f"id_feature {name!r} needs one of num_buckets, hash_bucket_size, vocab_list or "
            "vocab_dict (how many ids its embedding table holds)",
        )
    elif len(sources) > 1:
        problems.add(
            f"{prefix}.{sources[1]}",
            f"id_feature {name!r} sets both {sources[0]} and {sources[1]}; set only one",
        )
    for field_name in ("num_buckets", "hash_bucket_size"):
        if feature.HasField(field_name) and getattr(feature, field_name) == 0:
            problems.add(f"{prefix}.{field_name}", f"{field_name} must be > 0 (found 0)")


def _check_raw_feature(feature: Message, prefix: str, problems: _Problems) -> None:
    """Check that a bucketized raw feature has an embedding_dim and increasing boundaries."""
    name = feature.feature_name or "?"
    boundaries = list(feature.boundaries)
    if not boundaries:
        return
    if feature.embedding_dim <= 0:
        problems.add(
            f"{prefix}.embedding_dim",
            f"raw_feature {name!r} has boundaries, so it is bucketized into an embedding and "
            f"needs embedding_dim > 0 (found {feature.embedding_dim})",
        )
    for j in range(1, len(boundaries)):
        if boundaries[j] <= boundaries[j - 1]:
            problems.add(
                f"{prefix}.boundaries[{j}]",
                f"boundaries must be strictly increasing; found {boundaries[j - 1]:g} "
                f"then {boundaries[j]:g}",
            )
            break


_FEATURE_CHECKS = {"id_feature": _check_id_feature, "raw_feature": _check_raw_feature}


def _check_shared_table(
    feature: Message, prefix: str, tables: dict[str, tuple[str, int]], problems: _Problems
) -> None:
    """Features sharing an ``embedding_name`` must agree on ``embedding_dim``."""
    desc = feature.DESCRIPTOR
    if "embedding_name" not in desc.fields_by_name or not feature.embedding_name:
        return
    table = feature.embedding_name
    dim = feature.embedding_dim if "embedding_dim" in desc.fields_by_name else 0
    if table not in tables:
        tables[table] = (feature.feature_name, dim)
    elif tables[table][1] != dim:
        other, other_dim = tables[table]
        problems.add(
            f"{prefix}.embedding_dim",
            f"features sharing embedding_name {table!r} need the same embedding_dim: "
            f"{other!r} has {other_dim}, {feature.feature_name!r} has {dim}",
        )


def _check_model(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """Check model_config: one model, feature groups, tower inputs, losses, metrics."""
    if not config.HasField("model_config"):
        models = _listing(
            f.name for f in config.model_config.DESCRIPTOR.oneofs_by_name["model"].fields
        )
        problems.add("model_config", f"model_config is missing; it must set one model ({models})")
        return
    mc = config.model_config
    model = mc.WhichOneof("model")
    if model is None:
        models = _listing((f.name for f in mc.DESCRIPTOR.oneofs_by_name["model"].fields), 100)
        problems.add("model_config", f"no model is set in model_config; set one of: {models}")
    groups = _check_feature_groups(mc, _feature_names(config), problems)
    if model is not None:
        _check_group_refs(getattr(mc, model), f"model_config.{model}", groups, problems)
    _check_losses(mc, problems)
    _check_metrics(mc, problems)


def _check_feature_groups(mc: Message, features: list[str], problems: _Problems) -> list[str]:
    """Check feature groups against the defined ``features``; returns the group names."""
    names: list[str] = []
    for i, group in enumerate(mc.feature_groups):
        prefix = f"model_config.feature_groups[{i}]"
        if not group.group_name:
            problems.add(f"{prefix}.group_name", "group_name is missing")
        elif group.group_name in names:
            problems.add(
                f"{prefix}.group_name", f"feature group {group.group_name!r} is defined twice"
            )
        names.append(group.group_name)
        if not group.feature_names:
            problems.add(prefix, f"feature group {group.group_name!r} has no feature_names")
        _check_group_features(group, prefix, features, problems)
    return [n for n in names if n]


def _check_group_features(
    group: Message, prefix: str, features: list[str], problems: _Problems
) -> None:
    """Every feature a group lists must be defined, and listed once."""
    defined, listed = set(features), set()
    for j, name in enumerate(group.feature_names):
        fld = f"{prefix}.feature_names[{j}]"
        if name not in defined:
            problems.add(
                fld,
                f"feature {name!r} is not defined{_did_you_mean(name, features)} "
                f"(defined: {_listing(features) or 'none'})",
            )
        elif name in listed:
            problems.add(fld, f"feature {name!r} is listed twice in group {group.group_name!r}")
        listed.add(name)


def _check_group_refs(
    message: Message, prefix: str, groups: list[str], problems: _Problems
) -> None:
    """Check every string field named ``input`` (tower inputs) under a model message."""
    input_fd = message.DESCRIPTOR.fields_by_name.get("input")
    if input_fd is not None and input_fd.type == FieldDescriptor.TYPE_STRING:
        _check_input(message, prefix, groups, problems)
    for fd, value in message.ListFields():
        if fd.message_type is None or _is_map(fd):
            continue
        if fd.is_repeated:
            for i, item in enumerate(value):
                _check_group_refs(item, f"{prefix}.{fd.name}[{i}]", groups, problems)
        else:
            _check_group_refs(value, f"{prefix}.{fd.name}", groups, problems)


def _check_input(message: Message, prefix: str, groups: list[str], problems: _Problems) -> None:
    """Check that a tower's ``input`` names a feature group."""
    kind = message.DESCRIPTOR.name
    listing = _listing(groups) or "none"
    if not message.HasField("input"):
        problems.add(f"{prefix}.input", f"{kind} has no input; set a feature group ({listing})")
        return
    name = message.input
    if name not in groups:
        problems.add(
            f"{prefix}.input",
            f"{kind} input {name!r} is not a feature group{_did_you_mean(name, groups)} "
            f"(groups: {listing})",
        )


def _bce_ok(num_class: int) -> bool:
    return num_class == 1


def _softmax_ok(num_class: int) -> bool:
    return num_class > 1


# loss field -> (accepts num_class?, what to say otherwise)
_LOSS_NUM_CLASS_RULES = {
    "binary_cross_entropy": (
        _bce_ok,
        "binary_cross_entropy needs num_class: 1 (one logit per sample), found num_class: {n}; "
        "use softmax_cross_entropy for multi-class labels",
    ),
    "softmax_cross_entropy": (
        _softmax_ok,
        "softmax_cross_entropy needs num_class > 1 (one logit per class), found num_class: {n}; "
        "use binary_cross_entropy for 0/1 labels, or set num_class: 2",
    ),
    "l2_loss": (
        _bce_ok,
        "l2_loss regresses one value and needs num_class: 1, found num_class: {n}",
    ),
}


def _check_losses(mc: Message, problems: _Problems) -> None:
    """Every loss is set and suits ``num_class``."""
    n = mc.num_class
    if n < 1:
        problems.add("model_config.num_class", f"num_class must be >= 1 (found {n})")
        return
    choices = _listing(f.name for f in loss_pb2.LossConfig.DESCRIPTOR.oneofs_by_name["loss"].fields)
    for i, loss in enumerate(mc.losses):
        fld = f"model_config.losses[{i}]"
        kind = loss.WhichOneof("loss")
        if kind is None:
            problems.add(fld, f"no loss is set; set one of: {choices}")
            continue
        accepts, explanation = _LOSS_NUM_CLASS_RULES.get(kind, (None, ""))
        if accepts is not None and not accepts(n):
            problems.add(f"{fld}.{kind}", explanation.format(n=n))


def _check_metrics(mc: Message, problems: _Problems) -> None:
    """Every metric and train metric is set."""
    oneof = metric_pb2.MetricConfig.DESCRIPTOR.oneofs_by_name["metric"]
    choices = _listing(f.name for f in oneof.fields)
    for i, metric in enumerate(mc.metrics):
        if metric.WhichOneof("metric") is None:
            problems.add(f"model_config.metrics[{i}]", f"no metric is set; set one of: {choices}")
    for i, train_metric in enumerate(mc.train_metrics):
        if train_metric.metric.WhichOneof("metric") is None:
            problems.add(
                f"model_config.train_metrics[{i}].metric",
                f"no metric is set; set one of: {choices}",
            )


def _check_data(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """data_config exists, names labels, and has positive batch sizes."""
    if not config.HasField("data_config"):
        problems.add("data_config", "data_config is missing (it names the label_fields)")
        return
    dc = config.data_config
    if not dc.label_fields:
        problems.add("data_config.label_fields", "label_fields is empty; name the label column(s)")
    if dc.batch_size <= 0:
        problems.add("data_config.batch_size", f"batch_size must be > 0 (found {dc.batch_size})")
    if dc.HasField("eval_batch_size") and dc.eval_batch_size <= 0:
        problems.add("data_config.eval_batch_size", "eval_batch_size must be > 0 when set")
    if dc.dataset_type == data_pb2.CsvDataset and not dc.with_header and not dc.input_fields:
        problems.add(
            "data_config.with_header",
            "CsvDataset without a header needs input_fields (the column names); "
            "or set with_header: true",
        )


_CLIPPING_TYPES = ("norm", "value", "none")


def _check_train(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """train_config, when present, sets a sparse and a dense optimizer."""
    if not config.HasField("train_config"):
        return
    tc = config.train_config
    for name in ("sparse_optimizer", "dense_optimizer"):
        fld = f"train_config.{name}"
        sub = getattr(tc, name)
        choices = _listing(f.name for f in sub.DESCRIPTOR.oneofs_by_name["optimizer"].fields)
        if not tc.HasField(name):
            problems.add(fld, f"{name} is missing; set one of: {choices}")
        elif sub.WhichOneof("optimizer") is None:
            problems.add(fld, f"{name} sets no optimizer; set one of: {choices}")
    if tc.HasField("grad_clipping") and tc.grad_clipping.clipping_type not in _CLIPPING_TYPES:
        found = tc.grad_clipping.clipping_type
        problems.add(
            "train_config.grad_clipping.clipping_type",
            f"clipping_type must be one of {', '.join(_CLIPPING_TYPES)} (found {found!r})"
            f"{_did_you_mean(found, _CLIPPING_TYPES)}",
        )


# --------------------------------------------------------------------------------------------
# Data columns
# --------------------------------------------------------------------------------------------


def _feature_column(feature: Message) -> str:
    """Return the input column of a feature: its expression (``side:column``) or its name."""
    expression = getattr(feature, "expression", "") or feature.feature_name
    return expression.split(":", 1)[-1]


def required_columns(config: pipeline_pb2.EasyRecConfig) -> dict[str, str]:
    """Return the data columns a config reads, mapped to who needs them.

    Args:
        config: the pipeline config.

    Returns:
        column -> ``"label"``, ``"sample weight"`` or ``"feature 'name'"`` (labels first).

    """
    needed: dict[str, str] = {}
    for label in config.data_config.label_fields:
        needed.setdefault(label, "label")
    for weight in config.data_config.sample_weight_fields:
        needed.setdefault(weight, "sample weight")
    for fc in config.feature_configs:
        feature = _feature_message(fc)
        if feature is not None and feature.feature_name:
            needed.setdefault(_feature_column(feature), f"feature {feature.feature_name!r}")
    return needed


def check_data_columns(
    config: Optional[pipeline_pb2.EasyRecConfig],
    available_columns: Sequence[str],
    path: PathLike,
    needed: Optional[Mapping[str, str]] = None,
) -> None:
    """Check that a data file has every column the config needs.

    Args:
        config: the pipeline config; used when ``needed`` is None (see
            :func:`required_columns`: labels, sample weights and feature inputs).
        available_columns: the columns the data file has.
        path: the data file (for the message).
        needed: column -> who needs it, e.g. ``{"click": "label", "uid": "feature 'user'"}``.

    Raises:
        ConfigError: (a ValueError) naming each missing column, e.g. ``label column 'click'
            not found in data/train.parquet (columns: a, b, c); did you mean 'clicks'?``.

    """
    if needed is None:
        needed = required_columns(config) if config is not None else {}
    available = list(available_columns)
    present = set(available)
    errors = [
        ConfigError(
            f"{who} column {column!r} not found in {os.fspath(path)} "
            f"(columns: {_listing(available, 30) or 'none'}){_did_you_mean(column, available)}"
        )
        for column, who in needed.items()
        if column not in present
    ]
    if errors:
        raise ConfigError.collect(errors, f"{len(errors)} columns missing from {os.fspath(path)}")
