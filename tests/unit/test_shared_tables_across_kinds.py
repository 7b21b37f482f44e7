"""One table per embedding_name across pooled (DEEP) and sequence groups."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.errors import CheckpointError
from recforge.export.scripting import script_model
from recforge.features import FG_DAG, create_features, create_pipeline_features
from recforge.models.model import BaseModel
from recforge.modules import embedding as embedding_module
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.protos import model_pb2, pipeline_pb2
from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers.export_util import make_table
from tests.helpers.models import make_config
from tests.helpers.sequence_fallback import DIN_BODY

FEATURES = """
feature_configs { id_feature {
  feature_name: "item_id" num_buckets: 20 embedding_dim: 4 embedding_name: "item_emb"
  pooling: "POOLING" } }
feature_configs { id_feature { feature_name: "user" num_buckets: 10 embedding_dim: 4 } }
feature_configs {
  sequence_feature {
    sequence_name: "click" sequence_length: 4 sequence_delim: ";"
    features { id_feature {
      feature_name: "item_id" num_buckets: 20 embedding_dim: 4 embedding_name: "item_emb"
      pooling: "POOLING" } }
    features { id_feature { feature_name: "cate" num_buckets: 5 embedding_dim: 2 } }
  }
}
"""

ROWS = pa.record_batch(
    {
        "item_id": pa.array([5, 6, 7]),
        "user": pa.array([0, 1, 2]),
        # row 1 is empty and row 2 null: their pooled sequences are zeros
        "click__item_id": pa.array(["5;9;7;5", "", None]),
        "click__cate": pa.array(["1;3;3;4", "", None]),
    }
)


def features(pooling: str = "sum", extra: str = ""):
    text = FEATURES.replace("POOLING", pooling) + extra
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    return create_features(config.feature_configs, fg_mode=FG_DAG)


def group(name: str, *names: str, kind: int = model_pb2.DEEP) -> model_pb2.FeatureGroupConfig:
    return model_pb2.FeatureGroupConfig(group_name=name, feature_names=list(names), group_type=kind)


# the same feature in both groups (multi_tower_din_taobao's adgroup_id) and a sequence pooled
# in the DEEP group under the name its sequence group also reads
DEEP = group("deep", "user", "item_id", "click__item_id")
SEQ = group("seq", "item_id", "click__item_id", "click__cate", kind=model_pb2.SEQUENCE)


def batch_of(feature_list):
    parser = DataParser(feature_list)
    return parser.to_batch(parser.parse(ROWS))


def test_a_name_read_pooled_and_unpooled_is_one_table():
    shared = EmbeddingGroup(features(), [DEEP, SEQ])
    params = [name for name, _ in shared.named_parameters() if ".item_emb." in name]
    assert params == ["sequence_ecs.dim_4.embeddings.item_emb.weight"]
    assert shared.ebc is not None
    assert [c.name for c in shared.ebc.embedding_bag_configs()] == ["user_emb"]
    configs = [c for ec in shared.sequence_ecs.values() for c in ec.embedding_configs()]
    item = [c for c in configs if c.name == "item_emb"]
    assert len(item) == 1 and sorted(item[0].feature_names) == ["click__item_id", "item_id"]
    assert shared.group_dims("deep") == [4, 4, 4]


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_deep_output_and_gradients_equal_the_embedding_bag_path(pooling):
    feature_list = features(pooling)
    shared = EmbeddingGroup(feature_list, [DEEP, SEQ])
    pooled = EmbeddingGroup(feature_list, [DEEP])  # no sequence group: the EBC path
    assert pooled.ebc is not None and "item_emb" in pooled.ebc.embedding_bags
    pooled.copy_weights_from(shared)
    batch = batch_of(feature_list)
    out = {}
    for kind, module in (("shared", shared), ("pooled", pooled)):
        out[kind] = module(batch.sparse_features, batch.dense_features)["deep"]
        torch.manual_seed(0)
        (out[kind] * torch.randn(out[kind].shape)).sum().backward()
    assert out["shared"].shape == (3, 12)
    torch.testing.assert_close(out["shared"], out["pooled"], atol=1e-6, rtol=0)
    assert out["shared"][1:, 8:].abs().sum() == 0  # empty and null rows pool to zeros
    shared_tables = shared._table_weights()
    for name, weight in pooled._table_weights().items():
        assert weight.grad is not None and shared_tables[name].grad is not None
        torch.testing.assert_close(shared_tables[name].grad, weight.grad, atol=1e-6, rtol=0)


def test_gradients_of_both_uses_land_in_the_one_table():
    feature_list = features()
    shared = EmbeddingGroup(
        feature_list,
        [group("deep", "item_id"), group("seq", "click__item_id", kind=model_pb2.SEQUENCE)],
    )
    batch = batch_of(feature_list)
    out = shared(batch.sparse_features, batch.dense_features)
    (out["deep"].sum() + out["seq.sequence"].sum()).backward()
    (table,) = [p for n, p in shared.named_parameters() if ".item_emb." in n]
    used = table.grad.abs().sum(dim=1) > 0  # type: ignore[union-attr]
    # row 6 only the DEEP group reads, rows 9 only the sequence, 5 and 7 both
    assert used.nonzero().flatten().tolist() == [5, 6, 7, 9]
    assert table.grad[5].tolist() == [3.0] * 4  # type: ignore[index]


def test_a_weighted_feature_cannot_share_a_sequence_table():
    extra = """
    feature_configs { id_feature {
      feature_name: "tags" num_buckets: 20 embedding_dim: 4 embedding_name: "item_emb"
      weighted: true } }
    """
    with pytest.raises(EmbeddingGroupError, match=r"'tags' shares table 'item_emb'.*'item_id'"):
        EmbeddingGroup(features(extra=extra), [group("deep", "tags"), SEQ])


def test_a_shape_mismatch_names_both_features_and_the_table():
    extra = """
    feature_configs { id_feature {
      feature_name: "other" num_buckets: 30 embedding_dim: 4 embedding_name: "item_emb" } }
    """
    with pytest.raises(EmbeddingGroupError, match=r"'other'.*'item_id'.*table 'item_emb'.*30 x 4"):
        EmbeddingGroup(features(extra=extra), [group("deep", "other"), SEQ])


def test_a_tower_without_the_sequence_group_copies_the_shared_table():
    feature_list = features()
    shared = EmbeddingGroup(feature_list, [DEEP, SEQ])
    tower = EmbeddingGroup(feature_list, [DEEP])
    tower.copy_weights_from(shared)
    assert tower.ebc is not None
    assert torch.equal(
        tower.ebc.embedding_bags["item_emb"].weight,
        shared.sequence_ecs["dim_4"].embeddings["item_emb"].weight,
    )


def test_a_model_with_a_shared_table_exports():
    config = make_config("MultiTowerDIN", DIN_BODY)
    model = BaseModel.create_class("MultiTowerDIN")(
        config.model_config, create_pipeline_features(config), ["label"]
    ).eval()
    assert model.embedding_group.ebc is not None
    assert "item_emb" not in model.embedding_group.ebc.embedding_bags
    parser = DataParser(model.features)
    parsed = parser.parse(make_table(7, labels=()).to_batches()[0])
    scripted = script_model(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(parsed), model.predict(parser.to_batch(parsed)))


def test_a_checkpoint_with_two_tables_of_one_name_is_refused(tmp_path, monkeypatch):
    feature_list = features()
    with monkeypatch.context() as patch:
        # the layout before tables were shared: one pooled and one unpooled item_emb
        patch.setattr(embedding_module, "_move_shared_tables", lambda *args: [])
        split = EmbeddingGroup(feature_list, [DEEP, SEQ])
    assert split.ebc is not None and "item_emb" in split.ebc.embedding_bags
    path = save_checkpoint(str(tmp_path), 1, split, None, {"global_step": 1})
    with pytest.raises(CheckpointError, match=r"unexpected key.*ebc\.embedding_bags\.item_emb"):
        load_checkpoint(path, EmbeddingGroup(feature_list, [DEEP, SEQ]))


def test_the_embedding_l2_penalty_covers_the_shared_lookups_as_before():
    feature_list = features("mean")
    shared = EmbeddingGroup(feature_list, [DEEP, SEQ], embedding_l2=0.5).train()
    pooled = EmbeddingGroup(feature_list, [DEEP], embedding_l2=0.5).train()
    pooled.copy_weights_from(shared)
    batch = batch_of(feature_list)
    penalties = []
    for module in (shared, pooled):
        module(batch.sparse_features, batch.dense_features)
        penalties.append(module.embedding_regularization_loss())
    assert penalties[0] is not None and penalties[1] is not None and penalties[0] > 0
    torch.testing.assert_close(penalties[0], penalties[1])
