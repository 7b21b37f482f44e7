"""dlrm_hstu with several candidates per row: jagged labels, every candidate scored, losses
and metrics over all candidates, label counts checked."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.datasets.jagged_labels import jagged_label_columns
from recforge.errors import DataError
from recforge.features import FG_DAG, create_features
from recforge.models.dlrm_hstu import NUM_CANDIDATES, DlrmHSTU
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import model_pb2, pipeline_pb2
from tests.helpers.dlrm_hstu import FEATURES, MODEL, planted_rank_table

LABELS = ["label_next", "label_hot"]


def config(model: str = MODEL) -> pipeline_pb2.EasyRecConfig:
    text = f"data_config {{ label_fields: {LABELS} fg_mode: FG_DAG }} {FEATURES} {model}"
    return text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())


def build() -> DlrmHSTU:
    torch.manual_seed(0)
    cfg = config()
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    return BaseModel.create_class("DlrmHSTU")(cfg.model_config, features, LABELS).eval()


def parser(model: DlrmHSTU, binary: tuple = ()) -> DataParser:
    return DataParser(
        model.features, LABELS, binary_labels=binary, jagged_labels=jagged_label_columns(config())
    )


def test_the_labels_of_a_jagged_candidate_group_are_jagged():
    assert jagged_label_columns(config()) == {"label_next": "|", "label_hot": "|"}
    deep = config()
    group = next(g for g in deep.model_config.feature_groups if g.group_name == "candidate")
    group.group_type = model_pb2.DEEP
    assert jagged_label_columns(deep) == {}


def test_jagged_labels_parse_strings_lists_and_numbers():
    model = build()
    rows = planted_rank_table(3, 0, max_candidates=3)
    parsed = parser(model).parse(rows.to_batches()[0])
    counts = [len(s.split("|")) for s in rows["cand__item_id"].to_pylist()]
    assert parsed["label.label_next.lengths"].tolist() == counts
    expected = [float(v) for s in rows["label_next"].to_pylist() for v in s.split("|")]
    assert parsed["label.label_next"].tolist() == expected
    as_lists = rows.set_column(
        4, "label_next", pa.array([[float(v) for v in s.split("|")] for s in rows[4].to_pylist()])
    )
    again = parser(model).parse(as_lists.to_batches()[0])
    torch.testing.assert_close(again["label.label_next"], parsed["label.label_next"])
    one = planted_rank_table(3, 0)  # numbers: one value per row
    single = parser(model).parse(one.to_batches()[0])
    assert single["label.label_hot.lengths"].tolist() == [1, 1, 1]


def test_bad_jagged_labels_name_their_row():
    model = build()
    rows = planted_rank_table(3, 0, max_candidates=3)
    bad = rows.set_column(5, "label_hot", pa.array(["0", "1|x", "1"]))
    with pytest.raises(DataError, match="label_hot"):
        parser(model).parse(bad.to_batches()[0])
    two = rows.set_column(5, "label_hot", pa.array(["0", "0|2", "1"]))
    with pytest.raises(DataError, match="labels 0 or 1, found 2 at row 1"):
        parser(model, ("label_hot",)).parse(two.to_batches()[0])


def test_every_candidate_is_scored_as_if_alone_and_trained_on():
    model = build()
    rows = planted_rank_table(4, 5, max_candidates=3)
    batch = parser(model).parse_batch(rows.to_batches()[0])
    with torch.no_grad():
        scores = model.predict(batch)
    counts = [len(s.split("|")) for s in rows["cand__item_id"].to_pylist()]
    assert max(counts) > 1
    assert scores[NUM_CANDIDATES].tolist() == counts
    assert scores["probs_next"].shape == (sum(counts),)
    # the same users with each candidate in a row of its own: the same scores
    alone = {c: [] for c in rows.column_names}
    for i in range(rows.num_rows):
        for j in range(counts[i]):
            for c in rows.column_names:
                value = rows[c][i].as_py()
                split = c.startswith(("cand__", "label_"))
                alone[c].append(value.split("|")[j] if split else value)
    table = pa.table(alone)
    with torch.no_grad():
        single = model.predict(parser(model).parse_batch(table.to_batches()[0]))
    torch.testing.assert_close(single["logits_next"], scores["logits_next"], atol=1e-5, rtol=0)
    model.train()
    total, (losses, predictions, _) = TrainWrapper(model)(batch)
    assert set(losses) == {"binary_cross_entropy_next", "binary_cross_entropy_hot"}
    assert torch.isfinite(total)
    model.eval()
    model.update_metric(predictions, batch)
    assert set(model.compute_metric()) >= {"auc_next", "auc_hot"}


def test_a_label_count_that_is_not_the_candidate_count_is_a_data_error():
    model = build()
    rows = planted_rank_table(3, 0, max_candidates=3)
    counts = [len(s.split("|")) for s in rows["cand__item_id"].to_pylist()]
    short = ["|".join(["1"] * (c + 1 if i == 2 else c)) for i, c in enumerate(counts)]
    bad = rows.set_column(4, "label_next", pa.array(short))
    batch = parser(model).parse_batch(bad.to_batches()[0])
    with pytest.raises(DataError, match=f"label_next': row 2 has {counts[2] + 1} values"):
        model.loss(model.predict(batch), batch)
    numbers = rows.set_column(4, "label_next", pa.array([1, 0, 1]))
    numbers = numbers.set_column(5, "label_hot", pa.array([1, 0, 1]))
    plain = DataParser(model.features, LABELS).parse_batch(numbers.to_batches()[0])
    with pytest.raises(DataError, match="one label per candidate"):
        model.loss(model.predict(plain), plain)


def test_newest_first_input_scores_as_its_oldest_first_twin():
    ascending = build()
    cfg = config()
    cfg.model_config.dlrm_hstu.sequence_timestamp_is_ascending = False
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    descending = BaseModel.create_class("DlrmHSTU")(cfg.model_config, features, LABELS).eval()
    rows = planted_rank_table(4, 5, max_candidates=3)
    flipped = rows
    for i, name in enumerate(rows.column_names[:4]):  # history and candidate columns
        values = ["|".join(v.split("|")[::-1]) for v in rows[name].to_pylist()]
        flipped = flipped.set_column(i, name, pa.array(values))
    with torch.no_grad():
        a = ascending.predict(parser(ascending).parse_batch(rows.to_batches()[0]))
        d = descending.predict(parser(descending).parse_batch(flipped.to_batches()[0]))
    counts = a[NUM_CANDIDATES].tolist()
    start = 0
    for n in counts:  # each row's candidates come back in the (newest first) input order
        torch.testing.assert_close(
            d["logits_next"][start : start + n], a["logits_next"][start : start + n].flip(0)
        )
        start += n
    with pytest.raises(AssertionError):  # the newest-first model does reverse its input
        torch.testing.assert_close(
            descending.predict(parser(descending).parse_batch(rows.to_batches()[0]))["logits_hot"],
            a["logits_hot"],
        )


def test_task_bitmask_learns_a_bit_of_the_action_label():
    model_text = MODEL.replace(
        'task_name: "next" label_name: "label_next"',
        'task_name: "next" label_name: "label_act" task_bitmask: 1',
    ).replace(
        'task_name: "hot" label_name: "label_hot"',
        'task_name: "hot" label_name: "label_act" task_bitmask: 6',
    )
    labels = ["label_act"]
    text = f"data_config {{ label_fields: {labels} fg_mode: FG_DAG }} {FEATURES} {model_text}"
    cfg = text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())
    torch.manual_seed(0)
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    model = BaseModel.create_class("DlrmHSTU")(cfg.model_config, features, labels).eval()
    rows = planted_rank_table(3, 0, max_candidates=3)
    counts = [len(s.split("|")) for s in rows["cand__item_id"].to_pylist()]
    actions = [[(i + j) % 8 for j in range(c)] for i, c in enumerate(counts)]
    rows = rows.append_column("label_act", pa.array(["|".join(map(str, a)) for a in actions]))
    parse = DataParser(model.features, labels, jagged_labels=jagged_label_columns(cfg))
    batch = parse.parse_batch(rows.to_batches()[0])
    with torch.no_grad():
        predictions = model.predict(batch)
        losses = model.loss(predictions, batch)
    flat = torch.tensor([a for row in actions for a in row])
    for task, mask in (("next", 1), ("hot", 6)):
        target = ((flat & mask) != 0).float()
        expected = torch.nn.functional.binary_cross_entropy_with_logits(
            predictions[f"logits_{task}"], target
        )
        torch.testing.assert_close(losses[f"binary_cross_entropy_{task}"], expected)
