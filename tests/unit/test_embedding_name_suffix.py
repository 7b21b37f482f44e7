"""``embedding_name_suffix`` of feature groups: own tables per suffix (TorchEasyRec's field)."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import value_checks
from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError, suffixed_table_name
from recforge.predictor import load_predictor
from recforge.protos import model_pb2, pipeline_pb2, train_pb2
from recforge.utils import dist as dist_util
from recforge.utils.pipeline import build_features
from recforge.utils.sharding import shard_model, user_table_constraints
from tests.helpers.match_configs import MATCH_MODEL_CONFIGS
from tests.helpers.models import FEATURES as MODEL_FEATURES
from tests.helpers.models import make_batch
from tests.helpers.untrained_export import assert_served_as_trained, export_untrained, mock_rows

FEATURES = """
feature_configs { id_feature { feature_name: "cat_a" num_buckets: 10 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "cat_b" num_buckets: 6 embedding_dim: 2 } }
feature_configs {
  id_feature { feature_name: "item" num_buckets: 10 embedding_dim: 4 embedding_name: "item_emb" }
}
feature_configs {
  id_feature {
    feature_name: "item_x" num_buckets: 10 embedding_dim: 4 embedding_name: "item_emb_x"
  }
}
feature_configs {
  sequence_feature {
    sequence_name: "click_seq" sequence_length: 3 sequence_delim: ";"
    features { id_feature {
      feature_name: "item" num_buckets: 10 embedding_dim: 4 embedding_name: "item_emb" } }
  }
}
feature_configs {
  sequence_feature {
    sequence_name: "buy_seq" sequence_length: 3 sequence_delim: ";"
    features { id_feature {
      feature_name: "item" num_buckets: 10 embedding_dim: 4 embedding_name: "item_emb" } }
  }
}
"""

ROWS = pa.record_batch(
    {
        "cat_a": pa.array([1, 2, 3]),
        "cat_b": pa.array([0, 5, 4]),
        "item": pa.array([5, 6, 7]),
        "item_x": pa.array([1, 1, 2]),
        "click_seq__item": pa.array(["5;9;7", "", "1"]),
        "buy_seq__item": pa.array(["2", "3;4", None]),
    }
)


def features():
    config = text_format.Parse(FEATURES, pipeline_pb2.EasyRecConfig())
    return create_features(config.feature_configs, fg_mode=FG_DAG)


def group(text: str) -> model_pb2.FeatureGroupConfig:
    return text_format.Parse(text, model_pb2.FeatureGroupConfig())


def tower(name: str, suffix: str = "", kind: str = "DEEP") -> model_pb2.FeatureGroupConfig:
    text = f'group_name: "{name}" feature_names: ["cat_a", "cat_b"] group_type: {kind}'
    return group(text + (f' embedding_name_suffix: "{suffix}"' if suffix else ""))


def batch_of(feature_list):
    parser = DataParser(feature_list)
    return parser.to_batch(parser.parse(ROWS))


def pooled_tables(eg: EmbeddingGroup) -> dict:
    assert eg.ebc is not None
    return {c.name: sorted(c.feature_names) for c in eg.ebc.embedding_bag_configs()}


def sequence_tables(eg: EmbeddingGroup) -> dict:
    configs = [c for ec in eg.sequence_ecs.values() for c in ec.embedding_configs()]
    return {c.name: sorted(c.feature_names) for c in configs}


def n_params(eg: EmbeddingGroup) -> int:
    return sum(p.numel() for p in eg.parameters())


def test_the_composed_names_are_torcheasyrecs():
    assert suffixed_table_name("cat_emb") == "cat_emb"
    assert suffixed_table_name("cat_emb", "a") == "cat_emb_a"
    assert suffixed_table_name("cat_emb", "a", wide=True) == "cat_emb_wide_a"


def test_different_suffixes_give_each_group_its_own_tables():
    plain = EmbeddingGroup(features(), [tower("tower_a"), tower("tower_b")])
    assert pooled_tables(plain) == {"cat_a_emb": ["cat_a"], "cat_b_emb": ["cat_b"]}
    split = EmbeddingGroup(features(), [tower("tower_a", "tower_a"), tower("tower_b", "tower_b")])
    assert pooled_tables(split) == {
        "cat_a_emb_tower_a": ["cat_a"],
        "cat_b_emb_tower_a": ["cat_b"],
        "cat_a_emb_tower_b": ["cat_a"],
        "cat_b_emb_tower_b": ["cat_b"],
    }
    assert n_params(plain) == 10 * 4 + 6 * 2
    assert n_params(split) == 2 * n_params(plain)
    assert split.group_dims("tower_a") == split.group_dims("tower_b") == [4, 2]


def test_a_gradient_step_on_one_suffixed_group_leaves_the_other_unchanged():
    torch.manual_seed(0)
    eg = EmbeddingGroup(features(), [tower("tower_a", "tower_a"), tower("tower_b", "tower_b")])
    batch = batch_of(features())
    before = eg(batch.sparse_features, batch.dense_features)
    # separately initialised tables: the same ids embed differently in the two groups
    assert not torch.equal(before["tower_a"], before["tower_b"])
    optimizer = torch.optim.SGD(eg.parameters(), lr=1.0)
    before["tower_a"].pow(2).sum().backward()
    optimizer.step()
    after = eg(batch.sparse_features, batch.dense_features)
    torch.testing.assert_close(after["tower_b"], before["tower_b"].detach(), atol=0, rtol=0)
    assert not torch.allclose(after["tower_a"], before["tower_a"].detach())


def test_the_same_suffix_shares_the_tables():
    eg = EmbeddingGroup(features(), [tower("a", "shared"), tower("b", "shared")])
    assert pooled_tables(eg) == {"cat_a_emb_shared": ["cat_a"], "cat_b_emb_shared": ["cat_b"]}
    batch = batch_of(features())
    out = eg(batch.sparse_features, batch.dense_features)
    torch.testing.assert_close(out["a"], out["b"], atol=0, rtol=0)


def test_wide_groups_name_their_tables_wide_then_suffix():
    eg = EmbeddingGroup(features(), [tower("w", "s", kind="WIDE"), tower("v", kind="WIDE")])
    assert set(pooled_tables(eg)) == {
        "cat_a_emb_wide_s",
        "cat_b_emb_wide_s",
        "cat_a_emb_wide",
        "cat_b_emb_wide",
    }
    assert eg.table_bases["cat_a_emb_wide_s"] == "cat_a_emb"


NESTED = """
group_name: "deep" feature_names: ["item", "cat_b"] group_type: DEEP
embedding_name_suffix: "tower_a"
sequence_groups {
  group_name: "click_seq" feature_names: ["item", "click_seq__item"]
  embedding_name_suffix: "click_only"
}
sequence_groups { group_name: "buy_seq" feature_names: ["item", "buy_seq__item"] }
sequence_encoders { simple_attention { input: "click_seq" } }
sequence_encoders { simple_attention { input: "buy_seq" } }
"""


def test_nested_sequence_groups_inherit_or_override_the_suffix():
    torch.manual_seed(0)
    eg = EmbeddingGroup(features(), [group(NESTED)])
    # buy_seq inherits tower_a: its table is also the DEEP group's pooled "item" table (kept
    # once, in the sequence collection); click_seq's own suffix gives it a table of its own
    assert sequence_tables(eg) == {
        "item_emb_tower_a": ["buy_seq__item", "item"],
        "item_emb_click_only": ["click_seq__item", "item"],
    }
    assert pooled_tables(eg) == {"cat_b_emb_tower_a": ["cat_b"]}
    assert eg.group_dims("deep") == [4, 2, 4, 4]
    batch = batch_of(features())
    out = eg(batch.sparse_features, batch.dense_features)["deep"]
    weights = eg._table_weights()
    # the pooled "item" column is row `item` of the inherited table, not the click_only one
    torch.testing.assert_close(out[:, :4], weights["item_emb_tower_a"][[5, 6, 7]])
    assert not torch.allclose(out[:, :4], weights["item_emb_click_only"][[5, 6, 7]])


def test_a_table_reached_with_different_suffixes_is_refused_naming_the_groups():
    # "item" with suffix "x" composes item_emb_x, the name feature item_x gives its table
    groups = [
        group('group_name: "a" feature_names: ["item"] embedding_name_suffix: "x"'),
        group('group_name: "b" feature_names: ["item_x"]'),
    ]
    with pytest.raises(EmbeddingGroupError, match=r"'item_emb_x'.*'a'.*suffix 'x'.*'b'.*no suffix"):
        EmbeddingGroup(features(), groups)
    # the same two groups, "b" with suffix "x" too: item_x's table is item_emb_x_x
    groups[1].embedding_name_suffix = "x"
    eg = EmbeddingGroup(features(), groups)
    assert set(pooled_tables(eg)) == {"item_emb_x", "item_emb_x_x"}


def test_a_nested_group_with_a_clashing_suffix_is_refused_too():
    nested = group(NESTED.replace('embedding_name_suffix: "click_only"', ""))
    other = group('group_name: "other" feature_names: ["item_x"] embedding_name_suffix: "y"')
    nested.embedding_name_suffix = "x"  # item_emb -> item_emb_x, item_x -> item_emb_x_y
    EmbeddingGroup(features(), [nested, other])
    other.ClearField("embedding_name_suffix")  # item_x -> item_emb_x: clashes
    with pytest.raises(EmbeddingGroupError, match="'deep.click_seq'|'deep'"):
        EmbeddingGroup(features(), [nested, other])


# ------------------------------------------------------------------ models
DSSM_SUFFIXED = (
    MATCH_MODEL_CONFIGS["DSSMV2"]
    .replace(
        'feature_groups { group_name: "user" feature_names: ["user", "price"] }',
        'feature_groups { group_name: "user" feature_names: ["user", "item", "price"]'
        ' embedding_name_suffix: "u" }',
    )
    .replace(
        'feature_groups { group_name: "item" feature_names: ["item", "tags"] }',
        'feature_groups { group_name: "item" feature_names: ["item", "user", "tags"]'
        ' embedding_name_suffix: "i" }',
    )
)


def test_dssm_towers_with_suffixes_export_towers_that_embed_like_the_model():
    assert 'embedding_name_suffix: "u"' in DSSM_SUFFIXED
    config = text_format.Parse(
        MODEL_FEATURES + "model_config {" + DSSM_SUFFIXED + "}", pipeline_pb2.EasyRecConfig()
    )
    torch.manual_seed(0)
    model = BaseModel.create_class("DSSMV2")(
        config.model_config, create_features(config.feature_configs), []
    )
    tables = {name.split(".")[-2] for name, _ in model.named_parameters() if ".weight" in name}
    assert {"user_emb_u", "item_emb_u", "item_emb_i", "user_emb_i", "tags_emb_i"} <= tables
    # tags is trainable: false; its suffixed table stays frozen
    trainable, frozen = model.sparse_parameters()
    assert [p.shape for p in frozen] == [torch.Size([20, 8])]
    batch = make_batch(6)
    model.eval()
    with torch.no_grad():
        predictions = model.predict(batch)
        for side in ("user", "item"):
            got = model.tower_module(side)(batch)
            want = torch.nn.functional.normalize(predictions[f"{side}_emb"], dim=-1)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


RANK_CONFIG = """
data_config { fg_mode: FG_DAG label_fields: "clk" batch_size: 8 }
feature_configs { id_feature { feature_name: "uid" expression: "user:uid" num_buckets: 10
  embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "iid" expression: "item:iid" num_buckets: 10
  embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "a" feature_names: ["uid", "iid"] embedding_name_suffix: "a" }
  feature_groups { group_name: "b" feature_names: ["uid", "iid"] embedding_name_suffix: "b" }
  feature_groups { group_name: "w" feature_names: ["uid"] group_type: WIDE
    embedding_name_suffix: "a" }
  multi_tower {
    towers { input: "a" mlp { hidden_units: [4] } }
    towers { input: "b" mlp { hidden_units: [4] } }
    towers { input: "w" mlp { hidden_units: [4] } }
    final { hidden_units: [2] }
  }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""


def test_the_exported_predictor_reproduces_the_eager_scores(tmp_path):
    config = text_format.Parse(RANK_CONFIG, pipeline_pb2.EasyRecConfig())
    rows = mock_rows(config, tmp_path, num_rows=16, seed=3)
    model, export_dir = export_untrained(config, tmp_path)
    assert set(model.embedding_group.table_bases) == {
        "uid_emb_a",
        "iid_emb_a",
        "uid_emb_b",
        "iid_emb_b",
        "uid_emb_wide_a",
    }
    train = DataParser(build_features(config)).parse(rows)
    assert_served_as_trained(model, load_predictor(export_dir), train, rows)


def test_the_config_memory_check_counts_each_suffixed_copy(monkeypatch):
    config = text_format.Parse(RANK_CONFIG, pipeline_pb2.EasyRecConfig())
    one_table = 10 * 4 * 4  # rows x dim x fp32 bytes
    # uid and iid, each in a and b: four tables, twice what the features alone would need
    monkeypatch.setattr(value_checks, "machine_memory", lambda: 3 * one_table)
    found: list = []
    value_checks._check_table_memory(config, lambda fld, msg: found.append((fld, msg)))
    assert len(found) == 1 and "all tables together need 640.0 B" in found[0][1]
    for group in config.model_config.feature_groups:
        group.ClearField("embedding_name_suffix")
    found.clear()
    value_checks._check_table_memory(config, lambda fld, msg: found.append((fld, msg)))
    assert found == []


def test_a_sequence_group_with_a_suffix_keeps_apart_from_the_deep_groups_table():
    seq = 'group_name: "seq" feature_names: ["item", "click_seq__item"] group_type: SEQUENCE'
    deep = group('group_name: "deep" feature_names: ["item"]')
    shared = EmbeddingGroup(features(), [deep, group(seq)])
    assert sequence_tables(shared) == {"item_emb": ["click_seq__item", "item"]}
    apart = EmbeddingGroup(features(), [deep, group(seq + ' embedding_name_suffix: "s"')])
    assert sequence_tables(apart) == {"item_emb_s": ["click_seq__item", "item"]}
    assert pooled_tables(apart) == {"item_emb": ["item"]}
    batch = batch_of(features())
    out = apart(batch.sparse_features, batch.dense_features)
    weights = apart._table_weights()
    torch.testing.assert_close(out["deep"], weights["item_emb"][[5, 6, 7]])
    torch.testing.assert_close(out["seq.query"], weights["item_emb_s"][[5, 6, 7]])


def test_a_features_sharding_constraints_apply_to_its_suffixed_tables():
    dist_util.init_process_group()
    config = text_format.Parse(RANK_CONFIG, pipeline_pb2.EasyRecConfig())
    uid = config.feature_configs[0].id_feature
    text_format.Parse('sharding_types: "column_wise"', uid.embedding_constraints)
    # iid's tables follow the global constraint, so the two features' layouts differ
    train = text_format.Parse(
        "sparse_optimizer { adagrad_optimizer { lr: 0.1 } }"
        " dense_optimizer { adam_optimizer { lr: 0.01 } }"
        ' global_embedding_constraints { sharding_types: "table_wise" }',
        train_pb2.TrainConfig(),
    )
    features = create_features(config.feature_configs, fg_mode=FG_DAG)
    model = BaseModel.create_class("MultiTower")(
        config.model_config, features, ["clk"], embedding_device=torch.device("meta")
    )
    constraints = user_table_constraints(features, train)
    sharded = shard_model(TrainWrapper(model), torch.device("cpu"), train, None, constraints)
    plan = {
        table: ps.sharding_type
        for module_plan in sharded.model.plan.plan.values()
        for table, ps in module_plan.items()
    }
    assert plan["uid_emb_a"] == plan["uid_emb_b"] == plan["uid_emb_wide_a"] == "column_wise"
    assert plan["iid_emb_a"] == plan["iid_emb_b"] == "table_wise"
