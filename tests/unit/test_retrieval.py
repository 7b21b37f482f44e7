"""Negative sampling from an item table and the match models (DSSM, DSSMV2), in process."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from recforge.config import ConfigError
from recforge.datasets import DataError
from recforge.datasets.data_parser import DataParser
from recforge.datasets.dataset import RecDataset
from recforge.datasets.sampler import (
    ITEM_INDEX_KEY,
    LOG_Q_KEY,
    NUM_NEGATIVES_KEY,
    NegativeSampler,
    load_item_table,
)
from recforge.features import create_pipeline_features
from recforge.models.factory import build_model
from recforge.models.match_model import MatchModel
from tests.helpers.retrieval import (
    NUM_ITEMS,
    item_table,
    pipeline_config,
    sampler_config,
    sampler_text,
    train_table,
    write_tables,
)


@pytest.fixture()
def files(tmp_path):
    return write_tables(tmp_path)


# ---- the sampler ------------------------------------------------------------------------------
def test_sampled_negatives_carry_their_item_table_rows(files):
    sampler = NegativeSampler(sampler_config(str(files / "items.parquet")), 8)
    rb = train_table(10).to_batches()[0]
    combined, extras = sampler.append_negatives(
        rb, np.random.default_rng(0), labels=["label"], weights=[]
    )
    assert combined.num_rows == 18 and combined.schema == rb.schema
    assert combined.slice(0, 10).equals(rb)  # the positives are untouched
    negatives = combined.slice(10).to_pydict()
    table = item_table().to_pydict()
    row_of = {item: i for i, item in enumerate(table["item_id"])}
    for j, item in enumerate(negatives["item_id"]):
        row = row_of[item]  # a real item of the table, with its own attributes
        assert negatives["cate"][j] == table["cate"][row]
        assert negatives["price"][j] == table["price"][row]
        assert int(extras[ITEM_INDEX_KEY][10 + j]) == row
    assert negatives["user_id"] == [None] * 8 and negatives["last_item"] == [None] * 8
    assert negatives["label"] == [0] * 8
    assert int(extras[NUM_NEGATIVES_KEY][0]) == 8
    positives = [row_of[item] for item in rb.column("item_id").to_pylist()]
    assert extras[ITEM_INDEX_KEY][:10].tolist() == positives
    assert not set(negatives["item_id"]) & set(rb.column("item_id").to_pylist())  # redrawn
    assert len(set(negatives["item_id"])) > 1


def test_sampling_follows_popularity_or_is_uniform(files):
    path = str(files / "items.parquet")
    weights = np.arange(NUM_ITEMS) + 1.0
    for exponent, expected in ((1.0, weights / weights.sum()), (0.0, np.full(NUM_ITEMS, 1 / 60))):
        sampler = NegativeSampler(sampler_config(path, popularity_exponent=exponent), 8)
        draws = sampler.draw(np.random.default_rng(1), 60_000)
        freq = np.bincount(draws, minlength=NUM_ITEMS) / draws.size
        assert np.abs(freq - expected).max() < 0.006
        np.testing.assert_allclose(sampler.sampling_prob(np.arange(NUM_ITEMS)), expected)
    half = NegativeSampler(sampler_config(path, popularity_exponent=0.5), 8)
    sqrt = np.sqrt(weights) / np.sqrt(weights).sum()
    np.testing.assert_allclose(half.sampling_prob(np.arange(NUM_ITEMS)), sqrt)


def test_torch_easyrec_item_table_layout(tmp_path):
    """id | weight | attrs ("cate:price" strings), as TorchEasyRec's item tables."""
    table = item_table()
    attrs = [f"{c}:{p}" for c, p in zip(table["cate"].to_pylist(), table["price"].to_pylist())]
    pq.write_table(
        pa.table({"id": table["item_id"], "weight": table["weight"], "attrs": attrs}),
        tmp_path / "tz.parquet",
    )
    config = sampler_config(str(tmp_path / "tz.parquet"))
    del config.attr_fields[:]
    config.attr_fields.extend(["cate", "price"])
    sampler = NegativeSampler(config, 5)
    rb = train_table(4).to_batches()[0]
    combined, _ = sampler.append_negatives(rb, np.random.default_rng(0), ["label"], [])
    negatives = combined.slice(4).to_pydict()
    for item, cate, price in zip(negatives["item_id"], negatives["cate"], negatives["price"]):
        k = int(item[1:])
        assert cate == k % 5 and price == k * 0.5 + 1.0  # cast to the train data's types


def test_item_ids_of_an_incompatible_type_name_the_item_table(files):
    config = pipeline_config(files, sampler=sampler_text(files))
    items = load_item_table(config.data_config.negative_sampler)
    row_of_i3 = items.table.column("item_id").to_pylist().index("i3")
    assert items.index_of(pa.array(["i3", "unknown"])).tolist() == [row_of_i3, -1]
    assert items.index_of(pa.array([3])).tolist() == [-1]  # ints cast to the string ids
    with pytest.raises(DataError, match=r"item ids of type list<item: int64> cannot be compared"):
        items.index_of(pa.array([[1, 2]]))


def test_eval_uses_num_eval_sample_and_predict_no_sampler(files):
    config = pipeline_config(files, sampler=sampler_text(files))
    config.data_config.negative_sampler.num_eval_sample = 3
    features = create_pipeline_features(config)
    path = config.train_input_path
    eval_batch = next(iter(RecDataset(config.data_config, features, path, mode="eval")))
    assert eval_batch.batch_size == 13 and int(eval_batch.extras[NUM_NEGATIVES_KEY][0]) == 3
    predict_batch = next(iter(RecDataset(config.data_config, features, path, mode="predict")))
    assert predict_batch.batch_size == 10 and NUM_NEGATIVES_KEY not in predict_batch.extras


@pytest.mark.parametrize(
    "change, message",
    [
        ({"item_id_field": "sku"}, "no item id column 'sku'"),
        ({"attr_fields": ["cate", "brand"]}, "no column 'brand'"),
        ({"num_sample": 61}, "num_sample (61) is larger than the item table"),
    ],
)
def test_bad_item_table_is_a_clear_error(files, change, message):
    config = sampler_config(str(files / "items.parquet"))
    num_sample = change.pop("num_sample", 8)
    if "attr_fields" in change:
        del config.attr_fields[:]
        config.attr_fields.extend(change.pop("attr_fields"))
    for name, value in change.items():
        setattr(config, name, value)
    with pytest.raises(DataError) as info:
        NegativeSampler(config, num_sample)
    assert message in str(info.value) and "items.parquet" in str(info.value)


# ---- the models -------------------------------------------------------------------------------
def batch_with_negatives(workdir, config):
    features = create_pipeline_features(config)
    dataset = RecDataset(config.data_config, features, config.train_input_path)
    return features, next(iter(dataset))


@pytest.mark.parametrize("model", ["dssm", "dssm_v2"])
@pytest.mark.parametrize("in_batch", [True, False])
def test_match_model_scores_candidates_and_trains(files, model, in_batch):
    extra = f"in_batch_negative: {str(in_batch).lower()} similarity: COSINE"
    config = pipeline_config(files, model, sampler_text(files), extra)
    features, batch = batch_with_negatives(files, config)
    net = build_model(config, features)
    predictions = net.predict(batch)
    user, item = predictions["user_emb"], predictions["item_emb"]
    assert user.shape == (10, 8) and item.shape == (18, 8)
    sim = F.normalize(user, dim=-1) @ F.normalize(item, dim=-1).t() / 0.2
    if in_batch:
        expected, target = sim, torch.arange(10)
        # a user whose positive item is also another user's positive: that column is masked
        index = batch.extras[ITEM_INDEX_KEY][:10]
        dup = (index[:, None] == index[None, :]) & ~torch.eye(10, dtype=torch.bool)
        expected = torch.cat([expected[:, :10].masked_fill(dup, -3.4e38), expected[:, 10:]], 1)
    else:
        expected = torch.cat([sim[:, :10].diagonal()[:, None], sim[:, 10:]], dim=1)
        target = torch.zeros(10, dtype=torch.long)
    logits = predictions["similarity"]
    finite = expected > -1e38
    torch.testing.assert_close(logits[finite], expected[finite], atol=1e-5, rtol=1e-5)
    assert (logits[~finite] < -1e38).all()
    losses = net.loss(predictions, batch)
    torch.testing.assert_close(losses["softmax_cross_entropy"], F.cross_entropy(logits, target))
    losses["softmax_cross_entropy"].backward()
    assert all(p.grad is not None for p in net.user_tower.parameters())
    assert all(p.grad is not None for p in net.item_tower.parameters())
    net.update_metric(predictions, batch, losses)
    metrics = net.compute_metric()
    hits = (logits.topk(3, dim=1).indices == target[:, None]).any(1).float().mean()
    assert float(metrics["recall@3"]) == pytest.approx(float(hits))


def test_log_q_correction_subtracts_the_expected_counts(files):
    base = pipeline_config(files, "dssm", sampler_text(files), "in_batch_negative: true")
    corrected = pipeline_config(
        files, "dssm", sampler_text(files), "in_batch_negative: true log_q_correction: true"
    )
    features, batch = batch_with_negatives(files, base)
    torch.manual_seed(0)
    plain = build_model(base, features)
    torch.manual_seed(0)
    with_q = build_model(corrected, features)
    with_q.load_state_dict(plain.state_dict())
    a, b = plain.predict(batch)["similarity"], with_q.predict(batch)["similarity"]
    log_q = batch.extras[LOG_Q_KEY]
    finite = a > -1e38
    torch.testing.assert_close(b[finite], (a - log_q[None, :])[finite])
    # the sampled negatives' log-Q is log(num_sample * p), p from the weight column
    weights = item_table()["weight"].to_numpy()
    index = batch.extras[ITEM_INDEX_KEY][10:].numpy()
    expected = np.log(8 * weights[index] / weights.sum())
    np.testing.assert_allclose(log_q[10:].numpy(), expected, rtol=1e-5)


def test_dssm_v2_shares_tables_and_dssm_does_not(files):
    for model, shared in (("dssm", False), ("dssm_v2", True)):
        config = pipeline_config(files, model, "", "in_batch_negative: true")
        net = build_model(config, create_pipeline_features(config))
        tables = [
            name.split(".")[-2] for name, _ in net.named_parameters() if "embedding_bags" in name
        ]
        # last_item (user) and item_id (item) both name embedding_name "item_emb": one table
        # for both towers in DSSMV2, one per tower in DSSM
        assert sorted(tables) == sorted(
            ["user_id_emb", "item_emb", "cate_emb"] + ([] if shared else ["item_emb"])
        )
        assert isinstance(net, MatchModel) and net.shares_tables() == shared


@pytest.mark.parametrize("model", ["dssm", "dssm_v2"])
def test_tower_modules_embed_like_the_model(files, model):
    config = pipeline_config(files, model, sampler_text(files), "similarity: COSINE")
    features, batch = batch_with_negatives(files, config)
    net = build_model(config, features).eval()
    with torch.no_grad():
        predictions = net.predict(batch)
        table = train_table().slice(0, 10).to_batches()[0]
        for side, rows in (("user", 10), ("item", 18)):
            tower = net.tower_module(side)
            tower_batch = DataParser(net.tower_features(side)).parse_batch(table)
            got = tower(tower_batch)
            want = F.normalize(predictions[f"{side}_emb"][:10], dim=-1)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
            assert predictions[f"{side}_emb"].shape[0] == rows


def test_match_model_config_errors(files):
    features = create_pipeline_features(pipeline_config(files))
    config = pipeline_config(files, extra="in_batch_negative: true")
    config.model_config.dssm.output_dim = 0
    config.model_config.dssm.item_tower.mlp.hidden_units[:] = [12]
    with pytest.raises(ConfigError, match="user tower outputs 16 values and the item tower 12"):
        build_model(config, features)
    config = pipeline_config(files, extra="log_q_correction: true")
    with pytest.raises(ConfigError, match="log_q_correction needs data_config.negative_sampler"):
        build_model(config, features)
    config = pipeline_config(files, sampler=sampler_text(files))
    del config.data_config.negative_sampler.attr_fields[:]
    config.data_config.negative_sampler.attr_fields.append("cate")
    with pytest.raises(ConfigError, match="item feature 'price' reads column 'price'"):
        build_model(config, features)
    config = pipeline_config(files)
    config.model_config.dssm.item_tower.input = "items"
    with pytest.raises(Exception, match="item_tower.input 'items' is not a feature group"):
        build_model(config, features)


# ---- full-corpus retrieval ------------------------------------------------------------------
def test_exact_top_k_skips_excluded_items_and_scores_recall():
    from recforge.retrieval import _scores, _top_k

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 4, generator=g), torch.randn(30, 4, generator=g)
    excluded = [np.array([], dtype=np.int64)] * 7
    excluded[2] = np.array([3, 11, 29])
    top = _top_k(users, items, 5, excluded, "torch")
    scores = users @ items.t()
    for u in range(7):
        ranked = [i for i in scores[u].argsort(descending=True).tolist() if i not in excluded[u]]
        assert top[u].tolist() == ranked[:5]
    relevant = [np.array([int(top[u, 0])]) for u in range(3)] + [np.array([28, 29])] * 4
    metrics = _scores(top[:7], relevant, [1, 5])
    found = sum(np.isin([28, 29], top[u, :5].numpy()).sum() / 2 for u in range(3, 7))
    assert metrics["recall@1"] == pytest.approx(
        (3 + sum(float(np.isin(top[u, 0].item(), [28, 29])) / 2 for u in range(3, 7))) / 7
    )
    assert metrics["recall@5"] == pytest.approx((3 + found) / 7)
    hits = sum(bool(np.isin([28, 29], top[u, :5].numpy()).any()) for u in range(3, 7))
    assert metrics["hit_rate@5"] == pytest.approx((3 + hits) / 7)


def test_each_rank_samples_its_own_negatives_reproducibly(files, monkeypatch):
    import recforge.datasets.dataset as dataset_module

    config = pipeline_config(files, sampler=sampler_text(files))
    features = create_pipeline_features(config)
    dataset = RecDataset(config.data_config, features, config.train_input_path)

    def negatives(rank):
        monkeypatch.setattr(dataset_module, "_rank_and_world_size", lambda: (rank, 2))
        dataset.set_epoch(0)  # each iteration reads the next epoch
        batches = list(dataset)
        assert len(batches) == 2  # each rank reads half of the 4 batches
        return [b.extras[ITEM_INDEX_KEY][10:].tolist() for b in batches]

    rank0, rank1 = negatives(0), negatives(1)
    assert rank0 != rank1 and negatives(0) == rank0 and negatives(1) == rank1
