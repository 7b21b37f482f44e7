"""Merging the per-interest searches of multi-interest (MIND) users into one top K."""

import numpy as np
import pytest

from recforge.index.retriever import merge_interest_results


def test_merge_keeps_each_item_once_at_its_best_score_and_skips_masked_interests():
    scores = np.array([[[0.9, 0.5, 0.1], [0.8, 0.7, 0.6], [5.0, 4.0, 3.0]]], dtype=np.float32)
    rows = np.array([[[3, 1, 2], [1, 4, -1], [7, 8, 9]]])
    valid = np.array([[True, True, False]])  # the third interest is masked
    [(found, best)] = merge_interest_results(scores, rows, valid, 3, higher_is_closer=True)
    assert found.tolist() == [3, 1, 4] and best.tolist() == pytest.approx([0.9, 0.8, 0.7])
    [(found, best)] = merge_interest_results(scores, rows, valid, 3, higher_is_closer=False)
    assert found.tolist() == [2, 1, 4] and best.tolist() == pytest.approx([0.1, 0.5, 0.7])
