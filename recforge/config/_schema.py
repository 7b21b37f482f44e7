"""Helpers that read the protobuf schema: field types, lookups, oneof and enum choices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    OneofDescriptor,
)
from google.protobuf.message import Message

from recforge.config._util import MAX_LISTED, closest, did_you_mean, listing
from recforge.protos import pipeline_pb2

_SCALAR_TYPE_NAMES = {
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


def choices(oneof: OneofDescriptor, limit: int = MAX_LISTED) -> str:
    """List the member names of a oneof, e.g. ``deepfm, multi_tower, ...``."""
    return listing((f.name for f in oneof.fields), limit)


def enum_names(enum: EnumDescriptor) -> list[str]:
    """Return the value names of an enum, in declaration order."""
    return [v.name for v in enum.values]


def enum_hint(fd: FieldDescriptor, value: str) -> str:
    """A "did you mean" for a bad enum value ("" when ``fd`` is not an enum or nothing is close)."""
    return did_you_mean(value, enum_names(fd.enum_type)) if fd.enum_type is not None else ""


def type_name(fd: FieldDescriptor) -> str:
    """Return a readable name of a field's type, e.g. ``uint32``, ``message MLP``."""
    if fd.message_type is not None:
        return f"message {fd.message_type.name}"
    if fd.enum_type is not None:
        return f"enum {fd.enum_type.name} ({listing(enum_names(fd.enum_type))})"
    return _SCALAR_TYPE_NAMES.get(fd.type, "scalar")


def is_map(fd: FieldDescriptor) -> bool:
    """Whether a field is a ``map<...>``."""
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def find_field(desc: Descriptor, name: str) -> Optional[FieldDescriptor]:
    """Look a field up by its proto name or its JSON (lowerCamel) name."""
    fd = desc.fields_by_name.get(name)
    if fd is not None:
        return fd
    return next((f for f in desc.fields if f.json_name == name), None)


def message_class(desc: Descriptor) -> type:
    """Return the generated message class of a descriptor."""
    return message_factory.GetMessageClass(desc)


def unknown_field_message(desc: Descriptor, name: str, json_names: bool = False) -> str:
    """Explains an unknown field name and suggests the closest valid one.

    A name that looks like one of a oneof's members (e.g. ``deep_fm`` in ``ModelConfig``) also
    lists that oneof's choices; a message with a ``model`` oneof lists the known models when
    nothing is close.

    Args:
        desc: the message the name was looked up in.
        name: the unknown name.
        json_names: also suggest the fields' JSON (lowerCamel) names.

    Returns:
        The explanation, e.g. ``unknown field 'batchsize' in DataConfig; did you mean ...``.

    """
    candidates = [f.name for f in desc.fields]
    if json_names:
        candidates += [f.json_name for f in desc.fields if f.json_name != f.name]
    match = closest(name, candidates)
    text = f"unknown field {name!r} in {desc.name}"
    if match:
        text += f"; did you mean {match!r}?"
        found = find_field(desc, match)
        oneof = found.containing_oneof if found is not None else None
        if oneof is not None:
            text += f" (choices for {oneof.name!r}: {choices(oneof)})"
        return text
    model = desc.oneofs_by_name.get("model")
    if model is not None:
        text += f"; known models: {choices(model, 100)}"
    return text + f" (fields: {listing(f.name for f in desc.fields)})"


def oneof_conflict_message(oneof: str, first: str, second: str, at: str = "") -> str:
    """Explains two members of one oneof being set (``at`` says where the first one is)."""
    return f"two members of oneof {oneof!r} are set: {first!r}{at} and {second!r}; keep only one"


def named_features(config: pipeline_pb2.EasyRecConfig) -> Iterator[Message]:
    """Yield the feature messages (IdFeature, ...) of ``feature_configs`` that have a name.

    A ``sequence_feature`` yields one message per element, named and reading columns as the
    model sees them (``"{sequence_name}__{feature_name}"``).
    """
    from recforge.features.sequence_feature import sequence_element_configs

    for fc in config.feature_configs:
        kind = fc.WhichOneof("feature")
        if kind == "sequence_feature":
            for _, element in sequence_element_configs(fc.sequence_feature):
                if element.feature_name:
                    yield element
            continue
        feature = getattr(fc, kind) if kind else None
        if feature is not None and feature.feature_name:
            yield feature
