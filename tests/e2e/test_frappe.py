"""DeepFM on the real Frappe data (../shared/data/frappe): skipped where it is absent."""

import os

from tests.helpers.cli_util import REPO_ROOT, example, train
from tests.helpers.paths import shared_data


def test_deepfm_frappe_reaches_peer_auc(tmp_path):
    shared_data("frappe", "frappe_validation.csv")
    metrics = train(example("deepfm_frappe.config"), str(tmp_path / "model"), REPO_ROOT)
    # emb 10, MLP [400,400,400], batch 4096, Adam 1e-3, 5 epochs; DeepCTR-Torch reaches ~0.925
    assert metrics["auc"] >= 0.92, metrics


def test_tzrec_style_frappe_config_trains_unchanged(tmp_path):
    shared_data("frappe", "frappe_validation.csv")
    config = os.path.join(REPO_ROOT, "tests", "configs", "frappe_deepfm.config")
    metrics = train(config, str(tmp_path / "model"), REPO_ROOT)
    assert metrics["global_step"] == 75  # 5 epochs of ceil(57722 / 4096) = 15 steps
    assert metrics["auc"] >= 0.9, metrics
