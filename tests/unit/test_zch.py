"""Zero-collision hashing: the remapper's rows, eviction rules, state, export and config checks."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config.errors import ConfigError
from recforge.config.validation import validate_config
from recforge.datasets.data_parser import DataParser
from recforge.export import export_model
from recforge.features.hashing import std_hash
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.modules.zch import ZCH_HASH_SIZE, ZchRemapper, parse_threshold_filter
from recforge.predictor import Predictor
from recforge.protos import feature_pb2, model_pb2, pipeline_pb2
from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
from recforge.utils.pipeline import build_features
from tests.helpers.zch import MAX_ID, NUM_USERS, ZCH_SIZE, planted_rows, planted_users, zch_config

A, B, C, D = (MAX_ID - k for k in range(1, 5))


def _remapper(policy: str = "lfu", size: int = 4, interval: int = 1, **extra) -> ZchRemapper:
    config = feature_pb2.ZeroCollisionHash(zch_size=size, eviction_interval=interval, **extra)
    getattr(config, policy).SetInParent()
    return ZchRemapper(config, torch.device("cpu")).train()


def _ids(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def _rows(remapper: ZchRemapper, *values: int) -> list[int]:
    """The rows of ``values`` without counting them (eval mode)."""
    was = remapper.training
    remapper.eval()
    rows = remapper([_ids(*values)])[0].tolist()
    remapper.train(was)
    return rows


def test_ids_far_beyond_zch_size_get_rows_of_their_own():
    ids, _ = planted_users()
    assert ids.max() > 10**11  # raw ids far beyond the table's 200 rows
    remapper = _remapper(size=ZCH_SIZE)
    rows = remapper([torch.from_numpy(ids)])[0]
    assert rows.unique().numel() == NUM_USERS
    assert int(rows.max()) < ZCH_SIZE - 1  # the last row is the miss row
    assert _rows(remapper, *ids.tolist()) == rows.tolist()
    assert _rows(remapper, 12345) == [ZCH_SIZE - 1]  # never seen: the miss row


def test_new_ids_wait_for_the_eviction_interval():
    remapper = _remapper(size=8, interval=3)
    assert remapper([_ids(A, B)])[0].tolist() == [7, 7]
    remapper([_ids(C)])
    rows = remapper([_ids(A, B, C)])[0].tolist()  # third step: the admission round
    assert len(set(rows)) == 3 and 7 not in rows


def test_lfu_evicts_the_least_counted_id():
    remapper = _remapper("lfu")  # 3 rows for ids, row 3 for misses
    remapper([_ids(A, A, A, B, B, C)])
    before = _rows(remapper, A, B, C)
    remapper([_ids(D, D)])  # D (2) replaces C (1), the least counted
    assert _rows(remapper, A, B, C, D) == [before[0], before[1], 3, before[2]]


def test_lru_evicts_the_least_recent_id():
    remapper = _remapper("lru")
    for value in (A, B, C, A):  # B is now the least recently seen
        remapper([_ids(value)])
    before = _rows(remapper, A, B, C)
    remapper([_ids(D)])
    assert _rows(remapper, A, B, C, D) == [before[0], 3, before[2], before[1]]


def test_distance_lfu_keeps_frequent_ids():
    remapper = _remapper("distance_lfu")
    remapper([_ids(A, A, A, A, B, C)])
    remapper([_ids(D, D)])
    rows = _rows(remapper, A, D)
    assert rows[0] != 3 and rows[1] != 3  # A (often) stays, D (twice, recent) is admitted


def test_threshold_filter_admits_only_ids_over_the_threshold():
    remapper = _remapper(size=8, threshold_filtering_func="lambda x: (x > 1, 1)")
    remapper([_ids(A, A, B)])
    assert _rows(remapper, A, B)[1] == 7 and _rows(remapper, A, B)[0] != 7
    builtin = parse_threshold_filter("lambda x: dynamic_threshold_filter(x, 1.0)")
    mask, _ = builtin(torch.tensor([1, 1, 10]))
    assert mask.tolist() == [False, False, True]


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "lambda x: x.__class__",
        "lambda x: open('f')",
        "lambda x: (x > 1, nn)",
        "lambda x: (x > 'a', 1)",
        "lambda x: (x >",
    ],
)
def test_unsafe_threshold_filters_are_refused_at_their_field(text):
    config = text_format.Parse(zch_config(), pipeline_pb2.EasyRecConfig())
    config.feature_configs[0].id_feature.zch.threshold_filtering_func = text
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert info.value.field == "feature_configs[0].id_feature.zch.threshold_filtering_func"


def test_zch_without_a_policy_or_rows_is_refused():
    config = text_format.Parse(zch_config(zch="zch_size: 1"), pipeline_pb2.EasyRecConfig())
    with pytest.raises(ConfigError, match="zch_size must be >= 2") as info:
        validate_config(config)
    assert {e.field for e in info.value.errors} == {
        "feature_configs[0].id_feature.zch.zch_size",
        "feature_configs[0].id_feature.zch",
    }


def test_ids_are_63_bit_hashes_not_buckets():
    config = text_format.Parse(zch_config(fg_mode="FG_DAG"), pipeline_pb2.EasyRecConfig())
    user = build_features(config)[0]
    values = pa.array(["alice", "bob"])
    ids = user.parse({"user": values})["user.values"]
    assert ids.tolist() == (std_hash(values) % np.uint64(ZCH_HASH_SIZE)).astype(np.int64).tolist()
    assert ids.max() > ZCH_SIZE and user.num_embeddings == ZCH_SIZE


def test_features_sharing_a_table_need_the_same_zch():
    config = text_format.Parse(zch_config(), pipeline_pb2.EasyRecConfig())
    item = config.feature_configs[1].id_feature
    item.embedding_name = "user_emb"
    item.embedding_dim = 8
    features = build_features(config)
    group = model_pb2.FeatureGroupConfig(group_name="g", feature_names=["user", "item"])
    with pytest.raises(EmbeddingGroupError, match="same zch settings"):
        EmbeddingGroup(features, [group])


def _model(config: pipeline_pb2.EasyRecConfig, seed: int):
    torch.manual_seed(seed)
    return build_model(config, build_features(config), embedding_device=torch.device("cpu"))


def _trained(tmp_path, steps: int = 3):
    """A model whose remapper counted ``steps`` batches (interval 2: history pending)."""
    zch = f"zch_size: {ZCH_SIZE} eviction_interval: 2 lru {{}}"
    config = text_format.Parse(zch_config(fg_mode="FG_NONE", zch=zch), pipeline_pb2.EasyRecConfig())
    config.model_dir = str(tmp_path / "model")
    model = _model(config, 0).train()
    parser = DataParser(model.features)
    for step in range(steps):
        model.predict(parser.to_batch(parser.parse(planted_rows(64, step).to_batches()[0])))
    return config, model, parser


def test_checkpoint_holds_the_remapper_and_resumes_it_exactly(tmp_path):
    config, model, parser = _trained(tmp_path)
    keys = model.state_dict().keys()
    assert "embedding_group.zch.user_emb.mc._mch_sorted_raw_ids" in keys
    assert "embedding_group.zch.user_emb.mc._mch_last_access_iter" in keys
    save_checkpoint(config.model_dir, 3, TrainWrapper(model), None, {"global_step": 3})
    resumed = _model(config, 1).train()
    load_checkpoint(f"{config.model_dir}/model.ckpt-3", TrainWrapper(resumed))
    # the next steps admit and evict exactly as the uninterrupted model does
    for step in range(3, 6):
        batch = parser.to_batch(parser.parse(planted_rows(64, step).to_batches()[0]))
        model.predict(batch)
        resumed.predict(batch)
    original = model.embedding_group.zch["user_emb"]
    restored = resumed.embedding_group.zch["user_emb"]
    for name, buffer in original.mc.named_buffers():
        torch.testing.assert_close(dict(restored.mc.named_buffers())[name], buffer, msg=name)
    assert original.get_extra_state() == restored.get_extra_state()
    ids = torch.from_numpy(planted_users()[0])
    assert _rows(original, *ids.tolist()) == _rows(restored, *ids.tolist())


def test_export_applies_the_trained_remapping(tmp_path):
    config, model, parser = _trained(tmp_path, steps=4)
    config_path = tmp_path / "pipeline.config"
    config_path.write_text(text_format.MessageToString(config))
    save_checkpoint(config.model_dir, 4, TrainWrapper(model), None, {"global_step": 4})
    export_model(str(config_path), str(tmp_path / "export"))
    predictor = Predictor(str(tmp_path / "export"))
    rows = planted_rows(50, 9).to_batches()[0]  # seen users, plus unseen ids below
    rows = pa.record_batch(
        {
            "user": pa.concat_arrays([rows["user"], pa.array([7, MAX_ID - 1])]),
            "item": pa.concat_arrays([rows["item"], pa.array([1, 2])]),
            "label": pa.concat_arrays([rows["label"], pa.array([0, 0])]),
        }
    )
    with torch.no_grad():
        eager = model.eval().predict(parser.to_batch(parser.parse(rows)))["probs"].numpy()
        scripted = predictor.model(predictor.parser.parse(rows))["probs"].numpy()
    np.testing.assert_allclose(scripted, eager, atol=1e-6)
    # the users' rows differ: an export that lost the remapping would score them alike
    assert np.unique(np.round(eager[:-2], 5)).size > 5


def test_memory_estimate_counts_zch_size_rows_and_the_remapper():
    from recforge.optim import sparse_optimizer_spec
    from recforge.utils.memory_estimate import estimate_training_memory

    config = text_format.Parse(zch_config(), pipeline_pb2.EasyRecConfig())
    model = build_model(config, build_features(config), embedding_device=torch.device("meta"))
    spec = sparse_optimizer_spec(config.train_config.sparse_optimizer)
    estimate = estimate_training_memory(model, spec, torch.device("cpu"))
    rows = {t.name: t.rows for t in estimate.tables}
    assert rows["user_emb"] == rows["user_emb_wide"] == ZCH_SIZE
    tables = {id(p) for p in model.embedding_group.ebc.parameters()}
    dense = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in tables)
    # sorted ids, their rows and the lfu counts: three int64 per row, beside the dense part
    assert estimate.dense_bytes - dense * 4 >= 3 * 8 * ZCH_SIZE


def test_sequence_and_combo_features_share_the_remapping():
    config = text_format.Parse(
        """
        data_config { fg_mode: FG_DAG }
        feature_configs { id_feature {
          feature_name: "item" embedding_dim: 4 embedding_name: "item_table"
          zch { zch_size: 16 eviction_interval: 1 lfu {} } } }
        feature_configs { sequence_id_feature {
          feature_name: "clicks" expression: "user:clicks" sequence_length: 3
          sequence_delim: "|" embedding_dim: 4 embedding_name: "item_table"
          zch { zch_size: 16 eviction_interval: 1 lfu {} } } }
        feature_configs { combo_feature {
          feature_name: "cross" expression: ["item:item", "user:clicks"] embedding_dim: 4
          zch { zch_size: 8 eviction_interval: 1 lru {} } } }
        """,
        pipeline_pb2.EasyRecConfig(),
    )
    features = build_features(config)
    groups = [
        model_pb2.FeatureGroupConfig(
            group_name="seq", feature_names=["item", "clicks"], group_type=model_pb2.SEQUENCE
        ),
        model_pb2.FeatureGroupConfig(group_name="deep", feature_names=["cross"]),
    ]
    group = EmbeddingGroup(features, groups).train()
    assert set(group.zch.keys()) == {"item_table", "cross_emb"}
    rows = pa.record_batch({"item": pa.array(["a", "b"]), "clicks": pa.array(["b|c|a", "c"])})
    parser = DataParser(features)
    batch = parser.to_batch(parser.parse(rows))
    out = group(batch.sparse_features, batch.dense_features)
    # one remapper for the query and the sequence: the same item reads the same row
    query, sequence = out["seq.query"], out["seq.sequence"]
    torch.testing.assert_close(query[0], sequence[0, 2])  # a
    torch.testing.assert_close(query[1], sequence[0, 0])  # b
    assert not torch.equal(query[0], query[1])  # rows of their own
    assert int(group.zch["item_table"].mc.open_slots()) == 15 - 3
    # the combo reads "b|c|a" as one value (its separator is not "|"): two crosses
    assert int(group.zch["cross_emb"].mc.open_slots()) == 7 - 2


def test_a_tower_copies_the_remapper_of_its_tables():
    config = text_format.Parse(zch_config(fg_mode="FG_NONE"), pipeline_pb2.EasyRecConfig())
    features = build_features(config)
    user = model_pb2.FeatureGroupConfig(group_name="user", feature_names=["user"])
    item = model_pb2.FeatureGroupConfig(group_name="item", feature_names=["item"])
    full = EmbeddingGroup(features, [user, item]).train()
    parser = DataParser(features)
    batch = parser.to_batch(parser.parse(planted_rows(64, 0).to_batches()[0]))
    full(batch.sparse_features, batch.dense_features)
    tower = EmbeddingGroup(features, [user])
    tower.copy_weights_from(full)
    ids = planted_users()[0].tolist()
    assert _rows(tower.zch["user_emb"], *ids) == _rows(full.zch["user_emb"], *ids)
    assert len(set(_rows(tower.zch["user_emb"], *ids))) > 2


def test_a_random_threshold_filter_admits_alike_whatever_the_rng():
    filter_text = "lambda x: probabilistic_threshold_filter(x, 0.5)"
    admitted = []
    for seed in (1, 2):
        remapper = _remapper(size=64, threshold_filtering_func=filter_text)
        torch.manual_seed(seed)  # ranks (and resumed runs) differ in their RNG state
        ids = torch.arange(40, dtype=torch.int64) + MAX_ID
        remapper([ids])
        admitted.append([row != 63 for row in _rows(remapper, *ids.tolist())])
    assert admitted[0] == admitted[1] and 0 < sum(admitted[0]) < 40


def test_a_zch_table_larger_than_the_machine_is_refused_at_zch_size():
    config = text_format.Parse(
        zch_config(zch="zch_size: 10000000000000 lfu {}"), pipeline_pb2.EasyRecConfig()
    )
    with pytest.raises(ConfigError, match="lower zch_size") as info:
        validate_config(config)
    assert info.value.field == "feature_configs[0].id_feature.zch.zch_size"
