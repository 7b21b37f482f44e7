"""hstu_match: registry, towers, predict/loss, kernel selection and config errors."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.datasets.data_parser import DataParser
from recforge.errors import DataError
from recforge.features import FG_DAG, create_features
from recforge.models.hstu_match import HSTUMatch
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.gr import kernel
from recforge.protos import pipeline_pb2
from tests.helpers.hstu import FEATURES, MODEL, planted_table


def config(model: str = MODEL, features: str = FEATURES) -> pipeline_pb2.EasyRecConfig:
    text = f'data_config {{ label_fields: "label" fg_mode: FG_DAG }} {features} {model}'
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def build(cfg: pipeline_pb2.EasyRecConfig) -> HSTUMatch:
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    return BaseModel.create_class("HSTUMatch")(cfg.model_config, features, ["label"])


def batch(model: HSTUMatch, rows: pa.Table):
    return DataParser(model.features).parse_batch(rows.to_batches()[0])


def test_registered_and_trains_one_step():
    model = build(config())
    assert isinstance(model, HSTUMatch)
    b = batch(model, planted_table(8, 0, min_len=0, max_len=5))
    total, (losses, predictions, _) = TrainWrapper(model)(b)
    total.backward()
    assert predictions["similarity"].shape == (8, 8)  # in-batch negatives
    assert predictions["user_emb"].shape == predictions["item_emb"].shape == (8, 16)
    stu = model.user_tower.encoder.stu.layers[0]
    assert stu._uvqk_weight.grad is not None and stu._uvqk_weight.grad.abs().sum() > 0


def test_the_user_embedding_follows_the_order_of_the_history():
    model = build(config()).eval()
    rows = planted_table(4, 3)
    shuffled = rows.set_column(
        0, "uih__video_id", pa.array(["|".join(s.split("|")[::-1]) for s in rows[0].to_pylist()])
    )
    with torch.no_grad():
        a = model.predict(batch(model, rows))["user_emb"]
        b = model.predict(batch(model, shuffled))["user_emb"]
    assert not torch.allclose(a, b, atol=1e-4)


def test_user_tower_module_equals_the_model():
    model = build(config()).eval()
    b = batch(model, planted_table(5, 1))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.predict(b)["user_emb"], dim=-1)
        tower = model.tower_module("user")(b)
    torch.testing.assert_close(tower, expected)
    assert [f.name for f in model.tower_features("user")] == [
        "uih__video_id",
        "uih__action_timestamp",
    ]


def test_timestamps_must_match_the_events():
    model = build(config()).eval()
    rows = planted_table(2, 0)
    rows = rows.set_column(1, "uih__action_timestamp", pa.array(["1|2", "3"]))
    with pytest.raises(DataError, match="timestamps for the"):
        model.predict(batch(model, rows))


def test_kernel_choice(monkeypatch):
    monkeypatch.setattr(kernel, "_triton_usable", lambda: False)
    cfg = config(MODEL.replace("kernel: PYTORCH", "kernel: TRITON"))
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "kernel: TRITON needs a CUDA GPU and the triton package" in str(err.value)
    with pytest.raises(ConfigError, match="TRITON"):
        build(cfg)
    cutlass = config(MODEL.replace("kernel: PYTORCH", "kernel: CUTLASS"))
    with pytest.raises(ConfigError, match="CUTLASS is not built"):
        validate_config(cutlass)
    # where triton could run, the PyTorch path runs with a warning
    monkeypatch.setattr(kernel, "_triton_usable", lambda: True)
    validate_config(cfg)
    assert isinstance(build(cfg), HSTUMatch)
    validate_config(config())


@pytest.mark.parametrize(
    "old, new, field",
    [
        (
            'group_name: "uih" feature_names: "uih__video_id" group_type: JAGGED_SEQUENCE',
            'group_name: "uih" feature_names: "uih__video_id" group_type: SEQUENCE',
            "hstu_match.user_tower.input",
        ),
        (
            'group_name: "uih_timestamp"',
            'group_name: "ts"',
            "hstu_match.user_tower.hstu.positional_encoder",
        ),
        ("max_seq_len: 24", "max_seq_len: 0", "hstu_match.user_tower.max_seq_len"),
        (
            'item_tower { input: "candidate"',
            'item_tower { input: "nope"',
            "hstu_match.item_tower.input",
        ),
        ("hidden_units: [16]", "hidden_units: [12]", "hstu_match.output_dim"),
    ],
)
def test_bad_config_is_an_error_at_its_field(old, new, field):
    assert old in MODEL
    with pytest.raises(ConfigError) as err:
        build(config(MODEL.replace(old, new)))
    assert err.value.field == f"model_config.{field}"


# TorchEasyRec's hstu example config shape (kuairand): JAGGED_SEQUENCE history, candidate,
# action / watch-time / timestamp groups, a DEEP contextual and query_time group
TZREC_SHAPE = """
data_config { label_fields: ["cand_seq__action_weight"] fg_mode: FG_DAG }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id"
                               embedding_dim: 16 num_buckets: 100 } }
feature_configs { sequence_feature { sequence_name: "uih_seq" sequence_length: 64
  sequence_delim: "|"
  features { id_feature { feature_name: "video_id" expression: "item:video_id"
                          embedding_name: "video_id_emb" embedding_dim: 16 num_buckets: 100 } }
  features { raw_feature { feature_name: "action_timestamp" expression: "user:action_timestamp" } }
  features { raw_feature { feature_name: "action_weight" expression: "user:action_weight" } } } }
feature_configs { sequence_feature { sequence_name: "cand_seq" sequence_length: 8
  sequence_delim: "|"
  features { id_feature { feature_name: "video_id" expression: "item:video_id"
                          embedding_name: "video_id_emb" embedding_dim: 16 num_buckets: 100 } } } }
feature_configs { raw_feature { feature_name: "request_time" expression: "user:request_time" } }
model_config {
  feature_groups { group_name: "contextual" feature_names: "user_id" group_type: DEEP }
  feature_groups { group_name: "uih" feature_names: "uih_seq__video_id"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "candidate" feature_names: "cand_seq__video_id"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "uih_action" feature_names: "uih_seq__action_weight"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "uih_timestamp" feature_names: "uih_seq__action_timestamp"
                   group_type: JAGGED_SEQUENCE }
  feature_groups { group_name: "query_time" feature_names: "request_time" group_type: DEEP }
  hstu_match {
    user_tower {
      input: "uih"
      hstu {
        stu { embedding_dim: 16 num_heads: 2 hidden_dim: 8 attention_dim: 8
              output_dropout_ratio: 0.1 use_group_norm: true }
        input_dropout_ratio: 0.2 attn_num_layers: 2
        positional_encoder { num_position_buckets: 64 num_time_buckets: 32
                             use_time_encoding: true }
        input_preprocessor { uih_preprocessor {
          action_encoder { simple_action_encoder { action_embedding_dim: 8
                                                   action_weights: [1, 2, 4] } }
          action_mlp { simple_mlp { hidden_dim: 16 } } } }
        output_postprocessor { l2norm_postprocessor { } }
      }
      max_seq_len: 64
    }
    item_tower { input: "candidate" mlp { hidden_units: 16 activation: "" } }
    similarity: COSINE temperature: 0.05
  }
  metrics { recall_at_k { top_k: 5 } }
  losses { softmax_cross_entropy { } }
  kernel: PYTORCH
}
"""


def test_torcheasyrec_hstu_config_shape_loads_and_names_what_is_not_built():
    cfg = text_format.Parse(TZREC_SHAPE, pipeline_pb2.EasyRecConfig())
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    fields = sorted(e.field for e in err.value.errors)
    assert fields == [
        "model_config.hstu_match.user_tower.hstu.input_preprocessor.uih_preprocessor"
        ".action_encoder",
        "model_config.hstu_match.user_tower.hstu.input_preprocessor.uih_preprocessor.action_mlp",
    ]
    # without the action encoder (and the contextual group) the same shape builds
    pre = cfg.model_config.hstu_match.user_tower.hstu.input_preprocessor.uih_preprocessor
    pre.Clear()
    groups = cfg.model_config.feature_groups
    del groups[0]
    validate_config(cfg)
    model = build(cfg)
    assert model.embedding_group.is_jagged_group("candidate")
    names = [g.group_name for g in model.tower_groups("user")]
    assert names == ["uih", "uih_timestamp", "query_time"]
    rows = pa.table(
        {
            "user_id": pa.array([1, 2, 3]),
            "uih_seq__video_id": pa.array(["1|2|3", "4", ""]),
            "uih_seq__action_timestamp": pa.array(["10|20|30", "5", ""]),
            "uih_seq__action_weight": pa.array(["1|2|1", "4", ""]),
            "cand_seq__video_id": pa.array(["7", "8", "9"]),
            "request_time": pa.array([40.0, 6.0, 1.0]),
            "cand_seq__action_weight": pa.array([1, 1, 1]),
        }
    )
    b = batch(model, rows)
    with torch.no_grad():
        out = model.predict(b)
    assert out["similarity"].shape == (3, 1) and torch.isfinite(out["similarity"]).all()
