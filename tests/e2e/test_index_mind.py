"""``load_retriever(...).topk`` of a MIND export: each interest searched, merged by best score."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import recforge
from recforge.config import load_pipeline_config
from recforge.export import export_model, restore_model
from recforge.index.build import build_index
from recforge.index.faiss_backend import IndexParams
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.retrieval import _top_k, embed_table
from recforge.utils.checkpoint import save_checkpoint
from recforge.utils.pipeline import build_features
from tests.helpers.planted import mind_model, write_planted_run

NUM_ITEMS, NUM_USERS = 200, 12


def user_rows() -> pa.Table:
    """Users with 1 to 6 behaviours (1: one interest; 6: three)."""
    rng = np.random.default_rng(1)
    hist = [rng.integers(0, NUM_ITEMS, 1 + u % 6).tolist() for u in range(NUM_USERS)]
    return pa.table({"user_id": pa.array(np.arange(NUM_USERS)), "hist": hist})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An untrained MIND's export (3 interests of 8)."""
    pytest.importorskip("faiss")
    root = tmp_path_factory.mktemp("index_mind")
    rows = user_rows().append_column("item_id", pa.array(np.arange(NUM_USERS)))
    rows = rows.append_column("label", pa.array(np.ones(NUM_USERS, dtype=np.int64)))
    items = pa.table({"item_id": pa.array(np.arange(NUM_ITEMS))})
    config_path = write_planted_run(str(root), mind_model(3, 8), rows, items, num_steps=1)
    config = load_pipeline_config(config_path)
    torch.manual_seed(0)
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    with torch.no_grad():  # spread the untrained embeddings out
        for param in model.parameters():
            param.normal_()
    save_checkpoint(config.model_dir, 1, TrainWrapper(model), None, {"global_step": 1})
    export_model(config_path, str(root / "export"))
    return root


def exact(work) -> tuple[torch.Tensor, torch.Tensor]:
    config = load_pipeline_config(str(work / "train.config"))
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
