"""Reading which member of a oneof is set (the model, the optimizer, ...)."""

from __future__ import annotations

from google.protobuf.descriptor import OneofDescriptor
from google.protobuf.message import Message

from recforge.config._schema import choices
from recforge.config._util import did_you_mean, listing
from recforge.config.errors import ConfigError


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
        raise ConfigError(
            f"no {oneof_name!r} is set in {message.DESCRIPTOR.name}; set one of: {choices(oneof)}",
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


def _oneof(message: Message, oneof_name: str) -> OneofDescriptor:
    """Return the descriptor of a message's oneof, or ConfigError listing the oneofs it has."""
    desc = message.DESCRIPTOR
    oneof = desc.oneofs_by_name.get(oneof_name)
    if oneof is None:
        names = list(desc.oneofs_by_name)
        raise ConfigError(
            f"{desc.name} has no oneof {oneof_name!r}{did_you_mean(oneof_name, names)}"
            f" (oneofs: {listing(names) or 'none'})",
            field=oneof_name,
        )
    return oneof
