"""``export_config.mixed_precision`` (TorchEasyRec's) and ``mlp_dtype``: which dtype the
exported MLPs use, and the errors of unknown or disagreeing values."""

from __future__ import annotations

import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.config.export_precision import export_mlp_dtype, warn_if_trained_otherwise
from recforge.export.exporter import set_mlp_dtype
from recforge.modules.mlp import MLP
from recforge.protos import export_pb2, pipeline_pb2


def export_config(text: str) -> export_pb2.ExportConfig:
    return text_format.Parse(text, export_pb2.ExportConfig())


@pytest.mark.parametrize(
    ("text", "dtype"),
    [
        ("", "float32"),
        ('mixed_precision: ""', "float32"),
        ('mixed_precision: "BF16"', "bfloat16"),
        ('mixed_precision: "FP16"', "float16"),
        ('mixed_precision: "bf16"', "bfloat16"),  # as train_config.mixed_precision, any case
        ('mlp_dtype: "bfloat16"', "bfloat16"),
        ('mixed_precision: "BF16" mlp_dtype: "bfloat16"', "bfloat16"),
        ('mixed_precision: "" mlp_dtype: "bfloat16"', "bfloat16"),
    ],
)
def test_the_export_dtype_of_each_setting(text, dtype):
    assert export_mlp_dtype(export_config(text)) == dtype


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ('mixed_precision: "int8"', "export_config.mixed_precision", "'BF16', 'FP16'"),
        ('mlp_dtype: "fp8"', "export_config.mlp_dtype", "float32, bfloat16, float16"),
        (
            'mixed_precision: "FP16" mlp_dtype: "bfloat16"',
            "export_config.mixed_precision",
            "means mlp_dtype 'float16'",
        ),
    ],
)
def test_unknown_or_disagreeing_values_are_errors_at_their_field(text, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        export_mlp_dtype(export_config(text))
    assert info.value.field == field
    config = pipeline_pb2.EasyRecConfig()
    config.export_config.CopyFrom(export_config(text))
    with pytest.raises(ConfigError, match=message):  # at validation, before any training
        validate_config(config)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_mlps_compute_in_the_export_dtype_and_script(dtype):
    torch.manual_seed(0)
    mlp = MLP(8, [16, 4]).eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        full = mlp(x)
        set_mlp_dtype(mlp, dtype)
        assert {p.dtype for p in mlp.parameters()} == {getattr(torch, dtype)}
        low = mlp(x)
        scripted = torch.jit.script(mlp)(x)
    assert low.dtype == scripted.dtype == torch.float32
    torch.testing.assert_close(scripted, low)
    assert 0 < (low - full).abs().max() < 0.05


def test_a_training_dtype_other_than_the_export_s_is_logged(caplog):
    with caplog.at_level("WARNING", logger="recforge.config.export_precision"):
        warn_if_trained_otherwise("BF16", "bfloat16")
        warn_if_trained_otherwise("", "float32")
        assert not caplog.text
        warn_if_trained_otherwise("BF16", "float32")
    assert "train_config.mixed_precision is 'BF16'" in caplog.text
