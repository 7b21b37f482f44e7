"""Loading and saving pipeline configs as text format, JSON or YAML, with precise errors."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

import yaml
from google.protobuf import descriptor_pool, json_format, text_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from recforge.config._checker import StructChecker
from recforge.config._positions import NodeIndexer, SourceIndex, TextScanner
from recforge.config._schema import enum_names, oneof_conflict_message, unknown_field_message
from recforge.config._util import (
    INDEX_SUFFIX,
    PathLike,
    did_you_mean,
    format_of,
    join,
    listing,
    logger,
    parent_path,
)
from recforge.config.errors import ConfigError
from recforge.protos import pipeline_pb2

_UNKNOWN_FIELD_RE = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)"')
_ONEOF_RE = re.compile(
    r'Field "(\w+)" is specified along with field "(\w+)", another member of oneof "(\w+)"'
)
_DUPLICATE_RE = re.compile(r'should not have multiple "(\w+)" fields')
_ENUM_RE = re.compile(r'Enum type "([\w.]+)" has no value named ([^\s.]+)')
_QUOTED_LINE_PREFIX = re.compile(r"^'.*': (?=[A-Z])")
_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")


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
    fmt = format_of(path)
    if fmt == "text":
        return _parse_text(text, path, allow_unknown_field)
    data, index = _load_structured(text, path, fmt)
    return _parse_structured(data, index, path, allow_unknown_field)


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
    fmt = format_of(path)
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


# --------------------------------------------------------------------------------------------
# Text format
# --------------------------------------------------------------------------------------------


def _parse_text(text: str, path: PathLike, allow_unknown_field: bool) -> pipeline_pb2.EasyRecConfig:
    """Parse protobuf text format into a config, explaining any error."""
    config = pipeline_pb2.EasyRecConfig()
    try:
        text_format.Parse(text, config, allow_unknown_field=allow_unknown_field)
    except text_format.ParseError as e:
        index = TextScanner(text, config.DESCRIPTOR).scan()
        raise _text_parse_error(e, index, path) from None
    if allow_unknown_field:
        index = TextScanner(text, config.DESCRIPTOR).scan()
        for pos, fld, desc in index.unknown:
            name = fld.rsplit(".", 1)[-1]
            where = index.error(unknown_field_message(desc, name), path, fld, pos).headline()
            logger.warning("ignored %s", where)
    return config


def _text_parse_error(
    err: text_format.ParseError, index: SourceIndex, path: PathLike
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
    return index.error(message, path, fld, pos)


def _describe_unknown_text_field(type_name: str, name: str) -> str:
    """Explains an unknown field reported by the text-format parser."""
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return f"unknown field {name!r} in {type_name}"
    return unknown_field_message(desc, name)


def _missing_brace_hint(fld: Optional[str], name: str) -> str:
    """Return a hint when an unknown field belongs to an enclosing message (a missing ``}``)."""
    desc: Descriptor = pipeline_pb2.EasyRecConfig.DESCRIPTOR
    owners = []
    for part in INDEX_SUFFIX.sub("", fld or "").split(".")[:-1]:
        if name in desc.fields_by_name:
            owners.append(desc.name)
        fd = desc.fields_by_name.get(INDEX_SUFFIX.sub("", part))
        if fd is None or fd.message_type is None:
            return ""
        desc = fd.message_type
    if not owners:
        return ""
    return f"; {name!r} is a field of {owners[-1]}: is a closing '}}' missing above this line?"


def _describe_oneof_conflict(
    oneof: str, first: str, second: str, fld: Optional[str], index: SourceIndex
) -> str:
    """Explains two members of one oneof being set, with the line of the first."""
    first_pos = index.first.get(join(parent_path(fld), first)) if fld else None
    at = f" (line {first_pos[0]})" if first_pos else ""
    return oneof_conflict_message(oneof, first, second, at)


def _describe_bad_enum(type_name: str, value: str) -> str:
    """Explains an unknown enum value and suggests the closest valid one."""
    try:
        enum = descriptor_pool.Default().FindEnumTypeByName(type_name)
    except KeyError:
        return f"enum {type_name} has no value {value!r}"
    names = enum_names(enum)
    return (
        f"enum {enum.name} has no value {value!r}{did_you_mean(value, names)} "
        f"(values: {listing(names)})"
    )


# --------------------------------------------------------------------------------------------
# JSON and YAML
# --------------------------------------------------------------------------------------------


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


def _load_structured(text: str, path: PathLike, fmt: str) -> tuple[Any, SourceIndex]:
    """Parse JSON/YAML text into Python data plus a position index."""
    index = NodeIndexer(text, pipeline_pb2.EasyRecConfig.DESCRIPTOR).scan()
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


def _yaml_error(err: yaml.YAMLError, index: SourceIndex, path: PathLike) -> ConfigError:
    """Turn a YAML syntax error into a ConfigError at its position."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    pos = (mark.line + 1, mark.column + 1) if mark is not None else None
    return index.error(message, path, None, pos)


def _parse_structured(
    data: Any, index: SourceIndex, path: PathLike, allow_unknown_field: bool
) -> pipeline_pb2.EasyRecConfig:
    """Check JSON/YAML data against the schema, then parse it with ``json_format``."""
    config = pipeline_pb2.EasyRecConfig()
    checker = StructChecker(index, path, allow_unknown_field)
    checker.message(data, config.DESCRIPTOR, "")
    try:
        json_format.ParseDict(data, config, ignore_unknown_fields=allow_unknown_field)
    except json_format.ParseError as e:  # pragma: no cover  (the checker should catch it first)
        raise ConfigError(str(e), path) from None
    return config
