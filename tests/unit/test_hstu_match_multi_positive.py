"""hstu_match with several positive candidates per row (TorchEasyRec's candidate sequences)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from recforge.datasets.batch import Batch
from recforge.datasets.data_parser import DataParser
from recforge.datasets.dataset import RecDataset, candidate_sequence
from recforge.datasets.jagged_labels import jagged_label_columns
from recforge.datasets.sampler import (
    CAND_POS_LENGTHS_KEY,
    HARD_NEG_INDICES_KEY,
    ITEM_INDEX_KEY,
    NUM_NEGATIVES_KEY,
    NegativeSampler,
)
from recforge.errors import DataError
from recforge.features import FG_DAG, create_features
from recforge.models.hstu_match import HSTUMatch
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import pipeline_pb2, sampler_pb2
from recforge.retrieval import _item_rows
from tests.helpers.hstu import FEATURES, MODEL

# the candidates: a JAGGED_SEQUENCE group of up to 4 items per row, under the history's table
MP_FEATURES = FEATURES + (
    'feature_configs { sequence_feature { sequence_name: "cand" sequence_length: 4'
    ' sequence_delim: "|" features { id_feature { feature_name: "video_id"'
    ' expression: "item:video_id" embedding_name: "video_emb" num_buckets: 100'
    " embedding_dim: 16 } } } }"
)
IN_BATCH_MODEL = MODEL.replace(
    'feature_names: "item_id" group_type: DEEP',
    'feature_names: "cand__video_id" group_type: JAGGED_SEQUENCE',
)
SAMPLED_MODEL = IN_BATCH_MODEL.replace("in_batch_negative: true", "in_batch_negative: false")


def config(model: str) -> pipeline_pb2.EasyRecConfig:
    text = f'data_config {{ label_fields: "label" fg_mode: FG_DAG }} {MP_FEATURES} {model}'
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def build(model: str = SAMPLED_MODEL) -> HSTUMatch:
    cfg = config(model)
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    return BaseModel.create_class("HSTUMatch")(cfg.model_config, features, ["label"])


def table(candidates: list[list[int]]) -> pa.Table:
    """One user per entry of ``candidates`` (its positives), each with a short history."""
    histories = [[(3 * i + j) % 100 for j in range(1, 4 + i % 3)] for i in range(len(candidates))]
    return pa.table(
        {
            "uih__video_id": pa.array(["|".join(map(str, h)) for h in histories]),
            "uih__action_timestamp": pa.array(
                ["|".join(str(1_000_000 + 60 * k) for k in range(len(h))) for h in histories]
            ),
            "item_id": pa.array([c[0] if c else 0 for c in candidates], pa.int64()),
            "cand__video_id": pa.array(["|".join(map(str, c)) for c in candidates]),
            "label": pa.array([1] * len(candidates), pa.int64()),
        }
    )


def sampler(tmp_path, model: HSTUMatch, num_sample: int = 5) -> NegativeSampler:
    """A sampler over items 0..99 whose id column is the candidate sequence's column."""
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"cand__video_id": pa.array(np.arange(100), pa.int64())}), path)
    cfg = sampler_pb2.NegativeSampler(
        input_path=str(path), num_sample=num_sample, item_id_field="cand__video_id"
    )
    cfg.attr_fields.append("cand__video_id")
    result = NegativeSampler(cfg, num_sample)
    result.candidate_sequence = candidate_sequence(model.features, result.id_field)
    assert result.candidate_sequence is not None
    return result


def sampled_batch(tmp_path, model: HSTUMatch, candidates: list[list[int]], seed: int = 0) -> Batch:
    rb = table(candidates).to_batches()[0]
    rb, extras = sampler(tmp_path, model).append_negatives(
        rb, np.random.default_rng(seed), ["label"], []
    )
    b = DataParser(model.features).parse_batch(rb)
    b.extras.update(extras)
    return b


CANDIDATES = [[5], [10, 11, 12], [], [40, 41]]


def test_the_sampler_reports_each_rows_positives_and_avoids_them(tmp_path):
    model = build()
    b = sampled_batch(tmp_path, model, CANDIDATES)
    assert b.extras[CAND_POS_LENGTHS_KEY].tolist() == [1, 3, 0, 2]
    assert int(b.extras[NUM_NEGATIVES_KEY][0]) == 5
    index = b.extras[ITEM_INDEX_KEY]
    assert index[:6].tolist() == [5, 10, 11, 12, 40, 41]  # one entry per positive, then negatives
    assert index.shape[0] == 6 + 5
    assert not set(index[6:].tolist()) & {5, 10, 11, 12, 40, 41}


@pytest.mark.parametrize("model_text", [SAMPLED_MODEL, IN_BATCH_MODEL])
def test_rows_with_one_three_and_zero_positives_train_a_step(tmp_path, model_text):
    model = build(model_text)
    b = sampled_batch(tmp_path, model, CANDIDATES)
    total, (losses, predictions, _) = TrainWrapper(model)(b)
    total.backward()
    assert torch.isfinite(total)
    sim = predictions["similarity"]
    # one query per positive: 6 rows; columns: positive + 5 negatives, or 6 positives + 5
    assert sim.shape == ((6, 6) if "in_batch_negative: false" in model_text else (6, 11))
    assert predictions["user_emb"].shape == (4, 16)
    assert predictions["item_emb"].shape == (11, 16)
    stu = model.user_tower.encoder.stu.layers[0]
    assert stu._uvqk_weight.grad is not None and stu._uvqk_weight.grad.abs().sum() > 0


def _reference_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    candidates: list[list[int]],
    num_neg: int,
    in_batch: bool,
    temperature: float,
) -> torch.Tensor:
    """Softmax cross entropy per positive, averaged over positives, one query at a time."""
    user, item = F.normalize(user, dim=-1), F.normalize(item, dim=-1)
    positives = [(r, p) for r, c in enumerate(candidates) for p in range(len(c))]
    item_ids = [i for c in candidates for i in c]
    negatives = item[len(positives) : len(positives) + num_neg]
    losses = []
    for q, (row, _) in enumerate(positives):
        scores = [float(user[row] @ item[q])]
        if in_batch:
            for other, (other_row, _) in enumerate(positives):
                if other_row != row and item_ids[other] != item_ids[q]:
                    scores.append(float(user[row] @ item[other]))
        scores += [float(user[row] @ n) for n in negatives]
        logits = torch.tensor(scores, dtype=torch.float64) / temperature
        losses.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("model_text", [SAMPLED_MODEL, IN_BATCH_MODEL])
def test_the_loss_equals_a_hand_computed_reference(tmp_path, model_text):
    model = build(model_text).eval()  # fixed weights, no dropout
    candidates = [[5], [10, 11, 12], [], [40, 10]]  # item 10 is a positive of two rows
    b = sampled_batch(tmp_path, model, candidates)
    with torch.no_grad():
        predictions = model.predict(b)
        loss = model.loss(predictions, b)["softmax_cross_entropy"]
    expected = _reference_loss(
        predictions["user_emb"],
        predictions["item_emb"],
        candidates,
        5,
        "in_batch_negative: true" in model_text,
        0.1,
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)


def test_one_positive_per_row_scores_as_before(tmp_path):
    """With one candidate per row the query path equals MatchModel's one-positive scoring."""
    for model_text in (SAMPLED_MODEL, IN_BATCH_MODEL):
        model = build(model_text).eval()
        b = sampled_batch(tmp_path, model, [[5], [10], [40]])
        with torch.no_grad():
            predictions = model.predict(b)
            user = F.normalize(predictions["user_emb"], dim=-1)
            item = F.normalize(predictions["item_emb"], dim=-1)
            expected = model.candidate_logits(user, item, b)
        torch.testing.assert_close(predictions["similarity"], expected)


def test_a_batch_without_positives_has_a_zero_loss_that_backpropagates():
    model = build(IN_BATCH_MODEL)
    b = DataParser(model.features).parse_batch(table([[], []]).to_batches()[0])
    total, (losses, predictions, _) = TrainWrapper(model)(b)
    assert predictions["similarity"].shape[0] == 0
    assert float(total) == 0.0
    total.backward()


def test_recall_counts_each_positive():
    """As TorchEasyRec's hstu_match: recall@k over queries, one per positive."""
    model = build(IN_BATCH_MODEL).eval()
    b = DataParser(model.features).parse_batch(table(CANDIDATES).to_batches()[0])
    with torch.no_grad():
        predictions = model.predict(b)
    model.update_metric(predictions, b)
    recall = model._metric_modules["recall@10"].metric
    assert float(recall.total) == 6.0  # 6 positives, in-batch: all 6 are within the top 10
    assert float(recall.hits) == 6.0


def test_autoregressive_loss_refuses_several_positives_per_row():
    ar_model = IN_BATCH_MODEL.replace(
        "in_batch_negative: true", "in_batch_negative: true autoregressive_loss: true"
    )
    model = build(ar_model)
    one_each = DataParser(model.features).parse_batch(table([[5], [6]]).to_batches()[0])
    total, _ = TrainWrapper(model)(one_each)
    assert torch.isfinite(total)
    several = DataParser(model.features).parse_batch(table([[5], [6, 7]]).to_batches()[0])
    with pytest.raises(DataError, match=r"hstu_match\.autoregressive_loss: training row 1"):
        TrainWrapper(model)(several)
    model.eval()  # evaluation scores several positives without the autoregressive loss
    with torch.no_grad():
        assert model.predict(several)["similarity"].shape == (3, 3)


def test_a_row_with_no_positive_is_not_paired_with_another_rows_item():
    """Before, ["7|8", "", "9"] gave 3 items for 3 users and scored user 2 against item 8."""
    model = build(SAMPLED_MODEL).eval()
    b = DataParser(model.features).parse_batch(table([[7, 8], [], [9]]).to_batches()[0])
    with torch.no_grad():
        predictions = model.predict(b)
    user = F.normalize(predictions["user_emb"], dim=-1)
    item = F.normalize(predictions["item_emb"], dim=-1)
    expected = torch.stack([user[0] @ item[0], user[0] @ item[1], user[2] @ item[2]]) / 0.1
    torch.testing.assert_close(predictions["similarity"].squeeze(1), expected)


def test_hard_negatives_serve_every_query_of_their_row(tmp_path):
    model = build(SAMPLED_MODEL).eval()
    b = sampled_batch(tmp_path, model, [[5], [10, 11]])
    # give row 1 two hard negatives (the last two sampled rows) and row 0 none
    b.extras[HARD_NEG_INDICES_KEY] = torch.tensor([[1, 0], [1, 1]])
    with torch.no_grad():
        predictions = model.predict(b)
    user = F.normalize(predictions["user_emb"], dim=-1)
    item = F.normalize(predictions["item_emb"], dim=-1)
    sim = predictions["similarity"]
    assert sim.shape == (3, 1 + 3 + 2)  # positive, 3 shared negatives, 2 hard slots
    hard = item[-2:]
    assert (sim[0, -2:] == torch.finfo(sim.dtype).min).all()  # row 0 has no hard negatives
    for q in (1, 2):
        torch.testing.assert_close(sim[q, -2:], user[1] @ hard.t() / 0.1)


def test_a_sampled_row_with_several_items_is_an_error():
    model = build(SAMPLED_MODEL)
    b = DataParser(model.features).parse_batch(table([[5], [6, 7]]).to_batches()[0])
    b.extras[NUM_NEGATIVES_KEY] = torch.tensor([1])  # pretend row 1 was sampled
    with pytest.raises(DataError, match="sampled negative row 1 .* holds 2 items"):
        model.predict(b)


def test_the_user_tower_export_equals_the_model_with_several_positives(tmp_path):
    model = build(SAMPLED_MODEL).eval()
    b = DataParser(model.features).parse_batch(table(CANDIDATES).to_batches()[0])
    with torch.no_grad():
        expected = F.normalize(model.predict(b)["user_emb"], dim=-1)
        tower = model.tower_module("user")(b)
    torch.testing.assert_close(tower, expected)


def test_the_dataset_gives_its_sampler_the_candidate_sequence(tmp_path):
    """A train batch read from a file: its sampler splits the candidates as the parser does."""
    model = build(SAMPLED_MODEL)
    pq.write_table(table(CANDIDATES), tmp_path / "train.parquet")
    sampler(tmp_path, model)  # writes items.parquet
    cfg = config(SAMPLED_MODEL).data_config
    cfg.batch_size = 4
    cfg.negative_sampler.input_path = str(tmp_path / "items.parquet")
    cfg.negative_sampler.num_sample = 3
    cfg.negative_sampler.item_id_field = "cand__video_id"
    cfg.negative_sampler.attr_fields.append("cand__video_id")
    dataset = RecDataset(cfg, model.features, str(tmp_path / "train.parquet"), "train")
    b = next(iter(dataset))
    assert b.extras[CAND_POS_LENGTHS_KEY].tolist() == [1, 3, 0, 2]
    assert b.extras[ITEM_INDEX_KEY][:6].tolist() == [5, 10, 11, 12, 40, 41]
    total, (_, predictions, _) = TrainWrapper(model)(b)
    assert torch.isfinite(total) and predictions["similarity"].shape == (6, 4)


def test_a_scalar_item_id_keeps_one_positive_per_row():
    """DSSM-style data: a scalar feature reads the sampler's item id column."""
    model = build(MODEL)
    assert candidate_sequence(model.features, "item_id") is None


def test_torcheasyrec_sample_format_reads_and_trains(tmp_path):
    """TorchEasyRec's hstu_match data: per-candidate labels, an id / weight / attrs item table
    and ``item_id_field`` naming the candidate sequence's column with a bare ``attr_fields``."""
    model = build(SAMPLED_MODEL)
    rows = table(CANDIDATES)
    labels = pa.array(["|".join("1" for _ in c) for c in CANDIDATES])
    rows = rows.set_column(rows.schema.get_field_index("label"), "label", labels)
    pq.write_table(rows, tmp_path / "train.parquet")
    items = pa.table(
        {
            "id": pa.array(np.arange(100), pa.int64()),
            "weight": pa.array(np.ones(100)),
            "attrs": pa.array([str(i) for i in range(100)]),
        }
    )
    pq.write_table(items, tmp_path / "items.parquet")
    cfg = config(SAMPLED_MODEL)
    data = cfg.data_config
    data.batch_size = 4
    sampler_cfg = data.negative_sampler
    sampler_cfg.input_path = str(tmp_path / "items.parquet")
    sampler_cfg.num_sample = 3
    sampler_cfg.item_id_field = "cand__video_id"
    sampler_cfg.attr_fields.append("video_id")
    assert jagged_label_columns(cfg) == {"label": "|"}
    dataset = RecDataset(
        data,
        model.features,
        str(tmp_path / "train.parquet"),
        "train",
        jagged_labels=jagged_label_columns(cfg),
    )
    b = next(iter(dataset))
    assert b.extras[CAND_POS_LENGTHS_KEY].tolist() == [1, 3, 0, 2]
    assert b.label_lengths["label"].tolist() == [1, 3, 0, 2, 1, 1, 1]
    total, (_, predictions, _) = TrainWrapper(model)(b)
    assert torch.isfinite(total) and predictions["similarity"].shape == (6, 4)
    # a DEEP candidate group keeps plain labels
    assert jagged_label_columns(config(MODEL)) == {}


def test_evaluate_retrieval_reads_every_positive_of_a_candidate_sequence(tmp_path):
    """Full-corpus retrieval's ground truth: each positive of a row, on that row's user."""
    model = build(SAMPLED_MODEL)
    items = sampler(tmp_path, model).items
    column = pa.chunked_array([pa.array(["5", "10|11|12", "", "40|41"])])
    splitter = candidate_sequence(model.features, "cand__video_id")
    index, rows = _item_rows(items, column, splitter)
    assert index.tolist() == [5, 10, 11, 12, 40, 41]
    assert rows.tolist() == [0, 1, 1, 1, 3, 3]
    index, rows = _item_rows(items, pa.chunked_array([pa.array([7, 8])]), None)
    assert index.tolist() == [7, 8] and rows.tolist() == [0, 1]
