"""ultra_hstu: one channel is dlrm_hstu, two channels train and export, config errors."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.config.support import check_support
from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, create_features
from recforge.models.dlrm_hstu import DlrmHSTU
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.models.ultra_hstu import TransducerStack, UltraHSTU
from recforge.protos import pipeline_pb2
from tests.helpers.dlrm_hstu import FEATURES, MODEL, planted_rank_table
from tests.helpers.scripted import assert_scripted_matches_eager
from tests.helpers.ultra_hstu import (
    SINGLE_CHANNEL_MODEL,
    TWO_CHANNEL_FEATURES,
    TWO_CHANNEL_MODEL,
    two_channel_table,
)

LABELS = ["label_next", "label_hot"]


def config(model: str, features: str) -> pipeline_pb2.EasyRecConfig:
    text = f"data_config {{ label_fields: {LABELS} fg_mode: FG_DAG }} {features} {model}"
    return text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())


def build(cfg: pipeline_pb2.EasyRecConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))


def batch(model, rows: pa.Table):
    return DataParser(model.features, LABELS).parse_batch(rows.to_batches()[0])


def test_one_unnamed_channel_is_dlrm_hstu():
    dlrm = build(config(MODEL, FEATURES)).eval()
    ultra = build(config(SINGLE_CHANNEL_MODEL, FEATURES), seed=1).eval()
    assert type(ultra) is UltraHSTU and type(dlrm) is DlrmHSTU
    assert check_support(config(SINGLE_CHANNEL_MODEL, FEATURES)) == []
    ultra.load_state_dict(dlrm.state_dict())  # same layers, same names
    rows = planted_rank_table(6, 4)
    with torch.no_grad():
        want = dlrm.predict(batch(dlrm, rows))
        got = ultra.predict(batch(ultra, rows))
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key])


def test_two_channels_train_one_step_and_concatenate():
    cfg = config(TWO_CHANNEL_MODEL, TWO_CHANNEL_FEATURES)
    assert check_support(cfg) == []
    validate_config(cfg)  # TorchEasyRec's two-channel test config's shape loads
    model = build(cfg)
    assert isinstance(model.transducer, TransducerStack)
    assert model.transducer.output_dim() == 16 + 8
    assert model.item_mlp[-1].normalized_shape == (24,)
    rows = two_channel_table(8, 0)
    total, (losses, predictions, _) = TrainWrapper(model)(batch(model, rows))
    total.backward()
    assert predictions["probs_next"].shape == (8,)
    for transducer in model.transducer.transducers:
        grad = transducer.stu.layers[-1]._uvqk_weight.grad  # after the truncation
        assert grad is not None and grad.abs().sum() > 0
        assert transducer.contextual is not None  # the contextual group is shared


def test_each_channel_reads_its_own_history():
    model = build(config(TWO_CHANNEL_MODEL, TWO_CHANNEL_FEATURES)).eval()
    rows = two_channel_table(4, 1)
    views = rows.column("view_seq__video_id").to_pylist()
    changed = rows.set_column(
        rows.column_names.index("view_seq__video_id"),
        "view_seq__video_id",
        pa.array(["|".join(["7"] * len(v.split("|"))) for v in views]),
    )
    click, view = model.transducer.transducers
    with torch.no_grad():
        a, b = model.build_input(batch(model, rows)), model.build_input(batch(model, changed))
        torch.testing.assert_close(click(a)[0], click(b)[0])
        assert not torch.allclose(view(a)[0], view(b)[0])


def test_export_reproduces_the_eager_scores():
    model = build(config(TWO_CHANNEL_MODEL, TWO_CHANNEL_FEATURES))
    assert_scripted_matches_eager(model, two_channel_table(6, 2))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (
            "attn_truncation_tail_len: 4",
            "attn_truncation_tail_len: 0",
            "ultra_hstu.hstu[0].attn_truncation_split_layer",
        ),
        (
            "attn_truncation_split_layer: 2",
            "attn_truncation_split_layer: 0",
            "ultra_hstu.hstu[0].attn_truncation_tail_len",
        ),
        (
            "attn_truncation_split_layer: 2",
            "attn_truncation_split_layer: 3",
            "ultra_hstu.hstu[0].attn_truncation_split_layer",
        ),
        ('\n      name: "uih_view"', '\n      name: "uih_click"', "ultra_hstu.hstu[1].name"),
        ('\n      name: "uih_view"', "", "ultra_hstu.hstu[1].name"),
        ('group_name: "uih_view"', 'group_name: "views"', "ultra_hstu.hstu[1].name"),
        ('group_name: "uih_view_timestamp"', 'group_name: "t"', "hstu[1].positional_encoder"),
    ],
)
def test_bad_config_is_an_error_at_its_field(old, new, field):
    assert old in TWO_CHANNEL_MODEL
    with pytest.raises(ConfigError) as info:
        build(config(TWO_CHANNEL_MODEL.replace(old, new, 1), TWO_CHANNEL_FEATURES))
    assert field in str(info.value)


def test_cutlass_runs_the_pytorch_attention_and_keeps_its_constraint(caplog):
    text = TWO_CHANNEL_MODEL.replace("kernel: PYTORCH", "kernel: CUTLASS")
    validate_config(config(text, TWO_CHANNEL_FEATURES))
    with caplog.at_level("WARNING", logger="recforge.modules.gr.kernel"):
        assert isinstance(build(config(text, TWO_CHANNEL_FEATURES)), UltraHSTU)
    assert "kernel: CUTLASS runs recforge's PyTorch HSTU attention" in caplog.text
    # TorchEasyRec's CUTLASS constraint applies wherever the config runs
    with pytest.raises(ConfigError, match="attention_dim == stu.hidden_dim"):
        build(config(text.replace("attention_dim: 4", "attention_dim: 2"), TWO_CHANNEL_FEATURES))


def test_dlrm_hstu_takes_the_long_sequence_settings_too():
    settings = "attn_num_layers: 2 attn_truncation_split_layer: 1 attn_truncation_tail_len: 3"
    text = MODEL.replace("attn_num_layers: 2", settings).replace(
        "output_dropout_ratio: 0.0", "output_dropout_ratio: 0.0 sla_k1: 2 sla_k2: 1"
    )
    model = build(config(text, FEATURES)).eval()
    plain = build(config(MODEL, FEATURES)).eval()
    plain.load_state_dict(model.state_dict())
    layer = model.transducer.stu.layers[0]
    assert (layer._sla_k1, layer._sla_k2, model.transducer.stu._tail_len) == (2, 1, 3)
    rows = planted_rank_table(4, 5)
    with torch.no_grad():
        short = model.predict(batch(model, rows))["logits_next"]
        full = plain.predict(batch(plain, rows))["logits_next"]
    assert short.shape == full.shape and not torch.allclose(short, full)
    alone = MODEL.replace("attn_num_layers: 2", "attn_num_layers: 2 attn_truncation_tail_len: 3")
    with pytest.raises(ConfigError, match="attn_truncation_split_layer and attn_truncation_tail"):
        build(config(alone, FEATURES))
