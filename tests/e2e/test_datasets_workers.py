"""DataLoader worker processes: every rank's workers read disjoint rows, persistent workers."""

import pytest

import recforge.datasets.dataset as dataset_module
from recforge.datasets import (
    Batch,
    RecDataset,
    create_dataloader,
)
from recforge.features import FG_DAG, create_features
from tests.helpers.datasets import data_config, feature_configs, write_files


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_dataloader_two_ranks_two_workers(tmp_path, kind, monkeypatch):
    pattern = write_files(tmp_path, kind, [300])
    features = create_features(feature_configs(), fg_mode=FG_DAG)
    cfg = data_config(kind, batch_size=20)
    seen, steps = [], []
    for rank in range(2):
        monkeypatch.setattr(dataset_module, "_rank_and_world_size", lambda r=rank: (r, 2))
        dataset = RecDataset(cfg, features, pattern, "train", reserved_columns=["row_id"])
        loader = create_dataloader(dataset, num_workers=2)
        batches = list(loader)
        steps.append(len(batches))
        for batch in batches:
            assert isinstance(batch, Batch) and batch.batch_size <= 20
            ids = batch.sparse_features["row_id"].values().tolist()
            assert ids == batch.reserves.column("row_id").to_pylist()
            seen.extend(ids)
    # ranks step together: each gets as many batches, so every row is trained
    assert steps[0] == steps[1] and sorted(seen) == list(range(300))


def test_persistent_workers_read_successive_epochs(tmp_path):
    # the trainer keeps one worker for the whole run: each iter() must read the next epoch,
    # in the order a fresh dataset gives for that epoch
    pattern = write_files(tmp_path, "parquet", [60, 60])
    cfg = data_config(batch_size=10, shuffle=True)
    features = create_features(feature_configs()[:1], fg_mode=FG_DAG)

    def ids(batches):
        return [i for b in batches for i in b.sparse_features["row_id"].values().tolist()]

    expected = []
    for epoch in (2, 3, 4):
        fresh = RecDataset(cfg, features, pattern, "train")
        fresh.set_epoch(epoch)
        expected.append(ids(fresh))
    dataset = RecDataset(cfg, features, pattern, "train")
    dataset.set_epoch(2)
    loader = create_dataloader(dataset, num_workers=1, persistent=True)
    first = iter(loader)
    next(first)  # an epoch left unfinished (a step limit) does not shift the next ones
    assert [ids(loader), ids(loader)] == expected[1:]
    assert len(set(map(tuple, expected))) == 3
