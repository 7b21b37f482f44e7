"""dlrm_hstu: registry, shapes, candidate causality, order, export, content encoders, errors."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.config.support import check_support
from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, create_features
from recforge.models.dlrm_hstu import DlrmHSTU
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.gr.hstu_transducer import HSTUTransducer, SequenceInput
from recforge.modules.gr.targets import append_rows, shift_rows
from recforge.protos import module_pb2, pipeline_pb2
from tests.helpers.dlrm_hstu import FEATURES, MODEL, planted_rank_table
from tests.helpers.scripted import assert_scripted_matches_eager

LABELS = ["label_next", "label_hot"]


def config(model: str = MODEL, features: str = FEATURES) -> pipeline_pb2.EasyRecConfig:
    text = f"data_config {{ label_fields: {LABELS} fg_mode: FG_DAG }} {features} {model}"
    return text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())


def build(cfg: pipeline_pb2.EasyRecConfig) -> DlrmHSTU:
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    return BaseModel.create_class("DlrmHSTU")(cfg.model_config, features, LABELS)


def batch(model: DlrmHSTU, rows: pa.Table):
    return DataParser(model.features, LABELS).parse_batch(rows.to_batches()[0])


def test_registered_trains_one_step_and_scores_each_row():
    model = build(config())
    assert isinstance(model, DlrmHSTU)
    total, (losses, predictions, _) = TrainWrapper(model)(batch(model, planted_rank_table(8, 0)))
    total.backward()
    assert set(losses) == {"binary_cross_entropy_next", "binary_cross_entropy_hot"}
    assert predictions["probs_next"].shape == predictions["probs_hot"].shape == (8,)
    stu = model.transducer.stu.layers[0]
    assert stu._uvqk_weight.grad is not None and stu._uvqk_weight.grad.abs().sum() > 0


def test_the_scores_follow_the_order_of_the_history():
    model = build(config()).eval()
    rows = planted_rank_table(4, 3)
    reversed_ = rows.set_column(
        0, "uih__video_id", pa.array(["|".join(s.split("|")[::-1]) for s in rows[0].to_pylist()])
    )
    with torch.no_grad():
        a = model.predict(batch(model, rows))["logits_next"]
        b = model.predict(batch(model, reversed_))["logits_next"]
    assert not torch.allclose(a, b, atol=1e-4)


HSTU = """
stu { embedding_dim: 8 num_heads: 2 hidden_dim: 4 attention_dim: 4 output_dropout_ratio: 0.0 }
input_dropout_ratio: 0.0 attn_num_layers: 2
positional_encoder { num_position_buckets: 16 num_time_buckets: 16 use_time_encoding: true }
input_preprocessor { contextual_preprocessor {
  content_encoder { %s } content_mlp { simple_mlp { hidden_dim: 8 } } } }
output_postprocessor { l2norm_postprocessor { } }
"""


def transducer(content: str = "slice_content_encoder { }", cand_dim: int = 6) -> HSTUTransducer:
    torch.manual_seed(0)
    hstu = text_format.Parse(HSTU % content, module_pb2.HSTU())
    return HSTUTransducer(
        hstu,
        SequenceInput("uih", True),
        4,
        SequenceInput("candidate", True),
        cand_dim,
        16,
        SequenceInput("uih_timestamp", True),
        SequenceInput("candidate_timestamp", True),
        "contextual",
        [3, 3],
    ).eval()


def grouped(cand: torch.Tensor, uih: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two users: 3 and 2 events; 2 and 3 candidates."""
    return {
        "uih.sequence": uih,
        "uih.sequence_length": torch.tensor([3, 2]),
        "uih_timestamp.sequence": torch.tensor([[10.0], [70.0], [200.0], [5.0], [900.0]]),
        "candidate.sequence": cand,
        "candidate.sequence_length": torch.tensor([2, 3]),
        "candidate_timestamp.sequence": torch.full((5, 1), 1000.0),
        "contextual": torch.randn(2, 6, generator=torch.Generator().manual_seed(1)),
    }


def test_a_candidate_does_not_see_the_other_candidates():
    module = transducer()
    uih = torch.randn(5, 4)
    cand = torch.randn(5, 6)
    with torch.no_grad():
        out, num_targets = module(grouped(cand, uih))
        other = cand.clone()
        other[[1, 3]] = torch.randn(2, 6)  # user 0's second, user 1's first candidate
        changed, _ = module(grouped(other, uih))
        history = uih.clone()
        history[0] = torch.randn(4)
        moved, _ = module(grouped(cand, history))
    assert out.shape == (5, 8) and num_targets.tolist() == [2, 3]
    keep = [0, 2, 4]
    torch.testing.assert_close(changed[keep], out[keep])
    assert not torch.allclose(changed[[1, 3]], out[[1, 3]])
    assert not torch.allclose(moved[:2], out[:2], atol=1e-5)  # user 0 saw the history change
    torch.testing.assert_close(moved[2:], out[2:])  # user 1 did not


@pytest.mark.parametrize(
    ("content", "cand_dim"),
    [
        ("pad_content_encoder { }", 6),
        (
            "mlp_content_encoder { uih_mlp { hidden_units: [5] }"
            " target_mlp { hidden_units: [5] } }",
            7,
        ),
    ],
)
def test_content_encoders(content, cand_dim):
    module = transducer(content, cand_dim)
    out, _ = module(grouped(torch.randn(5, cand_dim), torch.randn(5, 4)))
    assert out.shape == (5, 8) and torch.isfinite(out).all()


def test_append_and_shift_rows():
    values = torch.tensor([[1.0], [2.0], [3.0]])
    out, offsets, index = append_rows(
        values, torch.tensor([0, 2, 3]), torch.tensor([[8.0], [9.0]]), torch.tensor([0, 1, 2])
    )
    assert out.reshape(-1).tolist() == [1.0, 2.0, 8.0, 3.0, 9.0]
    assert offsets.tolist() == [0, 3, 5] and index.tolist() == [2, 4]
    assert shift_rows(index, torch.tensor([0, 1, 2]), 2).tolist() == [4, 8]


def test_export_reproduces_the_eager_scores():
    assert_scripted_matches_eager(build(config()), planted_rank_table(6, 2))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (
            'task_name: "hot" label_name: "label_hot"',
            'task_name: "hot" label_name: "label_hot" task_bitmask: 0',
            "fusion_mtl_tower.task_configs[1].task_bitmask",
        ),
        ('label_name: "label_hot"', 'label_name: "nope"', "task_configs[1].label_name"),
        ("slice_content_encoder", "pad_content_encoder", "dlrm_hstu.hstu"),
        ("max_seq_len: 14", "max_seq_len: 0", "dlrm_hstu.max_seq_len"),
        (
            "content_encoder {",
            "action_encoder { simple_action_encoder { action_embedding_dim: 4 } }"
            " content_encoder {",
            "contextual_preprocessor.action_encoder",
        ),
        ('group_name: "candidate_timestamp"', 'group_name: "ts"', "hstu.positional_encoder"),
    ],
)
def test_bad_config_is_an_error_at_its_field(old, new, field):
    assert old in MODEL
    with pytest.raises(ConfigError, match="") as info:
        build(config(MODEL.replace(old, new, 1)))
    assert field in str(info.value)


def test_the_history_only_preprocessor_is_refused():
    cfg = config()
    cfg.model_config.dlrm_hstu.hstu.input_preprocessor.uih_preprocessor.SetInParent()
    with pytest.raises(ConfigError, match="contextual_preprocessor") as info:
        build(cfg)
    assert "dlrm_hstu.hstu.input_preprocessor" in str(info.value)


def test_a_fusion_task_s_train_metrics_are_built_for_that_task():
    text = MODEL.replace(
        'label_name: "label_next"', 'label_name: "label_next" train_metrics { auc { } }', 1
    )
    assert not [p for p, _ in check_support(config(text)) if "train_metrics" in p]
    assert set(build(config(text))._train_metric_modules) == {"auc_next"}


def test_a_task_without_losses_takes_the_model_losses():
    cfg = config()
    cfg.model_config.dlrm_hstu.fusion_mtl_tower.task_configs[1].ClearField("losses")
    assert set(build(cfg)._loss_modules) == {
        "binary_cross_entropy_next",
        "binary_cross_entropy_hot",
    }
    cfg.model_config.losses.add().binary_focal_loss.SetInParent()
    assert set(build(cfg)._loss_modules) == {"binary_cross_entropy_next", "binary_focal_loss_hot"}
