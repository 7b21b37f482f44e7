"""The schema's generated type stubs (``*_pb2.pyi``) are built and kept fresh with ``*_pb2.py``."""

from __future__ import annotations

import os

import recforge.protos as protos
from recforge.protos import pipeline_pb2


def test_every_proto_has_its_stub_beside_its_module():
    for proto in protos._proto_files():
        stub = proto.with_name(proto.stem + "_pb2.pyi")
        assert stub.exists(), stub
        assert stub.stat().st_mtime >= proto.stat().st_mtime


def test_stub_types_the_pipeline_message():
    stub = (protos._PROTO_DIR / "pipeline_pb2.pyi").read_text()
    assert "class EasyRecConfig(_message.Message):" in stub
    assert "data_config: _data_pb2.DataConfig" in stub
    assert pipeline_pb2.EasyRecConfig.DESCRIPTOR.name == "EasyRecConfig"


def test_a_missing_or_older_stub_makes_its_proto_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(protos, "_PROTO_DIR", tmp_path)
    proto = tmp_path / "a.proto"
    proto.write_text('syntax = "proto2";\n')
    module, stub = tmp_path / "a_pb2.py", tmp_path / "a_pb2.pyi"
    module.write_text("")
    assert protos._stale() == [proto]  # no stub yet
    stub.write_text("")
    assert protos._stale() == []
    old = proto.stat().st_mtime - 10
    os.utime(stub, (old, old))
    assert protos._stale() == [proto]  # the stub predates its proto
    os.utime(stub, None)
    module.unlink()
    assert protos._stale() == [proto]  # the module is still required
