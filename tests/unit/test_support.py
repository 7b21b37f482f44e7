"""The field-accounting table: every schema field is classified; each class does what it says."""

from __future__ import annotations

import logging
from collections import deque
from typing import Optional

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import recforge.config.support as support
from recforge.config import ConfigError
from recforge.config.loader import load_pipeline_config
from recforge.config.support import FIELDS, MESSAGES, Support, check_support, field_support
from recforge.config.validation import validate_config
from recforge.protos import pipeline_pb2

ROOT = pipeline_pb2.EasyRecConfig.DESCRIPTOR
CONFIG = "tests/configs/frappe_deepfm.config"


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _all_messages() -> dict[str, Descriptor]:
    """Every message of the schema (recforge.protos), map entries excluded."""
    found: dict[str, Descriptor] = {}
    todo = [ROOT]
    while todo:
        desc = todo.pop()
        if desc.full_name in found or desc.GetOptions().map_entry:
            continue
        found[desc.full_name] = desc
        todo += [fd.message_type for fd in desc.fields if fd.message_type is not None]
        todo += list(desc.nested_types)
        todo += [m for m in desc.file.message_types_by_name.values()]
    return {k: v for k, v in found.items() if k.startswith("recforge.protos.")}


MESSAGES_BY_KEY = {support.message_key(d): d for d in _all_messages().values()}


def test_every_field_of_the_schema_is_classified():
    unclassified = [
        f"{key}.{fd.name}"
        for key, desc in MESSAGES_BY_KEY.items()
        for fd in desc.fields
        if field_support(fd) is None
    ]
    assert not unclassified, f"fields in no class of recforge/config/support.py: {unclassified}"
    assert len(MESSAGES_BY_KEY) > 150  # the whole TorchEasyRec schema, not a part of it


def test_every_table_key_names_a_real_message_field_or_enum_value():
    stale = [key for key in MESSAGES if key not in MESSAGES_BY_KEY]
    for key in FIELDS:
        name, _, value = key.partition("=")
        message, _, field = name.rpartition(".")
        desc = MESSAGES_BY_KEY.get(message)
        fd = desc.fields_by_name.get(field) if desc is not None else None
        if fd is None or (
            value and (fd.enum_type is None or value not in fd.enum_type.values_by_name)
        ):
            stale.append(key)
    assert not stale


def _path_to(target: str) -> Optional[list[FieldDescriptor]]:
    """The shortest chain of supported fields from EasyRecConfig to message ``target``."""
    queue = deque([(ROOT, [])])
    seen = {support.message_key(ROOT)}
    while queue:
        desc, path = queue.popleft()
        if support.message_key(desc) == target:
            return path
        for fd in desc.fields:
            entry = field_support(fd)
            if fd.message_type is None or _is_map(fd) or entry.support is Support.NOT_SUPPORTED:
                continue
            key = support.message_key(fd.message_type)
            if key not in seen:
                seen.add(key)
                queue.append((fd.message_type, path + [fd]))
    return None


def _set(message, fd: FieldDescriptor, enum_value: str = "") -> str:
    """Sets ``fd`` in ``message`` to a non-default value; returns the field's path segment."""
    if _is_map(fd):
        key_fd, value_fd = fd.message_type.fields
        key = "k" if key_fd.type == FieldDescriptor.TYPE_STRING else 1
        entries = getattr(message, fd.name)
        if value_fd.message_type is not None:
            entries[key].SetInParent()
        else:
            entries[key] = "v" if value_fd.type == FieldDescriptor.TYPE_STRING else 1
        return fd.name
    if fd.message_type is not None:
        if fd.is_repeated:
            getattr(message, fd.name).add()
            return f"{fd.name}[0]"
        getattr(message, fd.name).SetInParent()
        return fd.name
    if fd.enum_type is not None:
        values = [v.number for v in fd.enum_type.values]
        value = fd.enum_type.values_by_name[enum_value].number if enum_value else values[-1]
    elif fd.type == FieldDescriptor.TYPE_BOOL:
        value = not fd.default_value if not fd.is_repeated else True
    elif fd.type == FieldDescriptor.TYPE_STRING:
        value = "x"
    else:
        value = 1
    if fd.is_repeated:
        getattr(message, fd.name).append(value)
        return f"{fd.name}[0]"
    setattr(message, fd.name, value)
    return fd.name


def _config_with(key: str) -> tuple[pipeline_pb2.EasyRecConfig, str]:
    """An otherwise empty config that sets the field (or enum value, or message) ``key``."""
    name, _, enum_value = key.partition("=")
    if name in MESSAGES_BY_KEY:  # a whole message: reach it through a field of its type
        message_name, field = None, None
        chain = _path_to(name)
        if chain is None:
            return None, ""
        leaf = chain.pop()
    else:
        message_name, _, field = name.rpartition(".")
        chain = _path_to(message_name)
        if chain is None:
            return None, ""
        leaf = MESSAGES_BY_KEY[message_name].fields_by_name[field]
    config = pipeline_pb2.EasyRecConfig()
    message, parts = config, []
    for fd in chain:
        parts.append(_set(message, fd))
        message = getattr(message, fd.name)
        message = message[0] if fd.is_repeated else message
    parts.append(_set(message, leaf, enum_value))
    return config, ".".join(parts)


NOT_SUPPORTED = sorted(
    key for key, entry in {**MESSAGES, **FIELDS}.items() if entry.support is Support.NOT_SUPPORTED
)


def test_each_not_supported_field_is_a_located_error():
    reached = 0
    for key in NOT_SUPPORTED:
        config, path = _config_with(key)
        if config is None:  # only reachable inside another unsupported field, which reports it
            continue
        problems = check_support(config)
        assert problems, f"{key} set at {path} was accepted"
        where, message = problems[0]
        assert path.startswith(where) and "not supported yet" in message, (key, problems)
        reached += 1
    assert reached > 50  # the loop reaches most entries (fewer as fields get built)


def test_ignored_fields_warn_once_per_run_and_pass(caplog, monkeypatch):
    monkeypatch.setattr(support, "_warned", set())
    config, path = _config_with("DataConfig.odps_data_quota_name")
    with caplog.at_level(logging.WARNING, logger="recforge.config.support"):
        assert check_support(config) == []
        assert check_support(config) == []
    warnings = [r.getMessage() for r in caplog.records if "is ignored" in r.getMessage()]
    assert warnings == [f"{path} is ignored: {FIELDS['DataConfig.odps_data_quota_name'].reason}"]


def test_validation_names_file_line_and_field(tmp_path):
    text = (
        open(CONFIG).read().replace("data_config {", "data_config {\n  sample_cost_field: 'c'", 1)
    )
    path = tmp_path / "x.config"
    path.write_text(text)
    config = load_pipeline_config(str(path))
    with pytest.raises(ConfigError) as error:
        validate_config(config, str(path))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "sample_cost_field" in t)
    assert f"x.config:{line}:" in str(error.value)
    assert "data_config.sample_cost_field: sample_cost_field is not supported yet" in str(
        error.value
    )


def test_not_supported_enum_value_is_refused_and_others_pass():
    config = pipeline_pb2.EasyRecConfig()
    config.model_config.dssm.similarity = 0  # COSINE: built
    assert check_support(config) == []
    config.model_config.dssm.similarity = 2  # EUCLID: not yet
    ((where, message),) = check_support(config)
    assert where == "model_config.dssm.similarity" and "EUCLID is not supported yet" in message
