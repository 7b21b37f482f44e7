"""dlrm_hstu / ultra_hstu action encoder: the history's actions reach the scores, the
watch-time bit, TorchEasyRec's documented config shape (train, export), config errors."""

from __future__ import annotations

import logging
import re

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.config.support import check_support
from recforge.datasets.data_parser import DataParser
from recforge.datasets.jagged_labels import NUM_CANDIDATES, jagged_label_columns
from recforge.features import FG_DAG, create_features
from recforge.models.dlrm_hstu import DlrmHSTU
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.modules.gr.action_encoder import SimpleActionEncoder
from recforge.protos import pipeline_pb2
from tests.helpers.dlrm_hstu import (
    ACTION_ENCODER,
    assert_config_error_at,
    features,
    model,
    planted_rank_table,
)
from tests.helpers.scripted import assert_scripted_matches_eager
from tests.helpers.ultra_hstu import TWO_CHANNEL_FEATURES, TWO_CHANNEL_MODEL, two_channel_table

LABELS = ["label_action"]
ACTION_MODEL = model(actions=True)
#: the actions model with a watch-time action type: 50 or more sets bit 4
WATCH_MODEL = ACTION_MODEL.replace(
    "action_weights: [1, 2]",
    "action_weights: [1, 2] watchtime_to_action_thresholds: [50] watchtime_to_action_weights: [4]",
)


def config(
    model_text: str = ACTION_MODEL, labels: list[str] = LABELS
) -> pipeline_pb2.EasyRecConfig:
    text = (
        f"data_config {{ label_fields: {labels} fg_mode: FG_DAG }}"
        f" {features(actions=True)} {model_text}"
    )
    return text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())


def build(cfg: pipeline_pb2.EasyRecConfig):
    torch.manual_seed(0)
    return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))


def scores(model, rows: pa.Table, labels: list[str] = LABELS) -> torch.Tensor:
    parser = DataParser(model.features, labels)
    with torch.no_grad():
        return model.predict(parser.parse_batch(rows.to_batches()[0]))["logits_next"]


def with_column(rows: pa.Table, name: str, values: list[str]) -> pa.Table:
    return rows.set_column(rows.column_names.index(name), name, pa.array(values))


def shifted(rows: pa.Table, name: str, by: int) -> pa.Table:
    """``rows`` with every value of the "|"-joined column ``name`` plus ``by``."""
    values = ["|".join(str(int(v) + by) for v in s.split("|")) for s in rows[name].to_pylist()]
    return with_column(rows, name, values)


def test_the_watchtime_threshold_sets_its_bit():
    torch.manual_seed(0)
    enc = SimpleActionEncoder(2, [1, 2], [50], [4], candidate_row=True)
    actions = torch.tensor([0, 1, 0, 4, 2])
    watch = torch.tensor([10.0, 49.0, 50.0, 0.0, 80.0])
    out = enc(actions, watch).reshape(5, 3, 2)  # [events, action types, dim]
    on = (out != 0).any(-1)
    assert on.tolist() == [
        [False, False, False],
        [True, False, False],
        [False, False, True],  # watched 50: the threshold's bit 4 (its own embedding)
        [False, False, True],  # the bit given directly counts the same
        [False, True, True],
    ]
    torch.testing.assert_close(out[2, 2], enc.embeddings[2])
    cand = enc.candidate_rows(torch.zeros(3, 7))
    assert cand.shape == (3, 6) and torch.equal(cand[0], cand[2])


def test_torcheasyrec_shaped_config_trains_and_exports():
    cfg = config()
    assert check_support(cfg) == []
    model = build(cfg)
    assert isinstance(model, DlrmHSTU) and model.transducer.action_encoder is not None
    parser = DataParser(model.features, LABELS, jagged_labels=jagged_label_columns(cfg))
    rows = planted_rank_table(8, 0, max_candidates=3, actions=True)
    total, (losses, predictions, _) = TrainWrapper(model)(parser.parse_batch(rows.to_batches()[0]))
    total.backward()
    assert set(losses) == {"binary_cross_entropy_next", "binary_cross_entropy_hot"}
    assert predictions["probs_next"].shape == (int(predictions[NUM_CANDIDATES].sum()),)
    encoder = model.transducer.action_encoder
    assert encoder.embeddings.grad is not None and encoder.embeddings.grad.abs().sum() > 0
    assert encoder.candidate_embedding is not None
    assert encoder.candidate_embedding.grad is not None
    assert encoder.candidate_embedding.grad.abs().sum() > 0

    assert_scripted_matches_eager(model, planted_rank_table(6, 2, actions=True))


def test_the_actions_change_the_scores_only_with_an_action_encoder(caplog):
    rows = planted_rank_table(6, 3, actions=True)
    other = shifted(rows, "uih__action_weight", 1)
    with_encoder = build(config()).eval()
    assert not torch.allclose(scores(with_encoder, rows), scores(with_encoder, other), atol=1e-5)
    with caplog.at_level(logging.WARNING):
        without = build(config(ACTION_MODEL.replace(ACTION_ENCODER, ""))).eval()
    assert "does not read feature group 'uih_action'" in caplog.text
    torch.testing.assert_close(scores(without, rows), scores(without, other))


def test_the_watchtime_reaches_the_scores_through_its_threshold(caplog):
    with caplog.at_level(logging.WARNING):
        model_ = build(config(WATCH_MODEL)).eval()
    assert "does not read" not in caplog.text
    rows = planted_rank_table(6, 4, actions=True)
    n = [len(s.split("|")) for s in rows["uih__watch_time"].to_pylist()]
    low = with_column(rows, "uih__watch_time", ["|".join(["10"] * k) for k in n])
    lower = with_column(rows, "uih__watch_time", ["|".join(["49"] * k) for k in n])
    high = with_column(rows, "uih__watch_time", ["|".join(["50"] * k) for k in n])
    torch.testing.assert_close(scores(model_, low), scores(model_, lower))  # both below 50
    assert not torch.allclose(scores(model_, low), scores(model_, high), atol=1e-5)


def test_newest_first_actions_are_reversed_with_the_history():
    ascending = build(config(WATCH_MODEL)).eval()
    cfg = config(WATCH_MODEL)
    cfg.model_config.dlrm_hstu.sequence_timestamp_is_ascending = False
    descending = build(cfg).eval()
    rows = planted_rank_table(4, 5, actions=True)
    flipped = rows
    for name in ("uih__video_id", "uih__action_timestamp", "uih__action_weight", "uih__watch_time"):
        flipped = with_column(
            flipped, name, ["|".join(v.split("|")[::-1]) for v in rows[name].to_pylist()]
        )
    torch.testing.assert_close(scores(descending, flipped), scores(ascending, rows))


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (
            "action_mlp { simple_mlp { hidden_dim: 16 } }",
            "",
            "dlrm_hstu.hstu.input_preprocessor.contextual_preprocessor.action_mlp",
            "action_mlp",
        ),
        (
            'group_name: "uih_action"',
            'group_name: "actions"',
            "dlrm_hstu.hstu.input_preprocessor.contextual_preprocessor.action_encoder",
            "'uih_action'",
        ),
        (
            ACTION_ENCODER,
            "action_mlp { simple_mlp { hidden_dim: 16 } }",
            "dlrm_hstu.hstu.input_preprocessor.contextual_preprocessor.action_mlp",
            "action_encoder",
        ),
    ],
)
def test_bad_action_config_is_an_error_at_its_field(old, new, field, message):
    assert_config_error_at(lambda text: build(config(text)), ACTION_MODEL, old, new, field, message)


def test_watchtime_thresholds_need_the_watchtime_group():
    text = WATCH_MODEL.replace('group_name: "uih_watchtime"', 'group_name: "watch"')
    with pytest.raises(ConfigError, match="'uih_watchtime'") as info:
        build(config(text))
    assert "contextual_preprocessor.action_encoder" in str(info.value)


# ---- ultra_hstu: each channel reads its own <name>_action group --------------------------------
def ultra(encoder_in: str):
    """The two-channel model with an action encoder in channel ``encoder_in`` only."""
    match = re.search(rf'\bname: "{encoder_in}"', TWO_CHANNEL_MODEL)
    assert match is not None
    channel = match.start()
    at = TWO_CHANNEL_MODEL.index("contextual_preprocessor {", channel) + len(
        "contextual_preprocessor {"
    )
    text = TWO_CHANNEL_MODEL[:at] + ACTION_ENCODER + TWO_CHANNEL_MODEL[at:]
    labels = ["label_next", "label_hot"]
    full = f"data_config {{ label_fields: {labels} fg_mode: FG_DAG }} {TWO_CHANNEL_FEATURES} {text}"
    return build(text_format.Parse(full.replace("'", '"'), pipeline_pb2.EasyRecConfig())).eval()


def test_each_ultra_channel_reads_its_own_actions(caplog):
    labels = ["label_next", "label_hot"]
    with caplog.at_level(logging.WARNING):
        model_ = ultra("uih_view")
    assert "'uih_view_action'" not in caplog.text and "'uih_view_watchtime'" not in caplog.text
    assert "'uih_click_action'" in caplog.text
    rows = two_channel_table(4, 2)
    base = scores(model_, rows, labels)
    view = scores(model_, shifted(rows, "view_seq__action_weight", 1), labels)
    click = scores(model_, shifted(rows, "click_seq__action_weight", 1), labels)
    assert not torch.allclose(base, view, atol=1e-5)
    torch.testing.assert_close(base, click)  # the click channel has no action encoder
