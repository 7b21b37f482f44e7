"""The ML-100K sequence benchmark's leave-last-out split (issue 16, ``benchmarks/ml_seq.py``).

The comparison the issue asks for here (hstu_match beating most-popular and DSSM in HR@10 at a
size of about one CPU-minute) is not added yet: since session 5 hstu_match beats both on the
full benchmark, but only after 20-30 epochs (several CPU-minutes); at 10 epochs it is between
them, and no smaller size has been checked on several seeds (see "HSTU on ML-100K" in
benchmarks/README.md).
"""

from pathlib import Path

import numpy as np
import pytest

from benchmarks import ml_seq
from tests.helpers.paths import shared_data


@pytest.fixture(scope="module")
def split() -> ml_seq.Split:
    return ml_seq.load_split(Path(shared_data("ml-100k", "ml-100k.inter")).parent)


def test_leave_last_out_split_is_recboles(split):
    assert len(split.items) == 943 and sum(len(s) for s in split.items) == 100_000
    for times in split.times:
        assert np.all(np.diff(times) >= 0)  # oldest first; the test item is the last event
    targets = split.test_target()
    assert targets.shape == (943,) and targets.min() >= 1 and targets.max() <= ml_seq.NUM_ITEMS
