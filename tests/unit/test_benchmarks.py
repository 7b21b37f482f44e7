"""The benchmark references measure the same model as recforge, and the data generator is sound.

Fast (seconds) and timing-free: no assertion here depends on how fast anything runs.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from benchmarks import criteo_synth  # noqa: E402
from benchmarks.ref_common import auc  # noqa: E402
from benchmarks.ref_models import HandDeepFM  # noqa: E402
from tests.helpers.paths import REPO_ROOT


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300).astype(np.float32)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(labels, scores) == pytest.approx(pairs, abs=1e-12)


def test_criteo_synth_generator_is_seeded_and_criteo_shaped(tmp_path):
    a = criteo_synth.generate(tmp_path / "a", rows=3000, test_rows=500)
    b = criteo_synth.generate(tmp_path / "b", rows=3000, test_rows=500)
    for name in ("train_0.parquet", "train_3.parquet", "test_0.parquet"):
        assert pq.read_table(a / name).equals(pq.read_table(b / name))
    table = pa.concat_tables([pq.read_table(a / f"train_{i}.parquet") for i in range(4)])
    assert table.num_rows == 3000
    dense = [f"I{k}" for k in range(1, 14)]
    cats = [f"C{j}" for j in range(1, 27)]
    assert table.column_names == ["label", *dense, *cats]
    vocabs = criteo_synth.vocab_sizes()
    assert min(vocabs) >= 10 and max(vocabs) <= 1_000_000
    assert 2_000_000 < sum(vocabs) < 2_400_000  # the issue's ~2.2M embedding rows
    for name, vocab in zip(cats, vocabs):
        ids = table.column(name).to_numpy()
        assert ids.min() >= 0 and ids.max() < vocab
    # Zipf: the most frequent id of the largest vocabulary is far above uniform frequency
    big = cats[int(np.argmax(vocabs))]
    _, counts = np.unique(table.column(big).to_numpy(), return_counts=True)
    assert counts.max() > 50
    assert 0.2 < np.mean(table.column("label").to_numpy()) < 0.3


def test_committed_criteo_config_matches_the_generator(tmp_path):
    expected = criteo_synth.write_config(tmp_path / "c.config")
    committed = os.path.join(REPO_ROOT, criteo_synth.CONFIG)
    with open(committed) as f:
        assert f.read() == expected, "rerun python -m benchmarks.criteo_synth --write_config"


def _copy_into_hand(model, hand: HandDeepFM, fields: list[str]) -> None:
    tables = model.embedding_group.ebc.embedding_bags
    rows = hand.offsets.tolist() + [hand.emb.weight.shape[0]]
    with torch.no_grad():
        for i, field in enumerate(fields):
            hand.emb.weight[rows[i] : rows[i + 1]] = tables[f"{field}_emb"].weight
            hand.wide.weight[rows[i] : rows[i + 1]] = tables[f"{field}_emb_wide"].weight
        hand.mlp.load_state_dict(model.deep.mlp.state_dict())
        hand.head.load_state_dict(model.head.state_dict())
        hand.head.weight.normal_()  # zero-initialised: make the deep path count
        model.head.weight.copy_(hand.head.weight)


@pytest.mark.parametrize("sparse", [False, True])
def test_hand_written_deepfm_is_recforge_deepfm(sparse):
    """Same weights -> same logits: the hand-written reference trains recforge's model."""
    from recforge.datasets.data_parser import DataParser
    from recforge.models.factory import build_model
    from recforge.utils.pipeline import build_features, prepare_config

    config = prepare_config(
        os.path.join(REPO_ROOT, "benchmarks", "configs", "deepfm_frappe_bench.config")
    )
    features = build_features(config)
    model = build_model(config, features, embedding_device=torch.device("cpu")).eval()
    fields = [f.name for f in features]
    hand = HandDeepFM([5382] * len(fields), 10, 1, 0, [400, 400, 400], 0.2, sparse).eval()
    _copy_into_hand(model, hand, fields)
    ids = torch.randint(0, 5382, (64, len(fields)))
    parser = DataParser(features, labels=["label"])
    columns = {f: pa.array(ids[:, i].numpy()) for i, f in enumerate(fields)}
    rb = pa.RecordBatch.from_pydict({**columns, "label": pa.array(np.zeros(64, np.float32))})
    with torch.no_grad():
        expected = model.predict(parser.parse_batch(rb))["logits"]
        got = hand(ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
