"""DSSM on MovieLens 100K (rating >= 4, leave-last-out by timestamp) beats most-popular.

Uses ``benchmarks/movielens.py`` (the benchmark's data preparation and config) with fewer
epochs and larger batches, so that it runs in about a minute; the full benchmark's numbers are
in benchmarks/README.md.
"""

from pathlib import Path

import pyarrow.parquet as pq

from benchmarks import movielens  # noqa: E402
from tests.helpers.paths import shared_data


def test_leave_last_out_split(tmp_path):
    data_dir = Path(shared_data("ml-100k", "ml-100k.inter")).parent
    counts = movielens.prepare(data_dir, tmp_path)
    train = pq.read_table(tmp_path / "train.parquet").to_pandas()
    test = pq.read_table(tmp_path / "eval.parquet").to_pandas()
    assert counts["items"] == 1682 and len(test) == counts["eval"] == test.user_id.nunique()
    assert counts["train"] + counts["eval"] == 55375  # ratings >= 4
    assert not set(zip(test.user_id, test.item_id)) & set(zip(train.user_id, train.item_id))
    # the held-out item is the user's last positive: its history holds the user's previous ones
    for row in test.head(50).itertuples():
        seen = set(train[train.user_id == row.user_id].item_id)
        assert set(row.hist_item_ids) <= seen and len(row.hist_item_ids) == min(20, len(seen))


def test_dssm_beats_most_popular_on_movielens(tmp_path):
    data_dir = Path(shared_data("ml-100k", "ml-100k.inter")).parent
    result = movielens.run(tmp_path, "dssm", epochs=2, data_dir=data_dir, batch_size=1024)
    assert result["num_users"] == 942 and result["num_items"] == 1682
    assert result["recall@50"] > result["popularity_recall@50"]
    assert result["recall@10"] > result["popularity_recall@10"]
