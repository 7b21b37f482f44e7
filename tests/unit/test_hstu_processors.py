"""The HSTU pre/post-processors beyond the contextual preprocessor: the interleave
preprocessor, the timestamp layer-norm postprocessor, the parameterized contextualized MLP and
``stu.contextual_seq_len`` (TorchEasyRec's shapes: train, export, config errors)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.config.support import check_support
from recforge.datasets.data_parser import DataParser
from recforge.datasets.jagged_labels import jagged_label_columns
from recforge.export.scripting import random_inputs, script_tower
from recforge.features import FG_DAG, create_features
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.modules.gr.contextualized_mlp import ParameterizedContextualizedMLP
from recforge.modules.gr.jagged import jagged_bmm_add
from recforge.modules.gr.postprocessors import TimestampLayerNormPostprocessor
from recforge.modules.gr.stu import STULayer, STUStack
from recforge.modules.gr.targets import interleave_rows
from recforge.protos import pipeline_pb2
from tests.helpers import hstu as match_helpers
from tests.helpers.dlrm_hstu import (
    ACTION_ENCODER,
    assert_config_error_at,
    features,
    model,
    planted_rank_table,
)
from tests.helpers.scripted import assert_scripted_matches_eager

LABELS = ["label_action"]
ACTION_MODEL = model(actions=True)
ADDITIVE = "contextual_preprocessor {"
INTERLEAVE = "contextual_interleave_preprocessor {"
INTERLEAVE_MODEL = ACTION_MODEL.replace(ADDITIVE, INTERLEAVE)


def config(model_text: str) -> pipeline_pb2.EasyRecConfig:
    text = (
        f"data_config {{ label_fields: {LABELS} fg_mode: FG_DAG }}"
        f" {features(actions=True)} {model_text}"
    )
    return text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())


def build(model_text: str) -> Any:
    torch.manual_seed(0)
    cfg = config(model_text)
    assert check_support(cfg) == []
    return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))


def scores(model_: Any, rows: pa.Table) -> torch.Tensor:
    parser = DataParser(model_.features)
    with torch.no_grad():
        return model_.predict(parser.parse_batch(rows.to_batches()[0]))["logits_next"]


def shifted(rows: pa.Table, name: str, by: int) -> pa.Table:
    """``rows`` with every value of the "|"-joined column ``name`` plus ``by``."""
    values = ["|".join(str(int(v) + by) for v in s.split("|")) for s in rows[name].to_pylist()]
    return rows.set_column(rows.column_names.index(name), name, pa.array(values))


def train_step_and_export(model_text: str) -> Any:
    """Builds, trains one step (every gradient finite) and checks the export; the model."""
    cfg = config(model_text)
    model_ = build(model_text)
    parser = DataParser(model_.features, LABELS, jagged_labels=jagged_label_columns(cfg))
    rows = planted_rank_table(8, 0, max_candidates=3, actions=True)
    total, _ = TrainWrapper(model_)(parser.parse_batch(rows.to_batches()[0]))
    total.backward()
    grads = [p.grad for p in model_.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert_scripted_matches_eager(model_, planted_rank_table(6, 2, actions=True))
    return model_


def stu_input_rows(model_: Any, rows: pa.Table) -> int:
    """How many rows (tokens) the STU layers of ``model_`` get for ``rows``."""
    seen: list[int] = []
    stack = model_.transducer.stu
    run = stack.run

    def recording(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(x.shape[0])
        return run(x, *args, **kwargs)

    stack.run = recording
    try:
        scores(model_, rows)
    finally:
        del stack.run
    return seen[0]


# ---- 1. the interleave preprocessor ------------------------------------------------------------
def test_interleave_rows_puts_each_extra_row_after_its_row():
    values = torch.tensor([[1], [2], [3], [9], [4], [8]])  # sequences: 1 2 3 9 | 4 8
    offsets = torch.tensor([0, 4, 6])
    extra = torch.tensor([[-1], [-2], [-3], [-4]])  # 3 for the first, 1 for the second
    out, out_offsets = interleave_rows(values, offsets, extra, torch.tensor([0, 3, 4]))
    assert out.reshape(-1).tolist() == [1, -1, 2, -2, 3, -3, 9, 4, -4, 8]
    assert out_offsets.tolist() == [0, 7, 10]


@pytest.mark.parametrize(
    ("layer", "truncation"),
    [
        ({}, (0, 0)),
        ({"max_attn_len": 2}, (0, 0)),
        ({"sla_k1": 2, "sla_k2": 1}, (0, 0)),
        ({"contextual_seq_len": 1}, (0, 0)),
        ({}, (1, 2)),
    ],
)
def test_candidate_action_tokens_would_not_change_the_candidates_outputs(layer, truncation):
    """Why the transducer leaves out the candidates' action tokens TorchEasyRec adds in
    training: with them (each candidate's content row then its action row) the STU layers give
    every candidate's content row the same output as without them."""
    torch.manual_seed(0)
    stack = STUStack(
        [
            STULayer(8, 2, 4, 4, output_dropout_ratio=0.0, scaling_seqlen=16, **layer)
            for _ in range(2)
        ],
        *truncation,
        contextual_len=layer.get("contextual_seq_len", 0),
    ).eval()
    history, cands, actions = torch.randn(7, 8), torch.randn(3, 8), torch.randn(3, 8)
    # user 0: 4 history rows, 2 candidates; user 1: 3 history rows, 1 candidate
    without = torch.cat([history[:4], cands[:2], history[4:], cands[2:]])
    out, offsets = stack.run(without, torch.tensor([0, 6, 10]), 16, torch.tensor([2, 1]))
    pairs = torch.stack([cands, actions], dim=1).reshape(6, 8)  # c0 a0 c1 a1 c2 a2
    with_actions = torch.cat([history[:4], pairs[:4], history[4:], pairs[4:]])
    out_with, offsets_with = stack.run(
        with_actions, torch.tensor([0, 8, 13]), 16, torch.tensor([4, 2])
    )
    ends, ends_with = offsets[1:].tolist(), offsets_with[1:].tolist()
    cand_rows = [ends[0] - 2, ends[0] - 1, ends[1] - 1]
    content_rows = [ends_with[0] - 4, ends_with[0] - 2, ends_with[1] - 2]
    torch.testing.assert_close(out_with[content_rows], out[cand_rows])


def test_interleaving_doubles_the_history_tokens_only():
    rows = planted_rank_table(5, 1, max_candidates=3, actions=True)
    events = sum(len(s.split("|")) for s in rows["uih__video_id"].to_pylist())
    candidates = sum(len(s.split("|")) for s in rows["cand__item_id"].to_pylist())
    contextual = len(rows)  # one user_id token per row
    additive = build(ACTION_MODEL).eval()
    interleaved = build(INTERLEAVE_MODEL).eval()
    assert stu_input_rows(additive, rows) == events + candidates + contextual
    assert stu_input_rows(interleaved, rows) == 2 * events + candidates + contextual


def test_interleaving_changes_the_scores_and_false_is_the_additive_preprocessor():
    rows = planted_rank_table(6, 3, max_candidates=2, actions=True)
    additive = build(ACTION_MODEL).eval()
    interleaved = build(INTERLEAVE_MODEL).eval()
    # the same weights: the interleaved model lacks only the candidates' action row
    missing, unexpected = additive.load_state_dict(interleaved.state_dict(), strict=False)
    assert missing == ["transducer.action_encoder.candidate_embedding"] and not unexpected
    assert not torch.allclose(scores(additive, rows), scores(interleaved, rows), atol=1e-4)

    off = build(INTERLEAVE_MODEL.replace(INTERLEAVE, INTERLEAVE + " enable_interleaving: false"))
    off.load_state_dict(additive.state_dict())
    torch.testing.assert_close(scores(off.eval(), rows), scores(additive, rows))


def test_interleaved_action_tokens_reach_the_scores():
    rows = planted_rank_table(6, 4, actions=True)
    interleaved = build(INTERLEAVE_MODEL).eval()
    other = shifted(rows, "uih__action_weight", 1)
    assert not torch.allclose(scores(interleaved, rows), scores(interleaved, other), atol=1e-5)


def test_torcheasyrec_shaped_interleave_config_trains_and_exports():
    model_ = train_step_and_export(INTERLEAVE_MODEL)
    encoder = model_.transducer.action_encoder
    assert encoder.candidate_embedding is None  # the candidates have no action token
    assert encoder.embeddings.grad is not None and encoder.embeddings.grad.abs().sum() > 0


def test_interleaving_without_an_action_encoder_is_an_error_at_its_field():
    text = INTERLEAVE_MODEL.replace(ACTION_ENCODER, "")
    with pytest.raises(ConfigError, match="enable_interleaving") as info:
        build(text)
    assert "contextual_interleave_preprocessor.action_encoder" in str(info.value)
    # without interleaving the action encoder is optional, as in contextual_preprocessor
    build(text.replace(INTERLEAVE, INTERLEAVE + " enable_interleaving: false"))


# ---- 3. the timestamp layer-norm postprocessor -------------------------------------------------
LAYERNORM = "output_postprocessor { layernorm_postprocessor { } }"
HOUR_OF_DAY = (
    "output_postprocessor { timestamp_layernorm_postprocessor {"
    " time_duration_period_units: [3600] time_duration_units_per_period: [24] } }"
)
#: time reaches the scores only through the postprocessor: no time encoding
UNTIMED_MODEL = ACTION_MODEL.replace("use_time_encoding: true", "use_time_encoding: false")
TIMESTAMP_MODEL = UNTIMED_MODEL.replace(LAYERNORM, HOUR_OF_DAY)


def test_timestamp_postprocessor_reads_the_phase_of_each_period():
    torch.manual_seed(0)
    post = TimestampLayerNormPostprocessor(8, [3600, 86400], [24, 7])
    x = torch.randn(1, 8).expand(5, 8)
    day, week = 86400.0, 7 * 86400.0
    t = torch.tensor([1000.0, 1000.0 + 3600, 1000.0 + 59, 1000.0 + week, 1000.0 + day])
    out = post(x, t)
    torch.testing.assert_close(out[0], out[2])  # the same hour
    torch.testing.assert_close(out[0], out[3])  # a week later: both phases repeat
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # another hour of the day
    assert not torch.allclose(out[0], out[4], atol=1e-4)  # another day of the week
    with pytest.raises(ValueError, match="same length"):
        TimestampLayerNormPostprocessor(8, [3600], [24, 7])


def test_the_candidate_timestamps_reach_the_scores_only_through_the_postprocessor(caplog):
    rows = planted_rank_table(6, 5, max_candidates=2, actions=True)
    later = shifted(rows, "cand__item_ts", 3 * 3600)
    stamped = build(TIMESTAMP_MODEL).eval()
    assert not torch.allclose(scores(stamped, rows), scores(stamped, later), atol=1e-4)
    with caplog.at_level("WARNING"):
        plain = build(UNTIMED_MODEL).eval()
    assert "does not read feature group 'candidate_timestamp'" in caplog.text
    torch.testing.assert_close(scores(plain, rows), scores(plain, later))


def test_torcheasyrec_shaped_timestamp_postprocessor_config_trains_and_exports():
    model_ = train_step_and_export(ACTION_MODEL.replace(LAYERNORM, HOUR_OF_DAY))
    assert model_.transducer.timestamp_norm is not None
    assert model_.transducer.timestamp_norm.combine.weight.grad is not None


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (
            "time_duration_units_per_period: [24]",
            "time_duration_units_per_period: [24, 7]",
            "timestamp_layernorm_postprocessor.time_duration_units_per_period",
            "one value per",
        ),
        (
            "time_duration_period_units: [3600]",
            "time_duration_period_units: [0]",
            "timestamp_layernorm_postprocessor.time_duration_period_units",
            "> 0",
        ),
        (
            'group_name: "candidate_timestamp"',
            'group_name: "cand_ts"',
            "dlrm_hstu.hstu.output_postprocessor",
            "'candidate_timestamp'",
        ),
    ],
)
def test_bad_timestamp_postprocessor_config_is_an_error_at_its_field(old, new, field, message):
    assert_config_error_at(build, TIMESTAMP_MODEL, old, new, field, message)


def match_config(model_text: str) -> pipeline_pb2.EasyRecConfig:
    text = f'data_config {{ label_fields: "label" fg_mode: FG_DAG }} {match_helpers.FEATURES}'
    return text_format.Parse(f"{text} {model_text}", pipeline_pb2.EasyRecConfig())


def build_match(cfg: pipeline_pb2.EasyRecConfig) -> Any:
    torch.manual_seed(0)
    assert check_support(cfg) == []
    return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))


def user_embeddings(model_: Any, rows: pa.Table) -> torch.Tensor:
    with torch.no_grad():
        return model_.predict(DataParser(model_.features).parse_batch(rows.to_batches()[0]))[
            "user_emb"
        ]


#: hstu_match with time only in the postprocessor (TorchEasyRec's HSTUMatchEncoder passes it
#: every event's timestamp), and with attention truncation after the first layer
MATCH_TIMESTAMP_MODEL = match_helpers.MODEL.replace(
    "output_postprocessor { l2norm_postprocessor { } }", HOUR_OF_DAY
).replace("use_time_encoding: true", "use_time_encoding: false")


@pytest.mark.parametrize(
    "truncation", ["", "attn_truncation_split_layer: 1 attn_truncation_tail_len: 4"]
)
def test_hstu_match_norms_each_event_with_its_timestamp(truncation):
    text = MATCH_TIMESTAMP_MODEL.replace("attn_num_layers: 2", f"attn_num_layers: 2 {truncation}")
    assert text.count("timestamp_layernorm_postprocessor") == 1
    model_ = build_match(match_config(text))
    rows = match_helpers.planted_table(6, 4)
    b = DataParser(model_.features, ["label"]).parse_batch(rows.to_batches()[0])
    total, _ = TrainWrapper(model_)(b)
    total.backward()
    assert model_.user_tower.encoder.timestamp_norm.combine.weight.grad.abs().sum() > 0
    model_.eval()
    base = user_embeddings(model_, rows)
    # the hour of day moves the embeddings, a whole day later is the same hour
    hours = shifted(rows, "uih__action_timestamp", 3 * 3600)
    days = shifted(rows, "uih__action_timestamp", 2 * 86400)
    assert not torch.allclose(base, user_embeddings(model_, hours), atol=1e-4)
    torch.testing.assert_close(user_embeddings(model_, days), base)
    scripted, wrapper = script_tower(model_, "user")
    data = random_inputs(model_.tower_features("user"), 4)
    with torch.no_grad():
        torch.testing.assert_close(scripted(data)["user_emb"], wrapper(data)["user_emb"])


def test_hstu_match_s_timestamp_postprocessor_needs_the_timestamp_group():
    cfg = match_config(MATCH_TIMESTAMP_MODEL)
    del cfg.model_config.feature_groups[1]  # uih_timestamp
    with pytest.raises(ConfigError, match="'uih_timestamp'") as info:
        build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))
    assert info.value.field == "model_config.hstu_match.user_tower.hstu.output_postprocessor"


# ---- 2. the parameterized contextualized MLP ---------------------------------------------------
SIMPLE_CONTENT = "content_mlp { simple_mlp { hidden_dim: 16 } }"
PARAMETERIZED_CONTENT = "content_mlp { parameterized_mlp { hidden_dim: 16 } }"
SIMPLE_ACTION = "action_mlp { simple_mlp { hidden_dim: 16 } }"
PARAMETERIZED_ACTION = "action_mlp { parameterized_mlp { hidden_dim: 8 } }"
PARAMETERIZED_MODEL = ACTION_MODEL.replace(SIMPLE_CONTENT, PARAMETERIZED_CONTENT).replace(
    SIMPLE_ACTION, PARAMETERIZED_ACTION
)


def test_jagged_bmm_add_uses_each_sequence_s_matrix():
    torch.manual_seed(0)
    values, offsets = torch.randn(5, 3), torch.tensor([0, 2, 2, 5])
    weights, bias = torch.randn(3, 3, 4), torch.randn(3, 4)
    out = jagged_bmm_add(values, offsets, weights, bias)
    seq = [0, 0, 2, 2, 2]
    expected = torch.stack([values[i] @ weights[b] + bias[b] for i, b in enumerate(seq)])
    torch.testing.assert_close(out, expected)


def test_the_context_makes_the_map():
    torch.manual_seed(0)
    mlp = ParameterizedContextualizedMLP(4, 3, 6, hidden_dim=5).eval()
    row = torch.randn(1, 3)
    x, offsets = row.expand(4, 3), torch.tensor([0, 2, 4])  # two users, the same rows
    same = mlp(x, offsets, torch.randn(1, 4).expand(2, 4))
    torch.testing.assert_close(same[0], same[3])
    other = mlp(x, offsets, torch.randn(2, 4))
    torch.testing.assert_close(other[0], other[1])  # one user's rows share one map
    assert not torch.allclose(other[0], other[3], atol=1e-4)  # each user's context its own
    # the map is the layer-normed generated matrix plus the generated bias
    shared = mlp.compress(torch.ones(1, 4))
    weight = mlp.weight_norm(mlp.weight_generator(shared).reshape(1, 3, 6))[0]
    expected = row @ weight + mlp.bias_generator(shared)
    torch.testing.assert_close(mlp(row, torch.tensor([0, 1]), torch.ones(1, 4)), expected)
    # the contextual dropout acts in training only
    mlp.train()
    assert not torch.allclose(mlp(x, offsets, torch.ones(2, 4)), mlp(x, offsets, torch.ones(2, 4)))


def test_torcheasyrec_shaped_parameterized_mlp_config_trains_and_exports():
    for text in (PARAMETERIZED_MODEL, PARAMETERIZED_MODEL.replace(ADDITIVE, INTERLEAVE)):
        model_ = train_step_and_export(text)
        for mlp in (model_.transducer.content_mlp, model_.transducer.action_mlp):
            assert isinstance(mlp, ParameterizedContextualizedMLP)
            assert mlp.compress.weight.grad is not None and mlp.compress.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (
            'group_name: "contextual"',
            'group_name: "ctx"',
            "contextual_preprocessor.content_mlp.parameterized_mlp",
            "'contextual'",
        ),
        (
            "parameterized_mlp { hidden_dim: 8 }",
            "parameterized_mlp { hidden_dim: 0 }",
            "contextual_preprocessor.action_mlp.parameterized_mlp.hidden_dim",
            "> 0",
        ),
    ],
)
def test_bad_parameterized_mlp_config_is_an_error_at_its_field(old, new, field, message):
    assert_config_error_at(build, PARAMETERIZED_MODEL, old, new, field, message)


def test_hstu_match_takes_a_parameterized_action_mlp():
    text = match_helpers.TZREC_SHAPE.replace(
        "action_mlp { simple_mlp { hidden_dim: 16 } }", PARAMETERIZED_ACTION
    ).replace("temperature: 0.05", "temperature: 0.05 in_batch_negative: true")  # a loss to learn
    assert text.count(PARAMETERIZED_ACTION) == text.count("in_batch_negative") == 1
    cfg = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    model_ = build_match(cfg)
    encoder = model_.user_tower.encoder
    assert isinstance(encoder.action_mlp, ParameterizedContextualizedMLP)
    rows = match_helpers.tzrec_shape_rows()
    b = DataParser(model_.features, ["cand_seq__action_weight"]).parse_batch(rows.to_batches()[0])
    total, _ = TrainWrapper(model_)(b)
    total.backward()
    assert encoder.action_mlp.compress.weight.grad.abs().sum() > 0  # the context reaches it
    model_.eval()
    # the user's context makes the action map: user 1 -> 5 changes the first user's embedding
    base = user_embeddings(model_, rows)
    other = user_embeddings(model_, rows.set_column(0, "user_id", pa.array([5, 2, 3])))
    assert not torch.allclose(base[0], other[0], atol=1e-5)
    torch.testing.assert_close(base[1:], other[1:])
    script_tower(model_, "user")  # raises if the scripted tower differs from eager


# ---- 4. stu.contextual_seq_len -----------------------------------------------------------------
def with_contextual_seq_len(text: str, value: int) -> str:
    stu = "output_dropout_ratio: 0.0"
    assert text.count(stu) == 1
    return text.replace(stu, f"{stu} contextual_seq_len: {value}")


def build_plain(model_text: str) -> Any:
    """A model of the config without actions and without the ``contextual`` group."""
    labels = ["label_next", "label_hot"]
    text = f"data_config {{ label_fields: {labels} fg_mode: FG_DAG }} {features()} {model_text}"
    cfg = text_format.Parse(text.replace("'", '"'), pipeline_pb2.EasyRecConfig())
    return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))


def test_a_contextual_seq_len_equal_to_the_group_s_tokens_is_accepted():
    rows = planted_rank_table(5, 6, actions=True)
    unset = build(ACTION_MODEL).eval()
    restated = build(with_contextual_seq_len(ACTION_MODEL, 1)).eval()  # user_id: one token
    restated.load_state_dict(unset.state_dict())
    torch.testing.assert_close(scores(restated, rows), scores(unset, rows))
    build(with_contextual_seq_len(ACTION_MODEL, -1))  # TorchEasyRec's "unset"
    build_plain(with_contextual_seq_len(model(), 0))  # no contextual group: no tokens


@pytest.mark.parametrize(("plain", "value", "tokens"), [(False, 0, 1), (False, 2, 1), (True, 1, 0)])
def test_a_contextual_seq_len_other_than_the_group_s_is_an_error_at_its_field(plain, value, tokens):
    with pytest.raises(ConfigError, match=f"{tokens} here") as info:
        if plain:
            build_plain(with_contextual_seq_len(model(), value))
        else:
            build(with_contextual_seq_len(ACTION_MODEL, value))
    assert "dlrm_hstu.hstu.stu.contextual_seq_len" in str(info.value)


def test_hstu_match_checks_the_contextual_seq_len_too():
    text = match_helpers.MODEL.replace("num_heads:", "contextual_seq_len: 2 num_heads:", 1)
    assert text != match_helpers.MODEL
    cfg = text_format.Parse(
        f"data_config {{ fg_mode: FG_DAG }} {match_helpers.FEATURES} {text}",
        pipeline_pb2.EasyRecConfig(),
    )
    with pytest.raises(ConfigError, match="stu.contextual_seq_len") as info:
        build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))
    assert "hstu_match.user_tower.hstu" in str(info.value)


def test_all_four_together_in_a_torcheasyrec_shaped_config_train_and_export():
    text = with_contextual_seq_len(PARAMETERIZED_MODEL, 1).replace(ADDITIVE, INTERLEAVE)
    model_ = train_step_and_export(text.replace(LAYERNORM, HOUR_OF_DAY))
    assert model_.transducer.timestamp_norm is not None
    assert model_.transducer.action_encoder.candidate_embedding is None


def test_ultra_hstu_channels_take_the_interleave_preprocessor_and_contextual_seq_len():
    from tests.helpers.ultra_hstu import TWO_CHANNEL_FEATURES, TWO_CHANNEL_MODEL, two_channel_table

    labels = ["label_next", "label_hot"]
    view = TWO_CHANNEL_MODEL.index('\n      name: "uih_view"')  # the channel, not the group
    at = TWO_CHANNEL_MODEL.index(ADDITIVE, view)
    text = (
        TWO_CHANNEL_MODEL[:at]
        + INTERLEAVE
        + ACTION_ENCODER
        + TWO_CHANNEL_MODEL[at + len(ADDITIVE) :]
    )
    # two contextual features: two tokens in each channel
    text = text.replace("use_group_norm: true", "use_group_norm: true contextual_seq_len: 2")

    def ultra(model_text: str) -> Any:
        full = f"data_config {{ label_fields: {labels} fg_mode: FG_DAG }}"
        full += f" {TWO_CHANNEL_FEATURES} {model_text}"
        cfg = text_format.Parse(full.replace("'", '"'), pipeline_pb2.EasyRecConfig())
        assert check_support(cfg) == []
        torch.manual_seed(0)
        return build_model(cfg, create_features(cfg.feature_configs, fg_mode=FG_DAG))

    model_ = ultra(text).eval()
    channels = model_.transducer.transducers
    assert [t._interleave for t in channels] == [False, True]
    parser = DataParser(model_.features, labels)
    with torch.no_grad():
        out = model_.predict(parser.parse_batch(two_channel_table(4, 1).to_batches()[0]))
    assert torch.isfinite(out["logits_next"]).all()

    last = text.rindex("contextual_seq_len: 2")
    with pytest.raises(ConfigError, match="2 here") as info:
        ultra(text[:last] + "contextual_seq_len: 3" + text[last + len("contextual_seq_len: 2") :])
    assert "ultra_hstu.hstu[1].stu.contextual_seq_len" in str(info.value)
