"""MIND: capsule routing, squash, label-aware attention, towers, retrieval and config errors."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from recforge.config import ConfigError
from recforge.export.scripting import random_inputs, script_tower
from recforge.features import create_features
from recforge.models.mind import MIND, label_aware_attention
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.capsule import CapsuleLayer, squash
from recforge.protos import module_pb2
from recforge.retrieval import _top_k
from tests.helpers.export_util import model_config
from tests.helpers.models import make_batch


def capsule(input_len: int = 6, **fields) -> CapsuleLayer:
    config = module_pb2.B2ICapsule(max_k=4, max_seq_len=6, high_dim=5, num_iters=3)
    for name, value in fields.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    return CapsuleLayer(config, input_dim=3, input_len=input_len)


def mind(**edits) -> MIND:
    config = model_config("MIND")
    for path, value in edits.items():
        message = config.model_config.mind
        *parents, leaf = path.split(".")
        for name in parents:
            message = getattr(message, name)
        setattr(message, leaf, value)
    features = create_features(config.feature_configs)
    return BaseModel.create_class("MIND")(config.model_config, features, ["label"])


# ---- the capsule layer ------------------------------------------------------------------------
def test_routing_shapes_and_interest_counts():
    layer = capsule().eval()
    lengths = torch.tensor([0, 1, 2, 5, 6])
    interests, mask = layer(torch.randn(5, 6, 3), lengths)
    assert interests.shape == (5, 4, 5) and mask.shape == (5, 4)
    # max(1, min(max_k, log2 n)) interests, rounded up: 0, 1, 2 -> 1; 5 -> 3; 6 -> 3
    assert mask.sum(1).tolist() == [1, 1, 1, 3, 3]
    assert (interests[~mask] == 0).all()
    assert (interests[mask].norm(dim=1) > 0)[1:].all()  # a user without behaviours: zero
    const = capsule(const_caps_num=True).eval()
    assert const(torch.randn(5, 6, 3), lengths)[1].all()


def test_padded_positions_do_not_change_the_interests():
    layer = capsule().eval()
    lengths = torch.tensor([2, 4, 6])
    sequence = torch.randn(3, 6, 3)
    noisy = sequence.clone()
    for row, n in enumerate(lengths.tolist()):
        noisy[row, n:] = torch.randn(6 - n, 3) * 100
    expected, _ = layer(sequence, lengths)
    torch.testing.assert_close(layer(noisy, lengths)[0], expected)
    # in training (fresh random routing logits), the same draw gives the same interests too
    layer.train()
    torch.manual_seed(3)
    trained, _ = layer(sequence, lengths)
    torch.manual_seed(3)
    torch.testing.assert_close(layer(noisy, lengths)[0], trained)


def test_sequences_are_cut_or_padded_to_max_seq_len():
    sequence, lengths = torch.randn(2, 6, 3), torch.tensor([6, 3])
    full = capsule(input_len=6).eval()
    longer = capsule(input_len=9).eval()  # the same seed: the same weights
    padded = torch.cat([sequence, torch.randn(2, 3, 3)], dim=1)  # positions 6.. are cut off
    torch.testing.assert_close(longer(padded, lengths)[0], full(sequence, lengths)[0])
    shorter = capsule(input_len=4).eval()
    short = sequence[:, :4].clone()
    short_lengths = torch.tensor([4, 3])
    zero_tail = torch.cat([short, torch.zeros(2, 2, 3)], dim=1)
    torch.testing.assert_close(shorter(short, short_lengths)[0], full(zero_tail, short_lengths)[0])


def test_eval_routing_is_deterministic_and_training_routing_is_drawn_per_batch():
    layer = capsule()
    sequence, lengths = torch.randn(4, 6, 3), torch.tensor([6, 6, 5, 6])
    layer.eval()
    torch.testing.assert_close(layer(sequence, lengths)[0], layer(sequence, lengths)[0])
    layer.train()
    assert not torch.allclose(layer(sequence, lengths)[0], layer(sequence, lengths)[0])
    assert "eval_routing_logits" in layer.state_dict()  # the fixed draw travels with the model


def test_zeros_routing_init_gives_identical_interests():
    layer = capsule(routing_init_method="zeros", const_caps_num=True).train()
    interests, _ = layer(torch.randn(2, 6, 3), torch.tensor([6, 6]))
    torch.testing.assert_close(interests[:, 0], interests[:, 3])


def test_only_the_last_routing_iteration_passes_gradients_to_the_behaviours():
    layer = capsule().eval()
    sequence = torch.randn(2, 6, 3, requires_grad=True)
    interests, _ = layer(sequence, torch.tensor([6, 4]))
    interests.sum().backward()
    assert sequence.grad is not None and layer.bilinear.grad is not None
    assert (sequence.grad[1, 4:] == 0).all()  # padded behaviours get no gradient


def test_squash_keeps_the_direction_and_maps_the_length():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]])
    out = squash(x)
    norms = out.norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([25 / 26, 0.0, 0.25 / 1.25]))
    torch.testing.assert_close(F.normalize(out[[0, 2]], dim=1), F.normalize(x[[0, 2]], dim=1))
    softer = squash(x, power=0.2).norm(dim=1)
    assert softer[2] > norms[2] and softer[0] < 1  # a power < 1 shrinks short vectors less


# ---- label-aware attention ----------------------------------------------------------------
def test_label_aware_attention_picks_the_interest_closest_to_the_target():
    interests = F.normalize(torch.randn(3, 4, 6), dim=-1)
    mask = torch.ones(3, 4, dtype=torch.bool)
    target = interests[torch.arange(3), torch.tensor([2, 0, 3])] + 0.05 * torch.randn(3, 6)
    pooled = label_aware_attention(interests, target, mask, simi_pow=200.0)
    expected = interests[torch.arange(3), torch.tensor([2, 0, 3])]
    torch.testing.assert_close(pooled, expected, atol=1e-3, rtol=0)
    # a small power averages; a masked interest never counts, however close
    flat = label_aware_attention(interests, target, mask, simi_pow=1e-6)
    torch.testing.assert_close(flat, interests.mean(1), atol=1e-4, rtol=0)
    mask[0, 2] = False
    pooled = label_aware_attention(interests, target, mask, simi_pow=200.0)
    assert not torch.allclose(pooled[0], expected[0], atol=1e-2)


def test_training_scores_the_user_by_its_interests_pooled_towards_the_positive():
    model = mind()
    batch = make_batch()
    total, (_, predictions, _) = TrainWrapper(model)(batch)
    total.backward()
    interests, item = predictions["user_interests"], predictions["item_emb"]
    assert interests.shape == (6, 3, 8) and predictions["similarity"].shape == (6, 6)
    torch.testing.assert_close(item.norm(dim=1), torch.ones(6))  # COSINE by default
    mask = interests.abs().amax(dim=2) > 0
    expected = label_aware_attention(interests, item, mask, 10.0)
    torch.testing.assert_close(predictions["user_emb"], expected)
    torch.testing.assert_close(predictions["similarity"], expected @ item.t() / 0.5)
    assert model.user_tower.capsule.bilinear.grad is not None


# ---- towers and export ------------------------------------------------------------------------
def test_scripted_towers_equal_eager_and_the_user_tower_outputs_the_interests():
    model = mind().eval()
    for side in ("user", "item"):
        scripted, wrapper = script_tower(model, side)
        data = random_inputs(model.tower_features(side), 7)
        with torch.no_grad():
            eager, script = wrapper(data)[f"{side}_emb"], scripted(data)[f"{side}_emb"]
        torch.testing.assert_close(script, eager)
        assert eager.shape == ((7, 3, 8) if side == "user" else (7, 8))
    # the user tower reads the user and history groups, and equals the model's interests
    names = [f.name for f in model.tower_features("user")]
    assert names == ["user", "price", "tag_seq"]
    batch = make_batch()
    with torch.no_grad():
        interests = model.predict(batch)["user_interests"]
        tower = model.tower_module("user")(batch)
    torch.testing.assert_close(tower, interests)


# ---- retrieval ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_retrieval_scores_an_item_by_the_best_real_interest(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    users = F.normalize(torch.randn(5, 3, 4, generator=g), dim=-1)
    users[1, 2] = 0  # a masked interest: never scores (0 would beat negative scores)
    users[3, 1:] = 0
    items = F.normalize(torch.randn(30, 4, generator=g), dim=-1)
    excluded = [np.empty(0, dtype=np.int64)] * 4 + [np.array([0, 5])]
    top = _top_k(users, items, 6, excluded, backend)
    for u in range(5):
        real = users[u][users[u].abs().amax(dim=1) > 0]
        scores = (real @ items.t()).amax(dim=0)
        scores[torch.from_numpy(excluded[u])] = -torch.inf
        assert top[u].tolist() == scores.topk(6).indices.tolist()
    single = users[:, 0]  # one embedding per user (DSSM): plain inner products
    top = _top_k(single, items, 6, excluded, backend)
    scores = single @ items.t()
    scores[4, torch.tensor([0, 5])] = -torch.inf
    assert top.tolist() == scores.topk(6, dim=1).indices.tolist()


def test_evaluate_retrieval_runs_on_a_trained_mind(tmp_path):
    from recforge.retrieval import evaluate_retrieval
    from recforge.train import train_and_evaluate

    rng = np.random.default_rng(0)
    num_items, rows = 30, 64
    items = rng.integers(0, num_items, rows)
    history = [rng.integers(0, num_items, rng.integers(0, 6)).tolist() for _ in range(rows)]
    table = pa.table(
        {
            "user_id": pa.array(rng.integers(0, 10, rows)),
            "hist": pa.array(history, pa.list_(pa.int64())),
            "item_id": pa.array(items),
            "label": pa.array(np.ones(rows, dtype=np.int64)),
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    pq.write_table(pa.table({"item_id": np.arange(num_items)}), tmp_path / "items.parquet")
    config = tmp_path / "mind.config"
    config.write_text(f"""
      train_input_path: "{tmp_path}/train.parquet" eval_input_path: "{tmp_path}/train.parquet"
      model_dir: "{tmp_path}/model"
      train_config {{
            sparse_optimizer {{ sgd_optimizer {{ lr: 0.1 }} }}
            dense_optimizer {{ sgd_optimizer {{ lr: 0.1 }} }}
            num_steps: 2 use_tensorboard: false
          }}
      data_config {{
        fg_mode: FG_DAG batch_size: 16 label_fields: "label"
        negative_sampler {{ input_path: "{tmp_path}/items.parquet" num_sample: 8
                            item_id_field: "item_id" attr_fields: ["item_id"] }}
      }}
      feature_configs {{
            id_feature {{ feature_name: "user_id" num_buckets: 10 embedding_dim: 4 }}
          }}
      feature_configs {{ sequence_id_feature {{ feature_name: "hist" num_buckets: 30
                         embedding_dim: 4 sequence_length: 5 embedding_name: "item" }} }}
      feature_configs {{ id_feature {{ feature_name: "item_id" num_buckets: 30 embedding_dim: 4
                         embedding_name: "item" }} }}
      model_config {{
        feature_groups {{ group_name: "user" feature_names: ["user_id"] }}
        feature_groups {{ group_name: "item" feature_names: ["item_id"] }}
        feature_groups {{ group_name: "hist" feature_names: ["hist"] group_type: SEQUENCE }}
        mind {{
          user_tower {{ input: "user" history_input: "hist" user_mlp {{ hidden_units: [4] }}
                        capsule_config {{ max_k: 2 max_seq_len: 5 high_dim: 4 }}
                        concat_mlp {{ hidden_units: [8] }} }}
          item_tower {{ input: "item" mlp {{ hidden_units: [8] }} }}
          output_dim: 4 temperature: 0.1
        }}
        metrics {{ recall_at_k {{ top_k: 3 }} }}
      }}
    """)
    train_and_evaluate(str(config))
    metrics = evaluate_retrieval(str(tmp_path / "model" / "pipeline.config"), top_k=[5])
    assert metrics["num_items"] == num_items and metrics["num_users"] == 10
    assert 0 <= metrics["recall@5"] <= 1


# ---- config errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edits, field",
    [
        ({"user_tower.capsule_config.high_dim": 0}, "user_tower.capsule_config"),
        ({"user_tower.capsule_config.max_seq_len": 0}, "user_tower.capsule_config"),
        ({"user_tower.capsule_config.routing_init_method": "uniform"}, "user_tower.capsule_config"),
        ({"user_tower.history_input": "user"}, "user_tower.history_input"),
        ({"user_tower.history_input": "nope"}, "user_tower.history_input"),
        ({"user_tower.input": "hist"}, "user_tower.input"),
        ({"item_tower.input": ""}, "item_tower.input"),
        ({"simi_pow": 0.0}, "simi_pow"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_config_is_an_error_at_its_field(edits, field):
    with pytest.raises(ConfigError) as error:
        mind(**edits)
    assert error.value.field == f"model_config.mind.{field}"


def test_towers_of_different_widths_are_an_error_at_output_dim():
    assert mind(output_dim=0).embedding_dim() == 16  # both towers end in 16 without it
    config = model_config("MIND")
    config.model_config.mind.output_dim = 0
    config.model_config.mind.item_tower.mlp.hidden_units.append(12)
    features = create_features(config.feature_configs)
    with pytest.raises(ConfigError) as error:
        MIND(config.model_config, features, ["label"])
    assert error.value.field == "model_config.mind.output_dim"


def test_missing_user_tower_parts_are_errors_at_their_field():
    config = model_config("MIND")
    config.model_config.mind.user_tower.ClearField("concat_mlp")
    features = create_features(config.feature_configs)
    with pytest.raises(ConfigError) as error:
        MIND(config.model_config, features, ["label"])
    assert error.value.field == "model_config.mind.user_tower.concat_mlp"


def test_tower_export_describes_the_interests(tmp_path):
    import json

    from recforge.export.towers import export_towers

    model = mind().eval()
    written = export_towers(model_config("MIND"), model, str(tmp_path), {})
    with open(f"{written['user']}/model_info.json") as f:
        user = json.load(f)
    with open(f"{written['item']}/model_info.json") as f:
        item = json.load(f)
    assert user["num_interests"] == 3 and "num_interests" not in item
    assert user["outputs"][0]["name"] == "user_emb" and user["outputs"][0]["shape"][1:] == [3, 8]
    assert user["input_columns"] == ["user", "price", "tag_seq"]  # the history is a user input
