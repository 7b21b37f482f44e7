"""hstu_match autoregressive_loss: every history event is scored against the item after it."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, create_features
from recforge.models.hstu_match import AUTOREGRESSIVE_KEY, HSTUMatch
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import pipeline_pb2
from tests.helpers.hstu import FEATURES, MODEL

# the candidate is a one-element JAGGED_SEQUENCE under the history's embedding_name, so that
# history rows and candidate rows are rows of one table
AR_FEATURES = FEATURES + (
    'feature_configs { sequence_feature { sequence_name: "cand" sequence_length: 1'
    ' sequence_delim: "|" features { id_feature { feature_name: "video_id"'
    ' expression: "item:video_id" embedding_name: "video_emb" num_buckets: 100'
    " embedding_dim: 16 } } } }"
)
AR_MODEL = MODEL.replace(
    "in_batch_negative: true", "in_batch_negative: true autoregressive_loss: true"
).replace(
    'feature_names: "item_id" group_type: DEEP',
    'feature_names: "cand__video_id" group_type: JAGGED_SEQUENCE',
)


def build(model: str = AR_MODEL, features: str = AR_FEATURES) -> HSTUMatch:
    text = f'data_config {{ label_fields: "label" fg_mode: FG_DAG }} {features} {model}'
    cfg = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    return BaseModel.create_class("HSTUMatch")(cfg.model_config, features, ["label"])


def rows(histories: list[list[int]], targets: list[int]) -> pa.Table:
    return pa.table(
        {
            "uih__video_id": pa.array(["|".join(map(str, h)) for h in histories]),
            "uih__action_timestamp": pa.array(
                ["|".join(str(1_000_000 + 60 * i) for i in range(len(h))) for h in histories]
            ),
            "item_id": pa.array(targets, pa.int64()),
            "cand__video_id": pa.array([str(t) for t in targets]),
            "label": pa.array([1] * len(targets), pa.int64()),
        }
    )


def parse(model: HSTUMatch, table: pa.Table):
    return DataParser(model.features).parse_batch(table.to_batches()[0])


def test_every_event_gets_a_softmax_over_its_next_item_and_the_batch():
    model = build()
    b = parse(model, rows([[1, 2, 3], [4, 5], [6]], [7, 8, 9]))
    total, (losses, predictions, _) = TrainWrapper(model)(b)
    logits = predictions[AUTOREGRESSIVE_KEY]
    # 3 + 2 + 1 events; the positive first, then the 3 in-batch candidates
    assert logits.shape == (6, 4)
    # the last event of row 0 predicts its candidate 7, which is also in-batch column 0
    masked = torch.finfo(logits.dtype).min / 2
    assert logits[2, 1] < masked and logits[2, 2] > masked and logits[2, 3] > masked
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    assert torch.allclose(losses["softmax_cross_entropy"], expected)
    total.backward()
    table = model.embedding_group
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in table.parameters())


def test_a_history_item_equal_to_an_in_batch_candidate_is_masked_for_that_event():
    model = build()
    b = parse(model, rows([[1, 8, 3], [4, 5]], [7, 8]))
    _, (_, predictions, _) = TrainWrapper(model)(b)
    logits = predictions[AUTOREGRESSIVE_KEY]
    masked = torch.finfo(logits.dtype).min / 2
    # event 0 of row 0 (item 1) predicts item 8: row 1's candidate (column 2) is masked
    assert logits[0, 2] < masked and logits[0, 1] > masked


def test_eval_and_the_default_train_only_the_last_event():
    model = build()
    b = parse(model, rows([[1, 2, 3], [4, 5]], [7, 8]))
    model.eval()
    with torch.no_grad():
        assert AUTOREGRESSIVE_KEY not in model.predict(b)
    plain = build(MODEL)
    _, (_, predictions, _) = TrainWrapper(plain)(parse(plain, rows([[1, 2]], [3])))
    assert AUTOREGRESSIVE_KEY not in predictions


def test_an_item_tower_reading_more_than_the_shared_id_is_an_error():
    features = AR_FEATURES + (
        'feature_configs { id_feature { feature_name: "genre" expression: "item:genre"'
        " num_buckets: 10 embedding_dim: 16 } }"
    )
    model = AR_MODEL.replace(
        'feature_names: "cand__video_id"', 'feature_names: ["cand__video_id", "genre"]'
    )
    text = f'data_config {{ label_fields: "label" fg_mode: FG_DAG }} {features} {model}'
    cfg = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    feats = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    with pytest.raises(ConfigError, match="autoregressive_loss"):
        BaseModel.create_class("HSTUMatch")(cfg.model_config, feats, ["label"])


DEEP_AR_MODEL = AR_MODEL.replace(
    'feature_names: "cand__video_id" group_type: JAGGED_SEQUENCE',
    'feature_names: "item_id" group_type: DEEP',
)


def test_a_deep_candidate_under_the_history_embedding_name_is_a_row_of_the_same_table():
    model = build(DEEP_AR_MODEL)
    b = parse(model, rows([[7, 2], [3]], [7, 9]))
    grouped = model.embedding_group(b.sparse_features, b.dense_features)
    history = model.item_tower.tower(grouped["uih.sequence"])  # [3, D]: items 7, 2, 3
    candidates = model.item_tower(grouped)  # [2, D]: items 7, 9
    torch.testing.assert_close(history[0], candidates[0])


def test_a_candidate_with_a_table_of_its_own_is_an_error():
    # next items (history table) and negatives (candidate table) would be told apart by table
    features = AR_FEATURES.replace(
        'feature_name: "item_id" expression: "item:item_id"\n'
        '                               embedding_name: "video_emb"',
        'feature_name: "item_id" expression: "item:item_id"\n'
        '                               embedding_name: "cand_emb"',
    )
    assert features != AR_FEATURES
    with pytest.raises(ConfigError, match="one table") as err:
        build(DEEP_AR_MODEL, features)
    assert err.value.field == "model_config.hstu_match.autoregressive_loss"


def test_a_history_item_and_the_same_candidate_are_one_row_of_one_table():
    model = build()
    b = parse(model, rows([[7, 2], [3]], [7, 9]))
    grouped = model.embedding_group(b.sparse_features, b.dense_features)
    history = model.item_tower.tower(grouped["uih.sequence"])  # [3, D]: items 7, 2, 3
    candidates = model.item_tower(grouped)  # [2, D]: items 7, 9
    torch.testing.assert_close(history[0], candidates[0])
    assert not torch.allclose(history[1], candidates[0])
