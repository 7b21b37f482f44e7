"""negative_sampler_v2, hard_negative_sampler(_v2): edge tables, per-user negatives, DSSM."""

import os
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

import recforge.datasets.dataset as dataset_module
from recforge.config import ConfigError, load_pipeline_config
from recforge.config.editing import edit_config
from recforge.datasets import DataError
from recforge.datasets.dataset import RecDataset
from recforge.datasets.edge_sampler import edge_sampler
from recforge.datasets.mock_data import generate_mock_data
from recforge.datasets.sampler import HARD_NEG_INDICES_KEY, ITEM_INDEX_KEY, NUM_NEGATIVES_KEY
from recforge.features import create_pipeline_features
from recforge.models.factory import build_model
from recforge.protos import sampler_pb2
from recforge.utils.pipeline import build_dataset
from tests.helpers.paths import REPO_ROOT
from tests.helpers.retrieval import NUM_ITEMS, item_table, pipeline_config, train_table

NUM_USERS = 20


def hard_items(user: int) -> list[int]:
    """User u's hard negatives: 3 items (user 0: 6, more than num_hard_sample)."""
    count = 6 if user == 0 else 3
    return [(user * 7 + 1 + k) % NUM_ITEMS for k in range(count)]


def positive_items(user: int) -> list[int]:
    """Every item but 30 + user % 10 and 31 + user % 10 (user 19: every item)."""
    if user == NUM_USERS - 1:
        return list(range(NUM_ITEMS))
    return [k for k in range(NUM_ITEMS) if k not in (30 + user % 10, 31 + user % 10)]


@pytest.fixture()
def tables(tmp_path):
    pq.write_table(item_table(), tmp_path / "items.parquet")
    pq.write_table(train_table(), tmp_path / "train.parquet")
    # TorchEasyRec's local layout: typed header, tab-separated
    (tmp_path / "users.txt").write_text(
        "id:int64\tweight:float\n" + "".join(f"{u}\t1\n" for u in range(NUM_USERS))
    )
    pos = "".join(f"{u}\ti{k}\t1\n" for u in range(NUM_USERS) for k in positive_items(u))
    (tmp_path / "pos.txt").write_text("userid:int64\titemid:string\tweight:float\n" + pos)
    hard = [(u, f"i{k}") for u in range(0, NUM_USERS, 2) for k in hard_items(u)]  # even users
    pq.write_table(
        pa.table({"userid": [u for u, _ in hard], "itemid": [i for _, i in hard]}),
        tmp_path / "hard.parquet",
    )
    return tmp_path


MESSAGES = {
    "negative_sampler_v2": sampler_pb2.NegativeSamplerV2,
    "hard_negative_sampler": sampler_pb2.HardNegativeSampler,
    "hard_negative_sampler_v2": sampler_pb2.HardNegativeSamplerV2,
}


def sampler_message(kind: str, workdir, num_sample: int = 8, num_hard: int = 4):
    config = MESSAGES[kind](
        user_input_path=f"{workdir}/users.txt",
        item_input_path=f"{workdir}/items.parquet",
        num_sample=num_sample,
        item_id_field="item_id",
        user_id_field="user_id",
    )
    config.attr_fields.extend(["item_id", "cate", "price"])
    if kind != "hard_negative_sampler":
        config.pos_edge_input_path = f"{workdir}/pos.txt"
    if kind.startswith("hard"):
        config.hard_neg_edge_input_path = f"{workdir}/hard.parquet"
        config.num_hard_sample = num_hard
    return config


def sampler_text(kind: str, workdir, num_sample: int = 8) -> str:
    body = text_format.MessageToString(sampler_message(kind, workdir, num_sample), as_one_line=True)
    return f"{kind} {{ {body} }}"


def item_number(item: str) -> int:
    return int(item[1:])


# ---- the samplers -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["negative_sampler_v2", "hard_negative_sampler_v2"])
def test_v2_negatives_avoid_their_users_positive_items(tables, kind):
    sampler = edge_sampler(kind, sampler_message(kind, tables, num_sample=40), 40, ",")
    rb = train_table(10, seed=3).to_batches()[0]
    users = rb.column("user_id").to_pylist()
    own = [item_number(i) for i in rb.column("item_id").to_pylist()]
    for seed in range(20):
        combined, extras = sampler.append_negatives(rb, np.random.default_rng(seed), ["label"], [])
        negatives = [item_number(i) for i in combined.column("item_id").to_pylist()[10:50]]
        for j, item in enumerate(negatives):
            row = j // 4  # 40 negatives over 10 rows: row r draws negatives 4r .. 4r + 3
            user = users[row]
            if user == NUM_USERS - 1:
                continue  # every item is that user's positive: nothing to avoid it with
            assert item not in positive_items(user) and item != own[row], (seed, j)
    # a user's negatives are spread over the items left to it
    row = next(r for r, u in enumerate(users) if u != NUM_USERS - 1)
    allowed = set(range(NUM_ITEMS)) - set(positive_items(users[row])) - {own[row]}
    seen = set()
    for seed in range(30):
        combined, _ = sampler.append_negatives(rb, np.random.default_rng(seed), ["label"], [])
        drawn = combined.column("item_id").to_pylist()[10 + 4 * row : 14 + 4 * row]
        seen.update(item_number(i) for i in drawn)
    assert seen == allowed


def test_v2_without_positive_edges_draws_uniformly(tables):
    (tables / "pos.txt").write_text("userid:int64\titemid:string\tweight:float\n")
    sampler = edge_sampler(
        "negative_sampler_v2", sampler_message("negative_sampler_v2", tables, 8), 8, ","
    )
    draws = sampler.draw(np.random.default_rng(0), 30_000)
    freq = np.bincount(draws, minlength=NUM_ITEMS) / draws.size
    assert np.abs(freq - 1 / NUM_ITEMS).max() < 0.006  # TorchEasyRec's "random" strategy


@pytest.mark.parametrize("kind", ["hard_negative_sampler", "hard_negative_sampler_v2"])
def test_hard_negatives_are_each_users_own(tables, kind):
    sampler = edge_sampler(kind, sampler_message(kind, tables, num_hard=4), 8, ",")
    rb = train_table(12, seed=5).to_batches()[0]
    users = rb.column("user_id").to_pylist()
    combined, extras = sampler.append_negatives(rb, np.random.default_rng(0), ["label"], [])
    pairs = extras[HARD_NEG_INDICES_KEY]
    expected = sum(min(len(hard_items(u)), 4) for u in users if u % 2 == 0)
    assert pairs.shape == (expected, 2) and expected > 0
    assert int(extras[NUM_NEGATIVES_KEY][0]) == 8 + expected
    assert combined.num_rows == 12 + 8 + expected
    hard = combined.slice(20).to_pydict()
    assert hard["label"] == [0] * expected and hard["user_id"] == [None] * expected
    index = extras[ITEM_INDEX_KEY][20:].tolist()
    for (row, _), item, row_index in zip(pairs.tolist(), hard["item_id"], index):
        assert item in {f"i{k}" for k in hard_items(users[row])}  # the row's own user's
        assert row_index == item_number(item)  # item table row i<k> is row k
    for row, user in enumerate(users):  # slots 0 .. count-1 per row, rows in order
        slots = [s for r, s in pairs.tolist() if r == row]
        count = min(len(hard_items(user)), 4) if user % 2 == 0 else 0
        assert slots == list(range(count))
    assert pairs[:, 0].tolist() == sorted(pairs[:, 0].tolist())


def test_sampling_is_seeded(tables):
    kind = "hard_negative_sampler_v2"
    sampler = edge_sampler(kind, sampler_message(kind, tables), 8, ",")
    rb = train_table(10).to_batches()[0]

    def draw(seed):
        _, extras = sampler.append_negatives(rb, np.random.default_rng(seed), ["label"], [])
        return extras[ITEM_INDEX_KEY].tolist()

    assert draw(1) == draw(1) and draw(1) != draw(2)


def test_each_worker_reads_its_rows_and_draws_its_own_negatives(tables, monkeypatch):
    kind = "hard_negative_sampler_v2"
    config = pipeline_config(tables, sampler=sampler_text(kind, tables))
    features = create_pipeline_features(config)
    dataset = RecDataset(config.data_config, features, config.train_input_path)

    def run(worker):
        info = SimpleNamespace(id=worker, num_workers=2)
        monkeypatch.setattr(dataset_module, "get_worker_info", lambda: info)
        dataset.set_epoch(0)
        return [
            (b.extras[ITEM_INDEX_KEY].tolist(), b.extras[HARD_NEG_INDICES_KEY].tolist())
            for b in dataset
        ]

    first, second = run(0), run(1)
    assert len(first) == len(second) == 2  # 4 batches of 10, two per worker
    assert run(0) == first and run(1) == second
    positives = lambda batches: [index[:10] for index, _ in batches]  # noqa: E731
    assert not set(map(tuple, positives(first))) & set(map(tuple, positives(second)))


@pytest.mark.parametrize(
    "table, content, message",
    [
        ("pos.txt", "userid:int64\titemid:string\n3\ti1\n\ti2\n", r"pos.txt: row 1 \(line 3\)"),
        ("pos.txt", "user\titem\n3\ti1\n", "no column 'userid' or 'user_id'"),
        ("users.txt", "name\n3\n", "no column 'id' or 'user_id'"),
        ("hard.csv", "userid,itemid\n3,i1\n4,i999\n", r"hard.csv: row 1 \(line 3\): item 'i999'"),
        ("hard.csv", "userid,itemid\n3,i1\n4,[1]\n", r"hard.csv: row 1 \(line 3\): item '\[1\]'"),
    ],
)
def test_bad_side_tables_name_file_and_row(tables, table, content, message):
    (tables / table).write_text(content)
    config = sampler_message("hard_negative_sampler_v2", tables)
    if table == "hard.csv":
        config.hard_neg_edge_input_path = str(tables / table)
    with pytest.raises(DataError, match=message):
        edge_sampler("hard_negative_sampler_v2", config, 8, ",")


def test_edge_item_ids_that_do_not_parse_name_their_row(tables):
    ids = pa.array(np.arange(NUM_ITEMS), pa.int64())
    pq.write_table(item_table().set_column(0, "item_id", ids), tables / "items.parquet")
    rows = "".join(f"{u},{u + 1}\n" for u in range(12))
    (tables / "hard.csv").write_text(f"userid,itemid\n{rows}5,x\n6,7\n")
    config = sampler_message("hard_negative_sampler", tables)
    config.hard_neg_edge_input_path = str(tables / "hard.csv")
    with pytest.raises(DataError, match=r"hard.csv: row 12 \(line 14\): 'itemid': item ids"):
        edge_sampler("hard_negative_sampler", config, 8, ",")


def test_user_ids_of_another_type_are_a_data_error(tables):
    kind = "hard_negative_sampler"
    sampler = edge_sampler(kind, sampler_message(kind, tables), 8, ",")
    rb = train_table(4).to_batches()[0]
    rb = rb.set_column(0, "user_id", pa.array([[1]] * 4))
    with pytest.raises(DataError, match="user ids of type list<item: int64> cannot be compared"):
        sampler.append_negatives(rb, np.random.default_rng(0), ["label"], [])


# ---- the match models -------------------------------------------------------------------------
def model_and_batch(tables, kind, model="dssm", extra="", seed=0):
    config = pipeline_config(tables, model, sampler_text(kind, tables), extra)
    features = create_pipeline_features(config)
    batch = next(iter(RecDataset(config.data_config, features, config.train_input_path)))
    torch.manual_seed(seed)
    return build_model(config, features), batch


@pytest.mark.parametrize("in_batch", [False, True])
def test_each_user_is_scored_against_its_own_hard_negatives(tables, in_batch):
    extra = f"in_batch_negative: {str(in_batch).lower()}"
    net, batch = model_and_batch(tables, "hard_negative_sampler", extra=extra)
    predictions = net.predict(batch)
    user, item = predictions["user_emb"], predictions["item_emb"]
    pairs = batch.extras[HARD_NEG_INDICES_KEY]
    num_hard = pairs.shape[0]
    assert item.shape[0] == 10 + 8 + num_hard and num_hard > 0
    logits = predictions["similarity"]
    shared = 18 if in_batch else 9
    width = int(pairs[:, 1].max()) + 1
    assert logits.shape == (10, shared + width)
    hard = logits[:, shared:]
    expected = torch.full_like(hard, torch.finfo(hard.dtype).min)
    index = batch.extras[ITEM_INDEX_KEY]
    for h, (row, slot) in enumerate(pairs.tolist()):
        if index[18 + h] != index[row]:  # a hard negative that is the positive stays masked
            expected[row, slot] = user[row] @ item[18 + h] / 0.2
    torch.testing.assert_close(hard, expected)
    # the hard negatives are in the loss: the same batch without them scores otherwise
    loss = net.loss(predictions, batch)["softmax_cross_entropy"]
    target = torch.arange(10) if in_batch else torch.zeros(10, dtype=torch.long)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    assert float(loss) > float(F.cross_entropy(logits[:, :shared], target)) + 1e-4


def test_label_smoothing_spreads_over_the_real_candidates(tables):
    config = pipeline_config(tables, "dssm", sampler_text("hard_negative_sampler", tables))
    config.model_config.losses.add().softmax_cross_entropy.label_smoothing = 0.1
    features = create_pipeline_features(config)
    batch = next(iter(RecDataset(config.data_config, features, config.train_input_path)))
    net = build_model(config, features)
    predictions = net.predict(batch)
    logits = predictions["similarity"]
    assert (logits < -1e38).any()  # users with fewer hard negatives than others
    loss = net.loss(predictions, batch)["softmax_cross_entropy"]
    expected = torch.stack(
        [
            F.cross_entropy(row[row > -1e38][None], torch.tensor([0]), label_smoothing=0.1)
            for row in logits
        ]
    ).mean()
    torch.testing.assert_close(loss, expected)


def test_item_features_the_sampler_does_not_provide_name_its_field(tables):
    config = pipeline_config(tables, "dssm", sampler_text("hard_negative_sampler_v2", tables))
    config.data_config.hard_negative_sampler_v2.attr_fields.remove("cate")
    with pytest.raises(ConfigError, match="data_config.hard_negative_sampler_v2.attr_fields"):
        build_model(config, create_pipeline_features(config))


def test_a_hard_negative_equal_to_the_positive_is_masked(tables):
    net, batch = model_and_batch(tables, "hard_negative_sampler")
    pairs = batch.extras[HARD_NEG_INDICES_KEY]
    index = batch.extras[ITEM_INDEX_KEY]
    row = int(pairs[0, 0])
    index[18] = index[row]  # plant: the first hard negative is that user's positive item
    logits = net.predict(batch)["similarity"]
    assert float(logits[row, 9 + int(pairs[0, 1])]) < -1e38


@pytest.mark.parametrize(
    "kind", ["negative_sampler_v2", "hard_negative_sampler", "hard_negative_sampler_v2"]
)
@pytest.mark.parametrize("model", ["dssm", "dssm_v2"])
def test_dssm_trains_with_each_sampler(tables, kind, model):
    config = pipeline_config(tables, model, sampler_text(kind, tables), "similarity: COSINE")
    features = create_pipeline_features(config)
    dataset = RecDataset(config.data_config, features, config.train_input_path)
    torch.manual_seed(0)
    net = build_model(config, features)
    optimizer = torch.optim.Adagrad(net.parameters(), lr=0.2)
    losses = []
    for _ in range(3):
        for batch in dataset:
            loss = net.loss(net.predict(batch), batch)["softmax_cross_entropy"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    assert all(np.isfinite(losses)) and np.mean(losses[-4:]) < np.mean(losses[:4])


# ---- mock data --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MESSAGES))
def test_mock_data_writes_the_side_tables(tmp_path, kind):
    root = REPO_ROOT
    config = load_pipeline_config(os.path.join(root, "examples", "dssm_demo.config"))
    message = MESSAGES[kind](
        num_sample=16, item_id_field="item_id", user_id_field="user_id", num_eval_sample=4
    )
    message.attr_fields.extend(["item_id", "cate"])
    if kind.startswith("hard"):
        message.num_hard_sample = 2
    getattr(config.data_config, kind).CopyFrom(message)
    config.data_config.batch_size = 50
    result = generate_mock_data(config, str(tmp_path), num_rows=200)
    edits = result["edit_config_json"]
    folder = tmp_path / kind
    expected = {"item_input_path": "items", "user_input_path": "user"}
    if kind != "hard_negative_sampler":
        expected["pos_edge_input_path"] = "pos_edge"
    if kind.startswith("hard"):
        expected["hard_neg_edge_input_path"] = "hard_neg_edge"
    for field, name in expected.items():
        assert edits[f"data_config.{kind}.{field}"] == str(folder / f"{name}.parquet")
    config = edit_config(config, edits)
    rows = pq.read_table(result["files"][0])
    if "pos_edge_input_path" in expected:
        edges = pq.read_table(folder / "pos_edge.parquet")
        pairs = set(zip(edges["userid"].to_pylist(), edges["itemid"].to_pylist()))
        rows_pairs = zip(rows["user_id"].to_pylist(), rows["item_id"].to_pylist())
        assert {p for p in rows_pairs if p[0] is not None} == pairs
    batch = next(iter(build_dataset(config, create_pipeline_features(config), "train")))
    num_hard = batch.extras[HARD_NEG_INDICES_KEY].shape[0] if kind.startswith("hard") else 0
    assert batch.batch_size == 50 + 16 + num_hard
    if kind.startswith("hard"):  # 2 of the 3 hard edges of each user with an id
        assert 0 < num_hard <= 2 * 50 and num_hard % 2 == 0
