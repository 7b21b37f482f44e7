"""Editing a config in place from overrides such as ``{"train_config.num_epochs": "3"}``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from recforge.config._checker import StructChecker
from recforge.config._positions import SourceIndex
from recforge.config._schema import is_map, message_class, type_name, unknown_field_message
from recforge.config._util import join
from recforge.config._values import as_list, as_mapping, parse_scalar, yaml_mapping
from recforge.config.errors import ConfigError

_EDIT_TOKEN = re.compile(r"(?P<dot>\.)?(?P<name>[A-Za-z_]\w*)|\[(?P<index>[^\]]*)\]")


@dataclass
class _Step:
    """One field of an edit path with its selectors (``name[0]``, ``name[:]``, ``name[k=v]``)."""

    name: str
    selectors: list[str] = field(default_factory=list)


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


# --------------------------------------------------------------------------------------------
# Following an edit path
# --------------------------------------------------------------------------------------------


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


def _apply_edit(config: Message, key: str, value: Any) -> None:
    """Apply one edit."""
    steps = _parse_edit_path(key)
    targets: list[tuple[Message, str]] = [(config, "")]
    for step in steps[:-1]:
        targets = [t for msg, prefix in targets for t in _descend(msg, prefix, step)]
    last = steps[-1]
    for msg, prefix in targets:
        fd = _edit_field(msg, last.name, prefix)
        _assign(msg, fd, last.selectors, value, join(prefix, last.name))


def _edit_field(msg: Message, name: str, prefix: str) -> FieldDescriptor:
    """Return the field ``name`` of ``msg``, or ConfigError with the closest valid name."""
    fd = msg.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:
        raise ConfigError(unknown_field_message(msg.DESCRIPTOR, name), field=join(prefix, name))
    return fd


def _descend(msg: Message, prefix: str, step: _Step) -> list[tuple[Message, str]]:
    """Return the sub-messages an intermediate step leads to, with their paths."""
    fd = _edit_field(msg, step.name, prefix)
    path = join(prefix, step.name)
    if fd.message_type is None or is_map(fd):
        raise ConfigError(
            f"{step.name!r} is a {type_name(fd)} field; it has no sub-fields", field=path
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


# --------------------------------------------------------------------------------------------
# Setting the last field
# --------------------------------------------------------------------------------------------


def _assign(msg: Message, fd: FieldDescriptor, selectors: list[str], value: Any, path: str) -> None:
    """Set the last field of an edit path."""
    if not fd.is_repeated:
        if selectors:
            raise ConfigError(f"{fd.name!r} is not repeated; it takes no index", field=path)
        if fd.message_type is not None:
            _replace_message(getattr(msg, fd.name), value, path)
        else:
            _set_scalar(msg, fd, parse_scalar(fd, value, path), path)
        return
    if not selectors:
        _replace_repeated(msg, fd, value, path)
        return
    if len(selectors) != 1:
        raise ConfigError("only one index per field is supported", field=path)
    container = getattr(msg, fd.name)
    for i in _select(container, selectors[0], path):
        _set_item(container, fd, i, value, f"{path}[{i}]")


def _set_scalar(msg: Message, fd: FieldDescriptor, value: Any, path: str) -> None:
    """``setattr`` that reports out-of-range values as ConfigError."""
    try:
        setattr(msg, fd.name, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value {value!r} for {type_name(fd)}: {e}", field=path) from None


def _set_item(
    container: Any, fd: FieldDescriptor, index: Optional[int], value: Any, path: str
) -> None:
    """Set element ``index`` of a repeated field (append one when ``index`` is None)."""
    if fd.message_type is not None:
        target = container.add() if index is None else container[index]
        _replace_message(target, value, path)
        return
    parsed = parse_scalar(fd, value, path)
    try:
        if index is None:
            container.append(parsed)
        else:
            container[index] = parsed
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value {value!r}: {e}", field=path) from None


def _replace_repeated(msg: Message, fd: FieldDescriptor, value: Any, path: str) -> None:
    """Replace a whole repeated (or map) field."""
    if is_map(fd):
        data = as_mapping(value, path)
        probe = message_class(msg.DESCRIPTOR)()
        _parse_dict_into({fd.name: data}, probe, path)
        msg.ClearField(fd.name)
        msg.MergeFrom(probe)
        return
    items = as_list(value, path)
    msg.ClearField(fd.name)
    container = getattr(msg, fd.name)
    for i, item in enumerate(items):
        _set_item(container, fd, None, item, f"{path}[{i}]")


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
    checker = StructChecker(SourceIndex(lines=[]), None, False)
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
    parsed = yaml_mapping(text)
    if parsed is not None:
        message.Clear()
        _parse_dict_into(parsed, message, path)
        return
    raise ConfigError(
        f"cannot parse {value!r} as {message.DESCRIPTOR.name}: {text_error}", field=path
    )
