"""``recforge schema``: the config schema as a JSON Schema (for editors) or a Markdown reference.

Both are generated from the protobuf descriptors of ``EasyRecConfig`` and every message it
reaches, with each field's comment from the ``.proto`` source, its default, and its class in
:mod:`recforge.config.support` (implemented, not supported yet, ignored). The JSON Schema
describes the JSON/YAML config form (proto field names, as ``recforge`` writes them); point an
editor at it, e.g. ``# yaml-language-server: $schema=recforge.schema.json`` in a YAML config.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from recforge.config.support import Support, field_support
from recforge.protos import pipeline_pb2

PROTO_DIR = Path(pipeline_pb2.__file__).resolve().parent
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_MESSAGE = re.compile(r"^\s*message\s+(\w+)\s*\{")
_BLOCK = re.compile(r"^\s*(?:enum|oneof)\s+\w+\s*\{")
_FIELD = re.compile(
    r"^\s*(?:optional|repeated|required)?\s*(?:map\s*<[^>]*>|[\w.]+)\s+(\w+)\s*=\s*\d+"
    r"\s*(?:\[[^\]]*\])?\s*;"
    r"\s*(?://\s*(.*))?$"
)
# a comment that heads a run of fields rather than describing the next one
_SECTION_HEADING = "recforge extensions"
_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)\s*;")

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
}
# 64-bit integers: JSON configs may write them as numbers or as strings (protobuf's JSON form)
_INT64 = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^-?[0-9]+$"}]}


def _scan_comments(proto_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The comments of the fields and of the messages in the ``.proto`` files under ``proto_dir``.

    A field's comment is the ``//`` lines right above it plus a ``//`` comment ending its line;
    a message's is the ``//`` lines right above its ``message`` line.

    Returns:
        ``({"package.Message.field": comment}, {"package.Message": comment})``; nested
        messages are named ``package.Outer.Inner``.

    """
    fields: dict[str, str] = {}
    messages: dict[str, str] = {}
    for path in sorted(proto_dir.rglob("*.proto")):
        package = ""
        stack: list[Optional[str]] = []  # message names; None for enum/oneof blocks
        pending: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith("//"):
                text = stripped[2:].strip()
                if not text.startswith(_SECTION_HEADING):
                    pending.append(text)
                continue
            package_match = _PACKAGE.match(line)
            message = _MESSAGE.match(line)
            field_match = _FIELD.match(line) if stack else None
            names = ".".join(n for n in stack if n is not None)
            if package_match:
                package = package_match.group(1)
            elif message:
                if pending:
                    outer = f"{package}.{names}" if names else package
                    messages[f"{outer}.{message.group(1)}"] = " ".join(pending).strip()
                stack.append(message.group(1))
            elif _BLOCK.match(line):
                stack.append(None)
            elif field_match and names:
                text = " ".join(pending + ([field_match.group(2)] if field_match.group(2) else []))
                if text:
                    fields[f"{package}.{names}.{field_match.group(1)}"] = text.strip()
            # each "}" closes one block (a one-line "message M {}" opens and closes M)
            for _ in range(stripped.count("}")):
                if stack:
                    stack.pop()
            pending = []
    return fields, messages


def proto_comments(proto_dir: Path = PROTO_DIR) -> dict[str, str]:
    """The comment of every commented field in the ``.proto`` files under ``proto_dir``.

    The comment is the ``//`` lines right above the field plus a ``//`` comment ending its
    line.

    Returns:
        ``{"package.Message.field": comment}`` (nested messages: ``package.Outer.Inner.f``).

    """
    return _scan_comments(proto_dir)[0]


def message_comments(proto_dir: Path = PROTO_DIR) -> dict[str, str]:
    """The comment of every commented message in the ``.proto`` files under ``proto_dir``.

    Returns:
        ``{"package.Message": comment}`` (nested messages: ``package.Outer.Inner``), the
        ``//`` lines right above each ``message`` line.

    """
    return _scan_comments(proto_dir)[1]


def reachable_messages(
    root: Descriptor = pipeline_pb2.EasyRecConfig.DESCRIPTOR,
) -> list[Descriptor]:
    """``root`` and every message its fields reach, breadth first.

    Map entries and protobuf's well-known types (``google.protobuf.Struct``) are left out.
    """
    seen: dict[str, Descriptor] = {root.full_name: root}
    queue = [root]
    while queue:
        desc = queue.pop(0)
        for fd in desc.fields:
            target = fd.message_type
            if target is None:
                continue
            if target.GetOptions().map_entry:
                target = target.fields_by_name["value"].message_type
                if target is None:
                    continue
            if target.full_name.startswith("google.protobuf."):
                continue  # well-known types (Struct): free-form, described where used
            if target.full_name not in seen:
                seen[target.full_name] = target
                queue.append(target)
    return list(seen.values())


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _support_text(fd: FieldDescriptor) -> str:
    entry = field_support(fd)
    if entry is None or entry.support == Support.IMPLEMENTED:
        return ""
    return f"{entry.support.value}: {entry.reason}"


def _default(fd: FieldDescriptor) -> Any:
    if not fd.has_default_value or fd.is_repeated:
        return None
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[fd.default_value].name
    return fd.default_value


def _value_schema(fd: FieldDescriptor) -> dict[str, Any]:
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Struct":
            return {"type": "object"}
        return {"$ref": f"#/$defs/{fd.message_type.full_name}"}
    if fd.enum_type is not None:
        return {"enum": [v.name for v in fd.enum_type.values]}
    if fd.type in _SCALARS:
        return dict(_SCALARS[fd.type])
    return dict(_INT64)


def _field_schema(fd: FieldDescriptor, comments: dict[str, str]) -> dict[str, Any]:
    if _is_map(fd):
        value = fd.message_type.fields_by_name["value"]
        schema: dict[str, Any] = {"type": "object", "additionalProperties": _value_schema(value)}
    elif fd.is_repeated:
        schema = {"type": "array", "items": _value_schema(fd)}
    else:
        schema = _value_schema(fd)
    # what recforge does with it first: an editor shows the start of the description
    notes = [_support_text(fd), comments.get(fd.full_name, "")]
    if fd.containing_oneof is not None:
        others = [f.name for f in fd.containing_oneof.fields]
        notes.append(f"one of {fd.containing_oneof.name}: {', '.join(others)}")
    description = "; ".join(n for n in notes if n)
    if description:
        schema["description"] = description
    default = _default(fd)
    if default is not None:
        schema["default"] = default
    return schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a JSON/YAML pipeline config."""
    comments, about = _scan_comments(PROTO_DIR)
    defs: dict[str, Any] = {}
    for desc in reachable_messages():
        properties = {fd.name: _field_schema(fd, comments) for fd in desc.fields}
        defs[desc.full_name] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if desc.full_name in about:
            defs[desc.full_name]["description"] = about[desc.full_name]
    root = pipeline_pb2.EasyRecConfig.DESCRIPTOR.full_name
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "recforge pipeline config (TorchEasyRec's EasyRecConfig)",
        "$ref": f"#/$defs/{root}",
        "$defs": defs,
    }


def _type_name(fd: FieldDescriptor) -> str:
    if _is_map(fd):
        key, value = (fd.message_type.fields_by_name[n] for n in ("key", "value"))
        return f"map<{_type_name(key)}, {_type_name(value)}>"
    if fd.message_type is not None:
        name = fd.message_type.name
        if fd.message_type.full_name != "google.protobuf.Struct":
            name = f"[{name}](#{name.lower()})"
    elif fd.enum_type is not None:
        name = fd.enum_type.name
    else:
        name = next(
            k.removeprefix("TYPE_").lower()
            for k, v in vars(FieldDescriptor).items()
            if k.startswith("TYPE_") and v == fd.type
        )
    return f"repeated {name}" if fd.is_repeated else name


def _default_text(fd: FieldDescriptor) -> str:
    """A field's default as a text-format config writes it (``true``, ``0.1``, ``"sum"``)."""
    value = _default(fd)
    if value is None:
        return ""
    if fd.enum_type is not None:
        text = value
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.7g}"
    elif isinstance(value, str):
        text = json.dumps(value)
    else:
        text = str(value)
    return f"`{text}`"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_lines() -> Iterator[str]:
    """The Markdown field reference, line by line: one table per message."""
    comments, about = _scan_comments(PROTO_DIR)
    yield "# recforge config reference"
    yield ""
    yield (
        "Generated by `recforge schema --format markdown` from the config schema"
        " (`recforge/protos/*.proto`) and `recforge/config/support.py`. Every message reachable"
        " from `EasyRecConfig`, the top level of a config file; *Support* is empty for fields"
        " that work as TorchEasyRec documents them."
    )
    for desc in reachable_messages():
        yield ""
        yield f"## {desc.name}"
        yield ""
        if desc.full_name in about:
            yield about[desc.full_name]
            yield ""
        yield "| Field | Type | Default | Support | Description |"
        yield "|---|---|---|---|---|"
        for fd in desc.fields:
            note = comments.get(fd.full_name, "")
            if fd.containing_oneof is not None:
                note = f"{note} (oneof `{fd.containing_oneof.name}`)".strip()
            row = [
                f"`{fd.name}`",
                _type_name(fd),
                _default_text(fd),
                _support_text(fd),
                note,
            ]
            yield "| " + " | ".join(_cell(c) for c in row) + " |"


def write_schema(fmt: str, output: Optional[str] = None) -> str:
    """Renders the schema as ``fmt`` (``json-schema`` or ``markdown``).

    Args:
        fmt: the format.
        output: a file to write (atomically); None returns the text only.

    Returns:
        The text.

    """
    if fmt == "json-schema":
        text = json.dumps(json_schema(), indent=1) + "\n"
    else:
        text = "\n".join(markdown_lines()) + "\n"
    if output:
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    return text
