"""Checking JSON/YAML data against the schema before ``json_format`` parses it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from recforge.config._positions import SourceIndex
from recforge.config._schema import (
    enum_hint,
    find_field,
    is_map,
    message_class,
    oneof_conflict_message,
    type_name,
    unknown_field_message,
)
from recforge.config._util import PathLike, join, logger
from recforge.config.errors import ConfigError


class StructChecker:
    """Walks JSON/YAML data along the schema and reports the first problem precisely.

    Args:
        index: where each field path is in the source (for line numbers and snippets).
        path: the config file, when there is one.
        allow_unknown_field: log unknown fields instead of failing on them.

    """

    def __init__(
        self, index: SourceIndex, path: Optional[PathLike], allow_unknown_field: bool
    ) -> None:
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
            fd = find_field(desc, str(key))
            fld = join(prefix, fd.name if fd is not None else str(key))
            if fd is None:
                self._unknown(desc, str(key), fld)
            elif value is not None:
                self._oneof(fd, oneofs, fld)
                self.field(fd, value, fld)

    def _unknown(self, desc: Descriptor, key: str, fld: str) -> None:
        message = unknown_field_message(desc, key, json_names=True)
        if not self._allow_unknown:
            raise self._fail(message, fld)
        logger.warning("ignored %s", self._fail(message, fld).headline())

    def _oneof(self, fd: FieldDescriptor, seen: dict[str, str], fld: str) -> None:
        oneof = fd.containing_oneof
        if oneof is None:
            return
        if oneof.name in seen:
            raise self._fail(oneof_conflict_message(oneof.name, seen[oneof.name], fd.name), fld)
        seen[oneof.name] = fd.name

    def field(self, fd: FieldDescriptor, value: Any, fld: str) -> None:
        """Check one field's value (a list for repeated fields, a mapping for maps)."""
        if is_map(fd):
            self._map(fd, value, fld)
        elif fd.is_repeated:
            if not isinstance(value, list):
                raise self._fail(f"expected a list of {type_name(fd)}, found {value!r}", fld)
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
        probe = message_class(fd.containing_type)()
        try:
            json_format.ParseDict({fd.name: [value] if fd.is_repeated else value}, probe)
        except (json_format.ParseError, TypeError, ValueError):
            hint = enum_hint(fd, value) if isinstance(value, str) else ""
            raise self._fail(f"expected {type_name(fd)}, found {value!r}{hint}", fld) from None
