"""``load_retriever(...).topk`` of a MIND export: each interest searched, merged by best score."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from google.protobuf import text_format

import recforge
from recforge.export import export_model, restore_model
from recforge.index.build import build_index
from recforge.index.faiss_backend import IndexParams
from recforge.index.retriever import merge_interest_results
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.protos import pipeline_pb2
from recforge.retrieval import _top_k, embed_table
from recforge.utils.checkpoint import save_checkpoint
from recforge.utils.pipeline import build_features

NUM_ITEMS, NUM_USERS = 200, 12

CONFIG = """
train_input_path: "{work}/rows.parquet" eval_input_path: "{work}/rows.parquet"
model_dir: "{work}/model"
data_config {{
  fg_mode: FG_DAG batch_size: 16 label_fields: "label"
  negative_sampler {{ input_path: "{work}/items.parquet" num_sample: 8 item_id_field: "item_id"
    attr_fields: ["item_id"] }}
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 20 embedding_dim: 4 }} }}
feature_configs {{ sequence_id_feature {{ feature_name: "hist" num_buckets: 200
  embedding_dim: 8 sequence_length: 6 }} }}
feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: 200 embedding_dim: 8 }} }}
model_config {{
  feature_groups {{ group_name: "user" feature_names: ["user_id"] }}
  feature_groups {{ group_name: "item" feature_names: ["item_id"] }}
  feature_groups {{ group_name: "hist" feature_names: ["hist"] group_type: SEQUENCE }}
  mind {{
    user_tower {{ input: "user" history_input: "hist" user_mlp {{ hidden_units: [4] }}
                  capsule_config {{ max_k: 3 max_seq_len: 6 high_dim: 8 }}
                  concat_mlp {{ hidden_units: [8] }} }}
    item_tower {{ input: "item" mlp {{ hidden_units: [8] }} }}
    output_dim: 8
  }}
}}
"""


def user_rows() -> pa.Table:
    rng = np.random.default_rng(1)
    hist = [rng.integers(0, NUM_ITEMS, 1 + u % 6).tolist() for u in range(NUM_USERS)]
    return pa.table({"user_id": pa.array(np.arange(NUM_USERS)), "hist": hist})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An untrained MIND's export with flat ip and l2 indexes."""
    pytest.importorskip("faiss")
    root = tmp_path_factory.mktemp("index_mind")
    items = pa.table({"item_id": pa.array(np.arange(NUM_ITEMS))})
    pq.write_table(items, root / "items.parquet")
    rows = user_rows().append_column("item_id", pa.array(np.arange(NUM_USERS)))
    rows = rows.append_column("label", pa.array(np.ones(NUM_USERS, dtype=np.int64)))
    pq.write_table(rows, root / "rows.parquet")
    config = text_format.Parse(CONFIG.format(work=root), pipeline_pb2.EasyRecConfig())
    (root / "pipeline.config").write_text(text_format.MessageToString(config))
    torch.manual_seed(0)
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    with torch.no_grad():  # spread the untrained embeddings out
        for param in model.parameters():
            param.normal_()
    save_checkpoint(config.model_dir, 1, TrainWrapper(model), None, {"global_step": 1})
    export_model(str(root / "pipeline.config"), str(root / "export"))
    return root


def exact(work) -> tuple[torch.Tensor, torch.Tensor]:
    config = text_format.Parse(CONFIG.format(work=work), pipeline_pb2.EasyRecConfig())
    model, _ = restore_model(config, str(work / "model" / "model.ckpt-1"))
    items = pq.read_table(work / "items.parquet")
    item_emb = embed_table(model.tower_module("item"), model.tower_features("item"), items)
    user_emb = embed_table(model.tower_module("user"), model.tower_features("user"), user_rows())
    return user_emb, item_emb


def test_topk_of_a_mind_export_scores_items_by_the_best_interest(work):
    build_index(str(work / "export"), str(work / "items.parquet"))
    retriever = recforge.load_retriever(str(work / "export"))
    user_emb, item_emb = exact(work)
    assert user_emb.shape == (NUM_USERS, 3, 8)
    masked = (user_emb.abs().amax(dim=2) == 0).sum()
    assert 0 < masked < NUM_USERS * 3  # users with 1 behaviour have one interest
    found = retriever.topk(user_rows(), k=10)
    expected = _top_k(user_emb, item_emb, 10, [np.empty(0, np.int64)] * NUM_USERS, "torch")
    assert [list(row) for row in found.item_ids] == expected.tolist()  # evaluate-retrieval's
    for u in range(NUM_USERS):
        assert len(set(found.item_ids[u])) == 10  # each item once
        real = user_emb[u][user_emb[u].abs().amax(dim=1) > 0]
        item_best = (real @ item_emb.t()).amax(dim=0)  # each item at its best interest
        np.testing.assert_allclose(
            found.scores[u], item_best.topk(10).values.numpy(), rtol=0, atol=1e-5
        )
        rows = found.item_ids[u].tolist()
        np.testing.assert_allclose(found.scores[u], item_best[rows].numpy(), rtol=0, atol=1e-5)


def test_l2_indexes_merge_by_the_nearest_interest(work, tmp_path):
    import shutil

    export = tmp_path / "export"
    shutil.copytree(work / "export", export)
    build_index(str(export), str(work / "items.parquet"), params=IndexParams(metric="l2"))
    found = recforge.load_retriever(str(export)).topk(user_rows(), k=5)
    user_emb, item_emb = exact(work)
    for u in range(NUM_USERS):
        real = user_emb[u][user_emb[u].abs().amax(dim=1) > 0]
        nearest = torch.cdist(real, item_emb).square().amin(dim=0).topk(5, largest=False)
        np.testing.assert_allclose(found.scores[u], nearest.values.numpy(), rtol=0, atol=1e-4)
        assert found.item_ids[u].tolist() == nearest.indices.tolist()


def test_merge_keeps_each_item_once_at_its_best_score_and_skips_masked_interests():
    scores = np.array([[[0.9, 0.5, 0.1], [0.8, 0.7, 0.6], [5.0, 4.0, 3.0]]], dtype=np.float32)
    rows = np.array([[[3, 1, 2], [1, 4, -1], [7, 8, 9]]])
    valid = np.array([[True, True, False]])  # the third interest is masked
    [(found, best)] = merge_interest_results(scores, rows, valid, 3, higher_is_closer=True)
    assert found.tolist() == [3, 1, 4] and best.tolist() == pytest.approx([0.9, 0.8, 0.7])
    [(found, best)] = merge_interest_results(scores, rows, valid, 3, higher_is_closer=False)
    assert found.tolist() == [2, 1, 4] and best.tolist() == pytest.approx([0.1, 0.5, 0.7])
