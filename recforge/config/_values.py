"""Converting edit values (strings or already-typed) to the Python types of proto fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

import yaml
from google.protobuf.descriptor import FieldDescriptor

from recforge.config._schema import enum_hint, type_name
from recforge.config.errors import ConfigError

_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def parse_scalar(fd: FieldDescriptor, value: Any, path: str) -> Any:
    """Convert an edit value (string or typed) to a scalar field's Python type.

    Args:
        fd: the scalar field.
        value: the value, e.g. ``"3"``, ``3``, ``"true"`` or an enum name.
        path: the field path (for the error).

    Returns:
        The converted value.

    Raises:
        ConfigError: the value does not fit the field's type.

    """
    try:
        return _convert_scalar(fd, value)
    except (TypeError, ValueError):
        hint = enum_hint(fd, str(value))
        raise ConfigError(f"expected {type_name(fd)}, found {value!r}{hint}", field=path) from None


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
    if fd.type == FieldDescriptor.TYPE_STRING:
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


def as_list(value: Any, path: str) -> list[Any]:
    """Return a list from a Python list/tuple, a ``"[a, b]"`` string, or a single value.

    Raises:
        ConfigError: a ``"[...]"`` string that is not valid YAML.

    """
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


def yaml_mapping(text: str) -> Optional[dict[str, Any]]:
    """Return a JSON/YAML string's mapping ({} for a blank string), or None when it is not one."""
    try:
        parsed = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        return None
    return dict(parsed) if isinstance(parsed, Mapping) else None


def as_mapping(value: Any, path: str) -> dict[str, Any]:
    """Return a mapping from a dict or a JSON/YAML string.

    Raises:
        ConfigError: the value is neither.

    """
    if isinstance(value, Mapping):
        return dict(value)
    parsed = yaml_mapping(value) if isinstance(value, str) else None
    if parsed is not None:
        return parsed
    raise ConfigError(f"expected a mapping (dict or JSON object), found {value!r}", field=path)
