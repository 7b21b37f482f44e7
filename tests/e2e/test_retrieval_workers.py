"""The dataset streams sampled negatives through DataLoader worker processes, reproducibly."""

import pyarrow as pa
import pytest
import torch

from recforge.datasets.data_parser import DataParser
from recforge.datasets.dataset import RecDataset, create_dataloader
from recforge.datasets.sampler import ITEM_INDEX_KEY, LOG_Q_KEY, load_item_table
from recforge.features import create_pipeline_features
from tests.helpers.retrieval import pipeline_config, sampler_text, write_tables


@pytest.fixture()
def files(tmp_path):
    return write_tables(tmp_path)


def test_dataset_streams_negatives_reproducibly_with_workers(files):
    config = pipeline_config(files, sampler=sampler_text(files))
    features = create_pipeline_features(config)
    dataset = RecDataset(config.data_config, features, config.train_input_path)
    parser = DataParser([f for f in features if f.name in ("item_id", "cate", "price")])
    items = load_item_table(config.data_config.negative_sampler)

    def run(epoch, workers):
        dataset.set_epoch(epoch)
        return list(create_dataloader(dataset, num_workers=workers))

    batches = run(0, 2)
    assert len(batches) == 4 and all(b.batch_size == 18 for b in batches)  # 10 + 8 negatives
    negatives = []
    for batch in batches:
        index = batch.extras[ITEM_INDEX_KEY][10:]
        negatives.append(index.tolist())
        # the parsed item features of the negative rows are those of their table rows
        expected = parser.parse_batch(items.table.take(pa.array(index.numpy())).to_batches()[0])
        sparse = batch.sparse_features.to_dict()
        for name in ("item_id", "cate"):
            got = sparse[name]
            lengths = got.lengths()
            assert lengths[10:].tolist() == [1] * 8 and lengths[:10].tolist() == [1] * 10
            assert torch.equal(got.values()[-8:], expected.sparse_features[name].values())
        assert sparse["user_id"].lengths()[10:].sum() == 0  # user features of negatives: empty
        dense = batch.dense_features.to_dict()
        assert torch.equal(dense["price"][10:], expected.dense_features.to_dict()["price"])
        assert batch.extras[LOG_Q_KEY].shape == (18,)
    # workers draw differently from each other; the same epoch repeats, the next one differs
    assert len({tuple(n) for n in negatives}) == 4
    assert [b.extras[ITEM_INDEX_KEY].tolist() for b in run(0, 2)] == [
        b.extras[ITEM_INDEX_KEY].tolist() for b in batches
    ]
    assert [b.extras[ITEM_INDEX_KEY].tolist() for b in run(1, 2)] != [
        b.extras[ITEM_INDEX_KEY].tolist() for b in batches
    ]
